"""geot2e.outpaint (exact grid growth) and geot2e.generate (new georeferenced canvases)."""
from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from engine_helpers import FAST, one_torch_thread, tiny_model, tiny_model_path  # noqa: F401
from geot2e.api import generate, outpaint
from geot2e.errors import MissingCRSError, ParameterError
from geot2e.geo import gsd

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small(landsat_da):
    return landsat_da.isel(y=slice(200, 264), x=slice(100, 164))


def test_outpaint_grid_is_exact(small, tiny_model):
    left, right, top, bottom = 12, 4, 8, 20
    out = outpaint(small, left=left, right=right, top=top, bottom=bottom, prompt="farmland",
                   model=tiny_model, **FAST)
    h, w = small.sizes["y"], small.sizes["x"]
    assert out.dims == small.dims and out.shape == (3, h + top + bottom, w + left + right)
    assert out.dtype == small.dtype and out.rio.crs == small.rio.crs and out.rio.nodata == small.rio.nodata
    t0 = small.rio.transform()
    assert out.rio.transform() == t0 * Affine.translation(-left, -top)
    assert out.rio.transform(recalc=True).almost_equals(t0 * Affine.translation(-left, -top))
    # original pixels at their coordinates, bit-identical
    inner = out.isel(y=slice(top, top + h), x=slice(left, left + w))
    np.testing.assert_array_equal(inner["x"].values, small["x"].values)
    np.testing.assert_array_equal(inner["y"].values, small["y"].values)
    assert np.array_equal(inner.values, small.values)
    assert np.array_equal(out.sel(x=small.x, y=small.y).values, small.values)
    # new pixels: synthesized, on the same 30 m grid, never nodata
    syn = out["synthesized"].values
    assert syn.sum() == out.sizes["y"] * out.sizes["x"] - h * w
    assert not syn[top:top + h, left:left + w].any()
    assert (out.values[:, syn] != 0).all()
    assert np.allclose(np.diff(out.x.values), 30.0) and np.allclose(np.diff(out.y.values), -30.0)
    assert out.rio.resolution() == small.rio.resolution()
    assert abs(gsd(out) - gsd(small)) < 1e-3  # same pixel size; the centre moved a little
    assert out.attrs["geot2e_operation"] == "outpaint" and out.attrs["geot2e_prompt"] == "farmland"


def test_outpaint_repeated_builds_a_larger_scene(small, tiny_model):
    a = outpaint(small, right=32, prompt="forest", model=tiny_model, **FAST)
    b = outpaint(a, bottom=16, prompt="a river", model=tiny_model, **FAST)
    assert b.shape == (3, 64 + 16, 64 + 32)
    assert np.array_equal(b.values[:, :64, :96], a.values)
    syn = b["synthesized"].values  # chained calls accumulate: the first call's new columns stay marked
    assert syn[64:].all() and syn[:64, 64:].all() and not syn[:64, :64].any()


def test_outpaint_needs_pixels(small, tiny_model):
    with pytest.raises(ParameterError):
        outpaint(small, model=tiny_model, **FAST)
    with pytest.raises(ParameterError):
        outpaint(small, left=-2, model=tiny_model, **FAST)


def test_generate_from_bounds_crs_gsd(tiny_model):
    bounds = (737000.0, -2790000.0, 737000.0 + 60 * 30, -2790000.0 + 40 * 30)
    out = generate("a lake among fields", bounds=bounds, crs="EPSG:32621", gsd=30.0, model=tiny_model, **FAST)
    assert out.dims == ("band", "y", "x") and out.dtype == np.float32
    assert out.rio.crs.to_epsg() == 32621
    t = out.rio.transform()
    assert (t.c, t.f) == (bounds[0], bounds[3])
    # the pixel size is set so that the ground GSD at the centre is 30 m (UTM scale factor)
    assert abs(gsd(out) - 30.0) < 1e-3
    assert abs(out.sizes["x"] - 60) <= 1 and abs(out.sizes["y"] - 40) <= 1
    assert out["synthesized"].values.all()
    v = out.values
    assert np.isfinite(v).all() and v.min() >= 0 and v.max() <= 1
    assert out.attrs["geot2e_operation"] == "generate"


def test_generate_like_takes_grid_dtype_and_range(small, tiny_model):
    out = generate("bare soil", like=small, model=tiny_model, **FAST)
    assert out.shape == small.shape and out.dtype == small.dtype
    assert out.rio.transform() == small.rio.transform() and out.rio.crs == small.rio.crs
    np.testing.assert_array_equal(out.x.values, small.x.values)
    assert out["synthesized"].values.all()
    assert (out.values != 0).all()


def test_generate_with_shape_and_errors(tiny_model):
    out = generate("", bounds=(0, 0, 960, 640), crs="EPSG:32621", shape=(32, 48), model=tiny_model, **FAST)
    assert out.shape == (3, 32, 48) and out.rio.resolution() == (20.0, -20.0)
    with pytest.raises(MissingCRSError):
        generate("x", bounds=(0, 0, 960, 640), gsd=30.0, model=tiny_model, **FAST)
    with pytest.raises(ParameterError):
        generate("x", bounds=(0, 0, 960, 640), crs="EPSG:32621", model=tiny_model, **FAST)
    with pytest.raises(ParameterError):
        generate("x", model=tiny_model, **FAST)
