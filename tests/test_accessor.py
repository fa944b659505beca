"""The ``da.t2e`` accessor: the public functions on any rioxarray DataArray."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

import geot2e  # noqa: E402
import geot2e.accessor  # noqa: E402,F401  (registers .t2e)
from geot2e.accessor import Provenance  # noqa: E402
from engine_helpers import tiny_model_path  # noqa: E402,F401 (session fixture: one tiny model for all modules)

FAST = dict(steps=1, guidance=0.0, tile=32, overlap=8, progress=False)


@pytest.fixture(scope="module")
def tiny_model(tiny_model_path):
    """The session's seeded random tiny model (engine_helpers), as a folder path."""
    return str(tiny_model_path)


@pytest.fixture(scope="module")
def small(landsat_da):
    return landsat_da.isel(y=slice(200, 264), x=slice(200, 264))


def test_accessor_is_registered_and_gsd_matches_function(landsat_da):
    assert hasattr(xr.DataArray, "t2e")
    assert landsat_da.t2e.gsd() == pytest.approx(geot2e.gsd(landsat_da))
    assert landsat_da.t2e.gsd() == pytest.approx(30.0, rel=0.01)
    gx, gy = landsat_da.t2e.gsd(per_axis=True)
    assert gx == pytest.approx(gy, rel=1e-3)


def test_untouched_raster_has_empty_provenance_and_no_synthesized_pixels(landsat_da):
    prov = landsat_da.t2e.provenance
    assert isinstance(prov, Provenance) and prov == {}
    assert "empty" in repr(prov)
    s = landsat_da.t2e.synthesized
    assert s.dtype == bool and s.shape == landsat_da.shape[1:] and not bool(s.any())


def test_geometry_mask_from_a_vector_file(landsat_da, polygons_path):
    m = landsat_da.t2e.geometry_mask(polygons_path)
    np.testing.assert_array_equal(m.values, geot2e.geometry_mask(
        geot2e.geo.read_vector(polygons_path), like=landsat_da).values)
    assert m.any()


def test_remove_clouds_provenance_and_to_cog_round_trip(small, tiny_model, tmp_path):
    mask = xr.zeros_like(small.isel(band=0, drop=True), dtype=bool)
    mask[20:28, 30:40] = True
    out = small.t2e.remove_clouds(mask, model=tiny_model, seed=3, **FAST)
    # bit-identical outside the mask, grid kept
    np.testing.assert_array_equal(out.values[:, ~mask.values], small.values[:, ~mask.values])
    assert out.rio.crs == small.rio.crs and out.rio.transform() == small.rio.transform()
    np.testing.assert_array_equal(out.t2e.synthesized.values, mask.values)
    prov = out.t2e.provenance
    assert prov["operation"] == "remove_clouds" and prov["seed"] == 3 and prov["steps"] == 1
    assert prov["model_id"] == "geot2e-tiny-random" and len(prov["checkpoint_hash"]) == 16
    assert prov["gsd"] == pytest.approx(30.0, rel=0.01)
    assert "checkpoint_hash" in repr(prov) and "<table>" in prov._repr_html_()
    path = out.t2e.to_cog(tmp_path / "filled.tif")
    back = geot2e.io.open_raster(path)
    assert back.t2e.provenance == prov
    np.testing.assert_array_equal(back.values, out.values)
    np.testing.assert_array_equal(back.t2e.synthesized.values, mask.values)


def test_outpaint_through_the_accessor_grows_the_grid(small, tiny_model):
    grown = small.t2e.outpaint(right=8, top=4, prompt="forest", model=tiny_model, **FAST)
    assert grown.rio.width == small.rio.width + 8 and grown.rio.height == small.rio.height + 4
    assert grown.rio.resolution() == small.rio.resolution()
    np.testing.assert_array_equal(grown.isel(y=slice(4, None), x=slice(0, 64)).values, small.values)
    assert grown.t2e.provenance["prompt"] == "forest"


def test_inpaint_and_compare_forward_their_arguments(small, monkeypatch):
    import geot2e.api

    seen = {}

    def fake_inpaint(da, mask, prompt="", **opts):
        seen.update(da=da, mask=mask, prompt=prompt, opts=opts)
        return da.assign_coords(synthesized=(("y", "x"), np.ones(da.shape[1:], bool)))

    monkeypatch.setattr(geot2e.api, "inpaint", fake_inpaint)
    res = small.t2e.inpaint("polygons.gpkg", "a lake", steps=7, seed=2)
    assert seen["da"] is small and seen["mask"] == "polygons.gpkg" and seen["prompt"] == "a lake"
    assert seen["opts"] == {"steps": 7, "seed": 2}
    fig = small.t2e.compare(res)  # mask="auto" picks res.synthesized
    assert len(fig.axes) == 3
    assert len(small.t2e.quicklook().axes) == 1
