"""Shared fixtures: small real raster crops (tests/data) and cases derived from them."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("geot2e") is None:  # not installed: test the checkout
    sys.path.insert(0, str(ROOT))

import pyproj  # noqa: E402
import rioxarray  # noqa: E402,F401
import xarray as xr  # noqa: E402
from affine import Affine  # noqa: E402
from rasterio.enums import Resampling  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
LANDSAT_CROP = DATA / "landsat_224078_rgb_crop.tif"
LANDSAT_HOLDOUT = DATA / "landsat_224077_holdout_crop.tif"
RGBN_CROP = DATA / "rgbn_5m_crop.tif"
POLYGONS = DATA / "landsat_224078_polygons.geojson"

#: custom transverse Mercator in US survey feet centred near the Landsat scene
TMERC_USFT = (
    "+proj=tmerc +lat_0=-25 +lon_0=-55 +k=0.9999 +x_0=500000 +y_0=10000000 "
    "+ellps=WGS84 +units=us-ft +no_defs"
)

DERIVED_CASES = ("utm", "epsg4326", "epsg3857", "us_ft", "rotated", "float_nan")
SYNTHETIC_LATS = (0.0, 40.0, 70.0)


def _open(path: Path) -> xr.DataArray:
    da = rioxarray.open_rasterio(path)
    da = da.assign_coords(band=list(da.attrs.get("long_name", da.band.values)))
    return da


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def landsat_da() -> xr.DataArray:
    """Landsat 8 224/078 crop: uint16 (band=red,green,blue; 512 x 512), EPSG:32621, 30 m, nodata 0."""
    return _open(LANDSAT_CROP).load()


@pytest.fixture(scope="session")
def holdout_da() -> xr.DataArray:
    """Landsat 8 224/077 crop outside the 224/078 footprint (256 x 256)."""
    return _open(LANDSAT_HOLDOUT).load()


@pytest.fixture(scope="session")
def rgbn_da() -> xr.DataArray:
    """5 m RGBN crop: uint8 (4, 256, 256), EPSG:32618, no nodata."""
    return _open(RGBN_CROP).load()


@pytest.fixture(scope="session")
def polygons_path() -> Path:
    return POLYGONS


def _rotated(da: xr.DataArray, angle: float = 20.0) -> xr.DataArray:
    """Same pixels with the grid rotated by ``angle`` degrees about its top-left corner."""
    t = da.rio.transform()
    rot = t @ Affine.rotation(angle)
    y, x = da.rio.y_dim, da.rio.x_dim
    out = da.drop_vars([x, y]).copy()
    out = out.rio.write_crs(da.rio.crs).rio.write_transform(rot)
    return out


def derive(da: xr.DataArray, case: str) -> xr.DataArray:
    """A case derived from a real crop (see ``DERIVED_CASES``)."""
    if case == "utm":
        return da
    if case == "epsg4326":
        return da.rio.reproject("EPSG:4326", resampling=Resampling.nearest)
    if case == "epsg3857":
        return da.rio.reproject("EPSG:3857", resampling=Resampling.nearest)
    if case == "us_ft":
        return da.rio.reproject(TMERC_USFT, resampling=Resampling.nearest)
    if case == "rotated":
        return _rotated(da)
    if case == "float_nan":
        nd = da.rio.nodata
        f = da.astype("float32")
        if nd is not None:
            f = f.where(da != nd)
        return f.rio.write_nodata(np.nan, encoded=False)
    raise KeyError(case)


@pytest.fixture(scope="session")
def derived(landsat_da):
    """Factory ``derived(case)`` with caching: cases of ``DERIVED_CASES``."""
    cache: dict[str, xr.DataArray] = {}

    def make(case: str) -> xr.DataArray:
        if case not in cache:
            cache[case] = derive(landsat_da, case)
        return cache[case]

    return make


def synthetic_da(
    lat: float,
    *,
    crs: str | None = None,
    lon: float | None = None,
    res: float = 30.0,
    rotation: float = 0.0,
    shape: tuple[int, int] = (64, 64),
    dtype: str = "uint16",
) -> xr.DataArray:
    """Small raster centred on (lon, lat) with a given CRS, pixel size and rotation.

    Default CRS: the UTM zone of ``lon`` (default lon = -57, UTM 21).
    """
    lon = -57.0 if lon is None else lon
    if crs is None:
        zone = int((lon + 180) // 6) + 1
        crs = f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"
    c = pyproj.CRS.from_user_input(crs)
    cx, cy = pyproj.Transformer.from_crs("EPSG:4326", c, always_xy=True).transform(lon, lat)
    h, w = shape
    t = (
        Affine.translation(cx, cy)
        @ Affine.rotation(rotation)
        @ Affine.scale(res, -res)
        @ Affine.translation(-w / 2, -h / 2)
    )
    data = np.arange(h * w, dtype=dtype).reshape(1, h, w)
    da = xr.DataArray(data, dims=("band", "y", "x"), coords={"band": [1]})
    if rotation == 0:
        xs = t.c + (np.arange(w) + 0.5) * t.a
        ys = t.f + (np.arange(h) + 0.5) * t.e
        da = da.assign_coords(x=xs, y=ys)
    da = da.rio.write_crs(c).rio.write_transform(t)
    return da


def independent_gsd(transform: Affine, crs, shape) -> tuple[float, float]:
    """GSD per axis by an independent route: the pixel's edge midpoints at the grid
    centre are transformed to lon/lat and their geodesic distance measured with
    :class:`pyproj.Geod` on the CRS's ellipsoid (no projection scale factors)."""
    crs = pyproj.CRS.from_user_input(crs)
    geod = crs.get_geod() if crs.get_geod() is not None else pyproj.Geod(ellps="WGS84")
    to_ll = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    h, w = shape
    cx, cy = w / 2.0, h / 2.0
    out = []
    for dc, dr in ((0.5, 0.0), (0.0, 0.5)):
        x0, y0 = transform @ (cx - dc, cy - dr)
        x1, y1 = transform @ (cx + dc, cy + dr)
        (lon0, lon1), (lat0, lat1) = to_ll.transform([x0, x1], [y0, y1])
        out.append(geod.inv(lon0, lat0, lon1, lat1)[2])
    return out[0], out[1]


def independent_gsd_da(da: xr.DataArray) -> tuple[float, float]:
    return independent_gsd(da.rio.transform(), da.rio.crs, (da.rio.height, da.rio.width))


def geometric_mean(pair) -> float:
    return math.sqrt(pair[0] * pair[1])


@pytest.fixture(scope="session")
def synthetic():
    """Factory ``synthetic(lat, *, crs=None, lon=None, res=30.0, rotation=0.0, ...)``:
    small rasters centred at a latitude (see ``synthetic_da``; ``SYNTHETIC_LATS``)."""
    return synthetic_da
