"""geot2e.inpaint / remove_clouds on real Landsat and RGBN crops with a random tiny model."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

from engine_helpers import FAST, InpaintSpy, one_torch_thread, tiny_model, tiny_model_path  # noqa: F401
from geot2e.api import inpaint, remove_clouds
from geot2e.errors import (BandCountError, EmptyMaskError, GridMismatchError, GSDRangeWarning,
                           MissingCRSError, ParameterError, TileSizeError)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def crop(landsat_da):
    """128 x 128 uint16 crop that holds nodata (0) pixels at the scene edge (top rows)."""
    da = landsat_da.isel(y=slice(0, 128), x=slice(384, 512))
    assert (da.values == 0).any(axis=0)[:96, :96].any()
    return da


def _box(da, y0, y1, x0, x1):
    m = xr.zeros_like(da.isel(band=0, drop=True), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _assert_same_georef(out, da):
    assert out.dims == da.dims and out.shape == da.shape and out.dtype == da.dtype
    assert out.rio.crs == da.rio.crs
    assert out.rio.transform() == da.rio.transform()
    assert out.rio.nodata == da.rio.nodata or (np.isnan(out.rio.nodata) and np.isnan(da.rio.nodata))
    for c in da.coords:
        assert c in out.coords
        np.testing.assert_array_equal(out[c].values, da[c].values)
    for k, v in da.attrs.items():
        assert k in out.attrs
        w = out.attrs[k]
        if isinstance(v, (float, np.floating)) and np.isnan(v):
            assert np.isnan(w), k
        else:
            assert np.all(w == v), k


def test_uint16_outside_mask_bit_identical_and_georef_kept(crop, tiny_model):
    before = crop.values.copy()
    attrs_before = dict(crop.attrs)
    mask = _box(crop, 20, 90, 30, 100)
    out = inpaint(crop, mask, "a forest", model=tiny_model, **FAST)
    _assert_same_georef(out, crop)
    m = mask.values
    v, o = crop.values, out.values
    assert np.array_equal(v[:, ~m], o[:, ~m])
    assert (o[:, m] != v[:, m]).mean() > 0.9  # the model did write the masked pixels
    assert (o[:, m] != 0).all()  # synthesized pixels never take the nodata value
    np.testing.assert_array_equal(out["synthesized"].values, m)
    assert out["synthesized"].dims == ("y", "x")
    assert "uncertainty" not in out.coords
    # provenance
    a = out.attrs
    assert a["geot2e_operation"] == "inpaint" and a["geot2e_prompt"] == "a forest"
    assert a["geot2e_model_id"] == tiny_model.model_id
    assert a["geot2e_checkpoint_hash"] == tiny_model.checkpoint_hash
    assert a["geot2e_steps"] == 2 and a["geot2e_seed"] == 0 and a["geot2e_guidance"] == 3.0
    assert abs(a["geot2e_gsd"] - 30.0) < 0.5 and "geot2e_version" in a and "geot2e_radiometry" in a
    # the input is not mutated
    assert np.array_equal(crop.values, before) and crop.attrs == attrs_before
    assert "synthesized" not in crop.coords


def test_uint8_rgbn_bands(rgbn_da, tiny_model):
    da = rgbn_da.isel(band=[0, 1, 2], y=slice(0, 96), x=slice(0, 96))
    mask = _box(da, 10, 50, 40, 90)
    out = inpaint(da, mask, model=tiny_model, **FAST)
    _assert_same_georef(out, da)
    m = mask.values
    assert out.dtype == np.uint8
    assert np.array_equal(da.values[:, ~m], out.values[:, ~m])


def test_float32_nan_nodata(derived, tiny_model):
    da = derived("float_nan").isel(y=slice(0, 128), x=slice(384, 512))
    assert np.isnan(da.values).any()
    nan_before = np.isnan(da.values).any(0)
    mask = _box(da, 30, 100, 20, 60)
    out = inpaint(da, mask, model=tiny_model, **FAST)
    _assert_same_georef(out, da)
    m = mask.values
    o, v = out.values, da.values
    # outside the mask: bit-identical, NaN where NaN (compare bytes, NaN != NaN)
    assert np.array_equal(v[:, ~m].view(np.uint32), o[:, ~m].view(np.uint32))
    assert np.isnan(o[:, ~m & nan_before]).all()
    assert np.isfinite(o[:, m]).all()


def test_nodata_outside_mask_is_never_context_and_stays_nodata(crop, tiny_model, monkeypatch):
    nodata = crop.values == 0
    nd_pixels = nodata.any(0)
    assert nd_pixels.any()
    # a mask next to the nodata strip so that windows contain nodata pixels
    mask = _box(crop, 0, 64, 0, 64)
    mask = mask & ~xr.DataArray(nd_pixels, dims=("y", "x"))
    spy = InpaintSpy(tiny_model)
    monkeypatch.setattr(tiny_model, "inpaint", spy)
    wins = _record_windows(monkeypatch)
    out = inpaint(crop, mask, model=tiny_model, **FAST)
    assert len(spy.calls) == 1 and len(wins) == 1
    call = spy.calls[0]
    # cell (0, 0) runs on one tight window around the mask's 0-64 box (plus its context margin):
    # nodata pixels there are unknown to the model
    y0, y1, x0, x1 = wins[0]
    hole = mask.values
    assert call["shape"] == (1, 3, y1 - y0, x1 - x0)
    assert hole[y0:y1, x0:x1].sum() == hole.sum()  # the window holds the whole hole
    model_mask = call["masks"][0, 0].numpy() > 0.5
    nd_win = nd_pixels[y0:y1, x0:x1]
    assert nd_win.any() and model_mask[nd_win].all()
    assert (call["images"][0][:, nd_win] == 0).all()
    # and they stay nodata
    assert (out.values[nodata] == 0).all()
    np.testing.assert_array_equal(out.values[:, ~mask.values], crop.values[:, ~mask.values])


def test_only_cells_with_masked_pixels_run_in_checkerboard_order(crop, tiny_model, monkeypatch):
    spy = InpaintSpy(tiny_model)
    monkeypatch.setattr(tiny_model, "inpaint", spy)
    wins = _record_windows(monkeypatch)
    mask = _box(crop, 70, 80, 30, 100)  # cells (1, 0) [odd, pass B] and (1, 1) [even, pass A]
    calls_before = tiny_model.unet_calls
    inpaint(crop, mask, model=tiny_model, **FAST)
    assert len(spy.calls) == 2
    assert tiny_model.unet_calls - calls_before == 2 * FAST["steps"]  # guidance batched: 1 pass/step
    # tight windows: each cell's masked box + a context margin, not the whole 96 px cell window
    assert len(wins) == 2 and [c["shape"][2:] for c in spy.calls] == [(w[1] - w[0], w[3] - w[2]) for w in wins]
    assert all((w[1] - w[0]) * (w[3] - w[2]) < 96 * 96 for w in wins)
    # pass B (cell (1, 0), cols < 64) sees pass A's pixels (cell (1, 1), cols 64-128) as known
    y0, y1, x0, x1 = wins[1]
    assert x0 < 64 < x1
    b_mask = spy.calls[1]["masks"][0, 0].numpy() > 0.5
    m = mask.values[y0:y1, x0:x1]
    own = np.zeros_like(m)
    own[:, :64 - x0] = m[:, :64 - x0]  # global cols < 64
    assert own.any() and b_mask[own].all()  # own cell's masked pixels: unknown
    own_a = np.zeros_like(m)
    own_a[:, 64 - x0:] = m[:, 64 - x0:]  # global cols >= 64
    assert own_a.any() and not b_mask[own_a].any()  # A cell's synthesized pixels: known context


def _record_windows(monkeypatch) -> list:
    """The global (y0, y1, x0, x1) windows the engine runs the model on, in the order it plans them."""
    from geot2e.engine.grid import TileGrid

    seen, real = [], TileGrid.cell_windows

    def spy(self, i, j, window_mask, multiple, **kw):
        wins, owner = real(self, i, j, window_mask, multiple, **kw)
        seen.extend(w for w in wins if w not in seen)
        return wins, owner

    monkeypatch.setattr(TileGrid, "cell_windows", spy)
    return seen


def test_determinism_and_seed(crop, tiny_model):
    mask = _box(crop, 20, 60, 20, 60)
    a = inpaint(crop, mask, model=tiny_model, **FAST)
    b = inpaint(crop, mask, model=tiny_model, **FAST)
    c = inpaint(crop, mask, model=tiny_model, seed=1, **FAST)
    assert np.array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)


def test_samples_give_mean_and_uncertainty(crop, tiny_model):
    mask = _box(crop, 20, 60, 20, 60)
    out = inpaint(crop, mask, model=tiny_model, samples=3, **FAST)
    m = mask.values
    unc = out["uncertainty"]
    assert unc.dims == out.dims and unc.dtype == np.float32
    assert (unc.values[:, ~m] == 0).all()
    assert (unc.values[:, m] > 0).mean() > 0.9
    assert np.array_equal(out.values[:, ~m], crop.values[:, ~m])
    one = inpaint(crop, mask, model=tiny_model, samples=1, **FAST)
    # the mean of 3 samples differs from the first sample alone, within a few spreads
    diff = np.abs(out.values[:, m].astype(float) - one.values[:, m].astype(float))
    assert diff.mean() > 0 and np.median(diff / np.maximum(unc.values[:, m], 1)) < 3


def test_remove_clouds_empty_mask_is_a_copy(crop, tiny_model):
    mask = _box(crop, 0, 0, 0, 0)
    out = remove_clouds(crop, mask, model=tiny_model, **FAST)
    assert np.array_equal(out.values, crop.values)
    assert not out["synthesized"].values.any()
    assert out.attrs["geot2e_operation"] == "remove_clouds"
    with pytest.raises(EmptyMaskError):
        inpaint(crop, mask, model=tiny_model, **FAST)


def test_remove_clouds_fills_the_mask(crop, tiny_model):
    mask = _box(crop, 40, 70, 40, 70)
    out = remove_clouds(crop, mask, model=tiny_model, **FAST)
    m = mask.values
    assert np.array_equal(out.values[:, ~m], crop.values[:, ~m])
    assert out.attrs["geot2e_prompt"] == ""
    assert out.attrs["geot2e_harmonize"] == "lowpass"   # reconstruction: colour from the surroundings


def test_guidance_interval_default_and_provenance(crop, tiny_model):
    mask = _box(crop, 40, 72, 40, 72)
    m = mask.values
    half = remove_clouds(crop, mask, prompt="a forest", model=tiny_model, guidance=3.0, **FAST)
    assert half.attrs["geot2e_guidance_interval"] == 0.5      # remove_clouds guides the noisier half
    full = remove_clouds(crop, mask, prompt="a forest", model=tiny_model, guidance=3.0, guidance_interval=1.0,
                         **FAST)
    assert full.attrs["geot2e_guidance_interval"] == 1.0
    assert inpaint(crop, mask, model=tiny_model, **FAST).attrs["geot2e_guidance_interval"] == 1.0
    assert np.array_equal(half.values[:, ~m], crop.values[:, ~m])
    assert not np.array_equal(half.values[:, m], full.values[:, m])   # the unguided late steps differ


def test_remove_clouds_sampler_follows_samples(crop, tiny_model, monkeypatch):
    """One sample is drawn for realism (unguided, 60 steps), the mean of K for accuracy
    (ω = 3 on the noisier half, 25 steps); explicit values win; inpaint keeps ω = 3, 25 steps."""
    import geot2e.engine.raster as raster

    seen = []
    monkeypatch.setattr(raster, "synthesize", lambda da, runs, *, opts, **kw: seen.append(opts) or da)
    mask = _box(crop, 40, 72, 40, 72)
    remove_clouds(crop, mask, model=tiny_model)
    remove_clouds(crop, mask, model=tiny_model, samples=4)
    remove_clouds(crop, mask, model=tiny_model, samples=4, guidance=1.5)
    remove_clouds(crop, mask, model=tiny_model, steps=10)
    inpaint(crop, mask, model=tiny_model)
    assert [(o.guidance, o.steps, o.samples) for o in seen] == [(0.0, 60, 1), (3.0, 25, 4), (1.5, 25, 4),
                                                                 (0.0, 10, 1), (3.0, 25, 1)]
    assert [o.guidance_interval for o in seen] == [0.5] * 4 + [1.0]


def test_harmonize_modes_through_the_api(crop, tiny_model):
    mask = _box(crop, 40, 88, 40, 88)
    m = mask.values
    outs = {h: remove_clouds(crop, mask, model=tiny_model, harmonize=h, **FAST) for h in ("lowpass", "none")}
    assert outs["none"].attrs["geot2e_harmonize"] == "none"
    assert inpaint(crop, mask, model=tiny_model, **FAST).attrs["geot2e_harmonize"] == "boundary"
    # an untrained model's fill is off-colour; lowpass anchoring brings the mean colour of the
    # fill close to its surroundings' and never touches a known pixel
    ring = np.zeros_like(m)
    ring[32:96, 32:96] = True
    ring &= ~m & (crop.values != 0).all(axis=0)   # valid known pixels around the mask
    for h, o in outs.items():
        assert np.array_equal(o.values[:, ~m], crop.values[:, ~m]), h
    err = {h: np.abs(o.values[:, m].astype(float).mean(1) - crop.values[:, ring].astype(float).mean(1)).mean()
           for h, o in outs.items()}
    assert err["lowpass"] < 0.5 * err["none"], err
    with pytest.raises(ParameterError, match="harmonize"):
        remove_clouds(crop, mask, model=tiny_model, harmonize="poisson", **FAST)


def test_two_dimensional_input_with_a_one_band_model(crop, tmp_path):
    import torch

    from geot2e.models import Text2Earth, save_pretrained, tiny_config

    torch.manual_seed(1)
    p = save_pretrained(Text2Earth(tiny_config(bands=1)), tmp_path / "tiny1")
    da = crop.isel(band=0, drop=True)
    mask = _box(crop, 20, 50, 20, 50)
    out = inpaint(da, mask, model=p, **FAST)
    assert out.dims == ("y", "x") and out.dtype == da.dtype
    m = mask.values
    assert np.array_equal(out.values[~m], da.values[~m])
    assert out.rio.transform() == da.rio.transform()


def test_time_slices_are_processed_one_by_one(crop, tiny_model):
    ts = xr.concat([crop, crop], dim="time").assign_coords(time=[0, 1])
    mask = _box(crop, 20, 50, 20, 50)
    out = inpaint(ts, mask, model=tiny_model, **FAST)
    assert out.dims == ts.dims and out.shape == ts.shape
    m = mask.values
    for t in range(2):
        assert np.array_equal(out.values[t][:, ~m], crop.values[:, ~m])
    assert not np.array_equal(out.values[0][:, m], out.values[1][:, m])  # independent noise per slice
    # a (time, y, x) mask: one mask per date
    tm = xr.concat([mask, ~mask & False], dim="time").assign_coords(time=[0, 1])
    out2 = inpaint(ts, tm, model=tiny_model, **FAST)
    assert np.array_equal(out2.values[1], crop.values)
    assert out2["synthesized"].dims == ("time", "y", "x")


def test_errors_say_what_to_do(crop, landsat_da, tiny_model):
    mask = _box(crop, 20, 50, 20, 50)
    with pytest.raises(TileSizeError, match="multiple"):
        inpaint(crop, mask, model=tiny_model, tile=50)
    with pytest.raises(TileSizeError):
        inpaint(crop, mask, model=tiny_model, tile=64, overlap=6)
    with pytest.raises(GridMismatchError):
        inpaint(crop, _box(landsat_da.isel(y=slice(0, 128), x=slice(383, 511)), 0, 5, 0, 5), model=tiny_model)
    with pytest.raises(BandCountError, match="band"):
        inpaint(crop.isel(band=[0, 1]), mask, model=tiny_model, **FAST)
    with pytest.raises(ParameterError):
        inpaint(crop, mask, model=tiny_model, guidance=-1)
    with pytest.raises(ParameterError):
        inpaint(crop, mask, model=tiny_model, steps=0)
    with pytest.raises(ParameterError):
        inpaint(crop, mask, model=tiny_model, scheduler="nope")
    nocrs = crop.drop_vars("spatial_ref")
    nocrs.attrs = {}
    nocrs.encoding = {}
    assert nocrs.rio.crs is None
    with pytest.raises(MissingCRSError, match="gsd="):
        inpaint(nocrs, mask.drop_vars("spatial_ref", errors="ignore").values, model=tiny_model, **FAST)


def test_gsd_override_and_range_warning(crop, tiny_model, monkeypatch):
    spy = InpaintSpy(tiny_model)
    monkeypatch.setattr(tiny_model, "inpaint", spy)
    mask = _box(crop, 20, 40, 20, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GSDRangeWarning)
        inpaint(crop, mask, model=tiny_model, **FAST)
    assert abs(spy.calls[-1]["gsd"] - 30.0) < 0.5
    with pytest.warns(GSDRangeWarning, match="outside"):
        out = inpaint(crop, mask, model=tiny_model, gsd=5000.0, **FAST)
    assert spy.calls[-1]["gsd"] == 5000.0 and out.attrs["geot2e_gsd"] == 5000.0
    # a nominal GSD a hair below the recorded ground-distance range (15 m vs 15.006 m) is inside it
    lo, hi = tiny_model.gsd_range
    with warnings.catch_warnings():
        warnings.simplefilter("error", GSDRangeWarning)
        inpaint(crop, mask, model=tiny_model, gsd=lo * 0.999, **FAST)
        inpaint(crop, mask, model=tiny_model, gsd=hi * 1.001, **FAST)
    with pytest.warns(GSDRangeWarning, match="outside"):
        inpaint(crop, mask, model=tiny_model, gsd=lo * 0.9, **FAST)


def test_mask_without_crs_on_the_same_pixels_is_accepted(crop, tiny_model):
    mask = _box(crop, 20, 40, 20, 40)
    bare = xr.DataArray(mask.values, dims=("y", "x"), coords={"y": crop.y, "x": crop.x})
    assert bare.rio.crs is None
    a = inpaint(crop, bare, model=tiny_model, **FAST)
    b = inpaint(crop, mask, model=tiny_model, **FAST)
    assert np.array_equal(a.values, b.values)
    shifted = bare.assign_coords(x=crop.x.values + 30.0)
    with pytest.raises(GridMismatchError):
        inpaint(crop, shifted, model=tiny_model, **FAST)
