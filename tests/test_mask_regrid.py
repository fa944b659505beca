"""geot2e.geo.mask_onto_grid: a mask decoded on its own grid (coarser, finer, another CRS) put on
the image's grid, as the CLI and the API need for a 20 m SCL mask and a 10 m image."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from affine import Affine

from geot2e.errors import MissingCRSError
from geot2e.geo import assert_same_grid
from geot2e.geo.regrid import mask_onto_grid


def _raster(values, transform, crs="EPSG:32621"):
    h, w = values.shape
    da = xr.DataArray(values, dims=("y", "x"))
    da = da.rio.write_transform(transform).rio.write_crs(crs)
    xs = [transform.c + transform.a * (i + 0.5) for i in range(w)]
    ys = [transform.f + transform.e * (j + 0.5) for j in range(h)]
    return da.assign_coords(x=xs, y=ys)


@pytest.fixture
def image(landsat_da):
    return landsat_da.isel(y=slice(0, 64), x=slice(0, 64))      # 30 m, EPSG:32621


def test_same_grid_comes_back_unchanged(image):
    m = xr.zeros_like(image.isel(band=0, drop=True), dtype=bool)
    m[5:9, 7:12] = True
    out = mask_onto_grid(m, image)
    assert out.dtype == bool and (out.values == m.values).all()


def test_a_coarser_mask_covers_its_finer_pixels(image):
    t = image.rio.transform()
    coarse = np.zeros((32, 32), dtype="uint8")                 # 60 m, like a 20 m SCL for 10 m bands
    coarse[3, 4] = 1
    m60 = _raster(coarse, Affine(60.0, 0, t.c, 0, -60.0, t.f))
    out = mask_onto_grid(m60, image, name="SCL cloud mask")
    assert_same_grid(out, image.isel(band=0, drop=True))
    assert int(out.sum()) == 4 and out.values[6:8, 8:10].all()
    assert out.rio.crs == image.rio.crs


def test_a_finer_mask_keeps_every_cloud_on_a_coarser_grid(image):
    t = image.rio.transform()
    fine = np.zeros((128, 128), dtype=bool)                    # 15 m, like Landsat's pan grid
    fine[21, 33] = True                                        # one 15 m pixel: a quarter of a 30 m pixel
    m15 = _raster(fine, Affine(15.0, 0, t.c, 0, -15.0, t.f))
    out = mask_onto_grid(m15, image)
    assert int(out.sum()) == 1 and bool(out.values[10, 16])   # not lost by nearest sampling


def test_another_crs_and_outside_the_footprint(image):
    m = xr.zeros_like(image.isel(band=0, drop=True), dtype="uint8")
    m[20:40, 20:40] = 1
    geo = m.rio.write_nodata(None, encoded=False).rio.reproject("EPSG:4326")
    out = mask_onto_grid(geo, image)
    inner = out.values[24:36, 24:36]
    assert inner.all() and not out.values[:10].any()           # outside the square (and footprint): False
    assert abs(int(out.sum()) - 400) < 80


def test_a_mask_without_crs_on_another_grid_is_refused(image):
    m = xr.DataArray(np.ones((10, 10), bool), dims=("y", "x"))
    with pytest.raises(MissingCRSError, match="write its CRS"):
        mask_onto_grid(m, image)


def test_a_finer_mask_in_another_crs_keeps_its_clouds(image):
    t = image.rio.transform()
    fine = np.zeros((128, 128), dtype="uint8")
    fine[21, 33] = 1
    m15 = _raster(fine, Affine(15.0, 0, t.c, 0, -15.0, t.f)).rio.write_nodata(None, encoded=False)
    m15 = m15.rio.reproject("EPSG:32721")                      # the same place, another UTM zone
    out = mask_onto_grid(m15, image)
    assert int(out.sum()) >= 1 and out.values[9:12, 15:18].any()
