"""Radiometry: percentile scaling to [-1, 1] and back, per dtype, on real crops."""
from __future__ import annotations

import json

import numpy as np
import pytest

from geot2e.errors import NodataError
from geot2e.geo import Radiometry, valid_mask


def test_fit_excludes_nodata(landsat_da):
    r = Radiometry.fit(landsat_da)
    assert r.nodata == 0 and r.dtype == "uint16" and r.bands == 3
    ok = valid_mask(landsat_da).values
    for b in range(3):
        vals = landsat_da.values[b][ok]
        lo, hi = np.percentile(vals, [0.5, 99.5])
        assert r.lo[b] == pytest.approx(lo) and r.hi[b] == pytest.approx(hi)
        assert r.lo[b] > 1000  # zeros at the scene edge were not used
    assert r.n_pixels == int(ok.sum())


def test_to_model_maps_lo_hi(landsat_da):
    r = Radiometry.fit(landsat_da)
    x = r.to_model(landsat_da)
    assert x.dtype == np.float32 and x.dims == landsat_da.dims
    lo = np.array(r.lo, dtype=np.float64).reshape(3, 1, 1)
    hi = np.array(r.hi, dtype=np.float64).reshape(3, 1, 1)
    np.testing.assert_allclose(r.to_model(lo), -1, atol=1e-6)
    np.testing.assert_allclose(r.to_model(hi), 1, atol=1e-6)
    v = x.values[:, valid_mask(landsat_da).values]
    inside = ((v >= -1) & (v <= 1)).mean()
    assert 0.97 < inside < 1.0  # ~1 % of pixels lie outside [lo, hi] and are not clipped
    assert v.max() > 1


def _exact_roundtrip(da, r):
    back = r.from_model(r.to_model(da.values))
    assert back.dtype == da.dtype
    ok = np.broadcast_to(valid_mask(da).values, da.shape)
    np.testing.assert_array_equal(back[ok], da.values[ok])


def test_roundtrip_uint16(landsat_da):
    _exact_roundtrip(landsat_da, Radiometry.fit(landsat_da))


def test_roundtrip_uint8(rgbn_da):
    r = Radiometry.fit(rgbn_da)
    assert r.nodata is None and r.dtype == "uint8"
    _exact_roundtrip(rgbn_da, r)
    # the full uint8 range survives, including values far outside [lo, hi]
    full = np.arange(256, dtype=np.uint8).reshape(1, 16, 16).repeat(4, axis=0)
    np.testing.assert_array_equal(r.from_model(r.to_model(full)), full)


def test_roundtrip_int16(landsat_da):
    signed = (landsat_da.astype("int32") - 8000).clip(-32767, 32767).astype("int16")
    signed = signed.where(landsat_da != 0, -32768).rio.write_nodata(-32768)
    r = Radiometry.fit(signed)
    assert signed.dtype == np.int16
    assert r.nodata == -32768 and all(lo < 0 < hi for lo, hi in zip(r.lo, r.hi))
    _exact_roundtrip(signed, r)


def test_roundtrip_float32_nan(derived):
    da = derived("float_nan")
    r = Radiometry.fit(da)
    assert np.isnan(r.nodata)
    back = r.from_model(r.to_model(da.values))
    assert back.dtype == np.float32
    nan = np.isnan(da.values)
    assert nan.any()
    np.testing.assert_array_equal(np.isnan(back), nan)
    span = (np.array(r.hi) - np.array(r.lo)).reshape(3, 1, 1)
    err = np.abs(back - da.values) / span
    assert np.nanmax(err) < 2e-6
    assert r.lo == Radiometry.fit(derived("utm")).lo  # NaN excluded like nodata 0


def test_from_model_never_writes_nodata(landsat_da):
    r = Radiometry.fit(landsat_da)
    low = np.full((3, 4, 4), -50.0, np.float32)  # far below: clipped to 0 = nodata -> 1
    out = r.from_model(low)
    assert out.dtype == np.uint16 and (out == 1).all()
    high = np.full((3, 4, 4), 500.0, np.float32)
    assert (r.from_model(high) == 65535).all()
    nan = np.full((3, 2, 2), np.nan, np.float32)  # NaN (invalid) comes back as nodata
    assert (r.from_model(nan) == 0).all()
    rf = Radiometry(lo=(0.0,), hi=(1.0,), dtype="float32", nodata=-9999.0)
    val = rf.to_model(np.array([[-9999.0, 0.5]], np.float32))
    out = rf.from_model(val)
    assert out[0, 0] != -9999.0 and out[0, 0] == pytest.approx(-9999.0)
    assert out[0, 1] == pytest.approx(0.5)


def test_from_model_other_dtype(landsat_da):
    r = Radiometry.fit(landsat_da)
    x = r.to_model(landsat_da.values[:, :8, :8])
    out = r.from_model(x, dtype="float32")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, landsat_da.values[:, :8, :8], rtol=1e-5)


def test_valid_argument_excludes_pixels(landsat_da):
    red = landsat_da.sel(band="red").values
    bright = red > np.percentile(red[red > 0], 50)
    full = Radiometry.fit(landsat_da)
    dark = Radiometry.fit(landsat_da, valid=~bright)
    assert dark.hi[0] < full.hi[0]
    assert dark.n_pixels == int((~bright & (landsat_da.values != 0).all(0)).sum())


def test_subsample_independent_of_chunks(landsat_da):
    ref = Radiometry.fit(landsat_da.values, nodata=0, max_pixels=10_000)
    assert ref.stride == 6 and ref.n_pixels <= 10_000
    for chunks in ({"x": 100, "y": 77}, {"x": 512, "y": 33}, {"band": 1}):
        lazy = landsat_da.chunk(chunks)
        got = Radiometry.fit(lazy.data, nodata=0, max_pixels=10_000)
        assert got.to_dict() == ref.to_dict()
        got = Radiometry.fit(lazy, max_pixels=10_000)
        assert got.to_dict() == ref.to_dict()
    # the subsample is close to the full fit
    full = Radiometry.fit(landsat_da)
    np.testing.assert_allclose(ref.lo, full.lo, rtol=0.02)
    np.testing.assert_allclose(ref.hi, full.hi, rtol=0.02)


def test_all_nodata_raises(landsat_da):
    with pytest.raises(NodataError):
        Radiometry.fit(np.zeros((3, 16, 16), np.uint16), nodata=0)
    with pytest.raises(NodataError):
        Radiometry.fit(np.full((16, 16), np.nan, np.float32))
    with pytest.raises(NodataError):
        Radiometry.fit(landsat_da, valid=np.zeros((512, 512), bool))


def test_constant_band_stays_invertible():
    data = np.full((2, 8, 8), 7, np.uint8)
    data[1] = np.arange(64).reshape(8, 8)
    r = Radiometry.fit(data)
    assert r.hi[0] > r.lo[0]
    np.testing.assert_array_equal(r.from_model(r.to_model(data)), data)


def test_single_band_2d(landsat_da):
    red = landsat_da.sel(band="red")
    r = Radiometry.fit(red)
    assert r.bands == 1
    back = r.from_model(r.to_model(red.values))
    ok = red.values != 0
    np.testing.assert_array_equal(back[ok], red.values[ok])


def test_dict_roundtrip(derived, landsat_da):
    for r in (Radiometry.fit(landsat_da), Radiometry.fit(derived("float_nan"))):
        d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
        r2 = Radiometry.from_dict(d)
        assert r2.to_dict() == r.to_dict()
        x = r.to_model(landsat_da.values[:, :4, :4])
        np.testing.assert_array_equal(r2.to_model(landsat_da.values[:, :4, :4]), x)
