"""GSD: ground metres per pixel, checked against an independent geodesic computation."""
from __future__ import annotations

import math

import numpy as np
import pyproj
import pytest
import xarray as xr
from affine import Affine
from conftest import (
    DERIVED_CASES,
    SYNTHETIC_LATS,
    geometric_mean,
    independent_gsd,
    independent_gsd_da,
    synthetic_da,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geot2e.errors import Geot2eError, MissingCRSError, ParameterError
from geot2e.geo import gsd, gsd_from_transform

TOL = 0.005  # 0.5 %


def _rel(a, b):
    return abs(a / b - 1.0)


def test_landsat_crop_is_30m(landsat_da):
    g = gsd(landsat_da)
    # UTM 21S scale factor near -54.8 E, -25.3 S is ~1.0002: ground GSD a hair under 30 m
    assert 29.9 < g < 30.0
    gx, gy = gsd(landsat_da, per_axis=True)
    assert gx == pytest.approx(gy, rel=1e-6)


@pytest.mark.parametrize("case", DERIVED_CASES)
def test_derived_cases_match_independent_geodesic(derived, case):
    da = derived(case)
    ours = gsd(da, per_axis=True)
    ref = independent_gsd_da(da)
    assert _rel(geometric_mean(ours), geometric_mean(ref)) < TOL
    assert _rel(ours[0], ref[0]) < TOL and _rel(ours[1], ref[1]) < TOL
    assert gsd(da) == pytest.approx(geometric_mean(ours))


def test_derived_cases_keep_ground_size(derived):
    """Reprojection at the same pixel count keeps the GSD near 30 m in every CRS."""
    base = gsd(derived("utm"))
    for case in ("epsg4326", "epsg3857", "us_ft", "rotated", "float_nan"):
        assert _rel(gsd(derived(case)), base) < 0.05, case


def test_us_feet_unit_factor(derived):
    da = derived("us_ft")
    res_ft = abs(da.rio.resolution()[0])
    # grid size in feet x 0.3048006 m/ft / scale (~1) is the GSD
    assert gsd(da) == pytest.approx(res_ft * 1200 / 3937, rel=2e-3)


def test_epsg2229_feet(synthetic):
    da = synthetic(34.05, lon=-118.25, crs="EPSG:2229", res=10.0)  # 10 US ft
    assert gsd(da) == pytest.approx(10 * 1200 / 3937, rel=1e-3)
    assert _rel(gsd(da), geometric_mean(independent_gsd_da(da))) < 1e-4


def test_rotation_does_not_change_gsd(derived):
    # rotated about the top-left corner: the centre moves a few km, the UTM scale barely
    assert gsd(derived("rotated")) == pytest.approx(gsd(derived("utm")), rel=1e-4)


@pytest.mark.parametrize("lat", SYNTHETIC_LATS)
@pytest.mark.parametrize(
    "crs", ["utm", "EPSG:3857", "EPSG:4326", "EPSG:6933", "ESRI:54008", "EPSG:3413"]
)
def test_synthetic_latitudes(lat, crs):
    if crs == "EPSG:3413" and lat < 60:
        pytest.skip("polar stereographic north is for high latitudes")
    res = 0.0003 if crs == "EPSG:4326" else 30.0
    for rotation in (0.0, 33.0):
        da = synthetic_da(lat, crs=None if crs == "utm" else crs, lon=10.0, res=res,
                          rotation=rotation)
        ours = gsd(da, per_axis=True)
        ref = independent_gsd_da(da)
        assert _rel(ours[0], ref[0]) < TOL and _rel(ours[1], ref[1]) < TOL, (crs, lat, rotation)


def test_web_mercator_at_25n():
    da = synthetic_da(25.0, crs="EPSG:3857", lon=0.0, res=10.0)
    ratio = gsd(da) / 10.0
    assert ratio == pytest.approx(0.906, abs=0.003)
    # exact: x scales with N cos(phi)/a, y with M cos(phi)/a (spherical formulas on WGS84)
    a, f = 6378137.0, 1 / 298.257223563
    e2 = f * (2 - f)
    s = math.sin(math.radians(25.0))
    n = a / math.sqrt(1 - e2 * s * s)
    m = a * (1 - e2) / (1 - e2 * s * s) ** 1.5
    c = math.cos(math.radians(25.0))
    gx, gy = gsd(da, per_axis=True)
    assert gx == pytest.approx(10 * n * c / a, rel=1e-4)
    assert gy == pytest.approx(10 * m * c / a, rel=1e-4)


def test_anisotropic_pixels_geometric_mean():
    da = synthetic_da(0.0, lon=-57.0)
    t = da.rio.transform()
    t2 = Affine(t.a * 2, t.b, t.c, t.d, t.e, t.f)
    gx, gy = gsd_from_transform(t2, da.rio.crs, (64, 64), per_axis=True)
    assert gx == pytest.approx(2 * gy, rel=1e-3)
    assert gsd_from_transform(t2, da.rio.crs, (64, 64)) == pytest.approx(math.sqrt(gx * gy))


def test_gsd_from_transform_matches_gsd(landsat_da):
    assert gsd_from_transform(
        tuple(landsat_da.rio.transform())[:6], "EPSG:32621", landsat_da.shape[1:]
    ) == pytest.approx(gsd(landsat_da), rel=1e-12)


def test_dask_backed_same_as_numpy(landsat_da):
    assert gsd(landsat_da.chunk({"x": 100, "y": 77})) == gsd(landsat_da)


def test_missing_crs():
    da = xr.DataArray(np.zeros((4, 4)), dims=("y", "x"),
                      coords={"y": np.arange(4.0), "x": np.arange(4.0)})
    with pytest.raises(MissingCRSError) as err:
        gsd(da)
    assert "write_crs" in str(err.value) and "gsd=" in str(err.value)
    assert isinstance(err.value, Geot2eError)
    with pytest.raises(MissingCRSError):
        gsd_from_transform(Affine.identity(), None, (4, 4))


def test_non_ground_crs_rejected():
    with pytest.raises(ParameterError, match="gsd="):
        gsd_from_transform(Affine(1, 0, 0, 0, -1, 0), "EPSG:4978", (4, 4))  # geocentric


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lat=st.floats(-80, 80),
    dlon=st.floats(-2.9, 2.9),
    res=st.floats(0.3, 1000.0),
    rotation=st.floats(0, 360),
    aspect=st.floats(0.5, 2.0),
    crs_kind=st.sampled_from(["utm", "EPSG:3857", "EPSG:6933", "ESRI:54008", "EPSG:4326"]),
)
def test_property_matches_geodesic(lat, dlon, res, rotation, aspect, crs_kind):
    lon = -57.0 + dlon
    if crs_kind == "utm":
        crs = f"EPSG:{(32600 if lat >= 0 else 32700) + 21}"
    else:
        crs = crs_kind
    if crs_kind == "EPSG:4326":
        res = res / 111_000.0
    c = pyproj.CRS(crs)
    cx, cy = pyproj.Transformer.from_crs("EPSG:4326", c, always_xy=True).transform(lon, lat)
    t = (Affine.translation(cx, cy) @ Affine.rotation(rotation)
         @ Affine.scale(res * aspect, -res) @ Affine.translation(-16, -16))
    ours = gsd_from_transform(t, c, (32, 32), per_axis=True)
    ref = independent_gsd(t, c, (32, 32))
    assert _rel(ours[0], ref[0]) < TOL and _rel(ours[1], ref[1]) < TOL


def test_geo_layer_imports_no_torch():
    """geo/ must stay usable without torch (layering rule)."""
    import ast
    from pathlib import Path

    import geot2e.geo

    banned = {"torch", "torchvision", "diffusers", "open_clip", "safetensors"}
    for path in Path(geot2e.geo.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not {n.split(".")[0] for n in names} & banned, (path.name, names)
