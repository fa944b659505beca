"""What comes back must be right (issue 20): chained calls accumulate flags and provenance,
generate's grid has exactly the GSD asked for and covers the bounds, float masks follow one rule."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import geot2e
import geot2e.io as gio
from geot2e.errors import MaskValueError, MaskValueWarning

from engine_helpers import tiny_model, tiny_model_path  # noqa: F401

CROP = Path(__file__).resolve().parent / "data" / "landsat_224078_rgb_crop.tif"
FAST = dict(tile=64, overlap=16, steps=1, guidance=0.0, progress=False)


@pytest.fixture(scope="module")
def da() -> xr.DataArray:
    """64 x 64 window of the real Landsat crop (uint16, EPSG:32621, nodata 0, no nodata pixel)."""
    return gio.open_raster(CROP).isel(y=slice(200, 264), x=slice(200, 264)).load()


def _box(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


# --------------------------------------------------------------------------- chained calls
def test_chained_calls_accumulate_flags_and_provenance(da, tiny_model):
    clouds = _box(da.shape[1:], 10, 20, 10, 20)
    edit = _box(da.shape[1:], 40, 50, 30, 45)
    step1 = geot2e.remove_clouds(da, clouds, model=tiny_model, **FAST)
    step2 = geot2e.inpaint(step1, edit, "a lake", model=tiny_model, **FAST)
    np.testing.assert_array_equal(step2["synthesized"].values, clouds | edit)
    step3 = geot2e.outpaint(step2, right=8, top=4, model=tiny_model, **FAST)
    expected = np.ones((68, 72), bool)
    expected[4:, :64] = clouds | edit
    np.testing.assert_array_equal(step3["synthesized"].values, expected)
    ops = [h["geot2e_operation"] for h in step3.attrs["geot2e_history"]]
    assert ops == ["remove_clouds", "inpaint", "outpaint"]
    assert step3.attrs["geot2e_operation"] == "outpaint"  # the latest step stays at the top level
    assert step3.attrs["geot2e_history"][1]["geot2e_prompt"] == "a lake"
    assert "geot2e_outpaint_pixels" not in step2.attrs  # no stale key from another step
    # the input of each call is left as it was
    assert "synthesized" not in da.coords and not any(k.startswith("geot2e_") for k in da.attrs)


def test_flags_and_history_survive_cog_and_zarr_round_trips(da, tiny_model, tmp_path):
    clouds = _box(da.shape[1:], 10, 20, 10, 20)
    edit = _box(da.shape[1:], 40, 50, 30, 45)
    step1 = geot2e.remove_clouds(da, clouds, model=tiny_model, **FAST)
    back = gio.open_raster(gio.to_cog(step1, tmp_path / "step1.tif"))
    step2 = geot2e.inpaint(back, edit, "a lake", model=tiny_model, **FAST)
    np.testing.assert_array_equal(step2["synthesized"].values, clouds | edit)
    store = gio.create_zarr_like(step2, tmp_path / "step2.zarr", chunks=32)
    gio.write_zarr_region(step2, store, {"y": slice(None), "x": slice(None)})
    back2 = gio.open_raster(store)
    step3 = geot2e.inpaint(back2, _box(da.shape[1:], 0, 5, 0, 5), "a road", model=tiny_model, **FAST)
    np.testing.assert_array_equal(step3["synthesized"].values, clouds | edit | _box(da.shape[1:], 0, 5, 0, 5))
    assert [h["geot2e_operation"] for h in step3.attrs["geot2e_history"]] == [
        "remove_clouds", "inpaint", "inpaint"]
    final = gio.read_provenance(gio.to_cog(step3, tmp_path / "step3.tif"))
    assert [h["geot2e_prompt"] for h in final["geot2e_history"]] == ["", "a lake", "a road"]


# --------------------------------------------------------------------------- generate's grid
@pytest.mark.parametrize("crs, bounds, gsd", [
    ("EPSG:32621", (737145.0, -2801055.0, 738148.0, -2800348.0), 30.0),
    ("EPSG:32621", (737145.0, -2801055.0, 738145.0, -2800355.0), 10.0),
    ("EPSG:3857", (-6000000.0, -3000000.0, -5998000.0, -2998500.0), 10.0),
    ("EPSG:4326", (-58.1, -25.2, -58.09, -25.19), 10.0),
])
def test_generate_has_exactly_the_gsd_asked_for_and_covers_the_bounds(tiny_model, crs, bounds, gsd):
    g = geot2e.generate("a lake", bounds=bounds, crs=crs, gsd=gsd, model=tiny_model, **FAST)
    gx, gy = geot2e.gsd(g, per_axis=True)
    assert gx == pytest.approx(gsd, rel=1e-9) and gy == pytest.approx(gsd, rel=1e-9)
    left, bottom, right, top = g.rio.bounds()
    t = g.rio.transform()
    assert (left, top) == (bounds[0], bounds[3])  # anchored at the top-left corner
    assert right >= bounds[2] and right - bounds[2] < abs(t.a)  # covers, by less than a pixel
    assert bottom <= bounds[1] and bounds[1] - bottom < abs(t.e)


def test_generated_scene_round_trips_exactly(tiny_model, tmp_path):
    g = geot2e.generate("a lake", bounds=(737145.0, -2801055.0, 738145.0, -2800355.0), crs="EPSG:32621",
                        gsd=10.0, model=tiny_model, **FAST)
    back = gio.open_raster(gio.to_cog(g, tmp_path / "g.tif"))
    xr.align(back, g, join="exact")
    np.testing.assert_array_equal(back.values, g.values)


# --------------------------------------------------------------------------- float masks
def test_float_mask_one_rule_for_numpy_and_dataarray(da, tiny_model, monkeypatch):
    import geot2e.engine.raster as engine_raster

    seen = []
    monkeypatch.setattr(engine_raster, "synthesize",
                        lambda d, runs, **kw: seen.append(np.asarray(runs[0][0].values, bool)))
    mask = _box(da.shape[1:], 10, 20, 10, 20).astype("float32")
    with_nan = mask.copy()
    with_nan[30, 30] = np.nan
    for m in (with_nan, xr.DataArray(with_nan, dims=("y", "x")),
              xr.DataArray(with_nan, dims=("y", "x")).chunk(16)):
        with pytest.raises(MaskValueError, match=r"1 NaN.*fillna"):
            geot2e.inpaint(da, m, "x", model=tiny_model, **FAST)
    halves = mask.copy()
    halves[40, 40] = 0.5
    for m in (halves, xr.DataArray(halves, dims=("y", "x")), xr.DataArray(halves, dims=("y", "x")).chunk(16)):
        with pytest.warns(MaskValueWarning, match=r"1 value\(s\) other than 0 and 1"):
            geot2e.inpaint(da, m, "x", model=tiny_model, **FAST)
    assert all(np.array_equal(s, halves != 0) for s in seen) and len(seen) == 3
    with warnings.catch_warnings():  # a clean 0/1 float mask is silent
        warnings.simplefilter("error", MaskValueWarning)
        geot2e.inpaint(da, mask, "x", model=tiny_model, **FAST)
        geot2e.inpaint(da, xr.DataArray(mask.astype("uint8"), dims=("y", "x")), "x", model=tiny_model, **FAST)
