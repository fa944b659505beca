"""geometry_mask / prompt_map / grid helpers on real Landsat crops."""
from __future__ import annotations

import math
import warnings

import geopandas as gpd
import numpy as np
import pytest
import rasterio.features
import shapely
import xarray as xr
from conftest import _rotated
from rasterio.warp import transform_bounds

from geot2e.errors import (
    GeometryCRSError,
    GridMismatchError,
    MissingCRSError,
    NoOverlapWarning,
    ParameterError,
)
from geot2e.geo import (
    assert_same_grid,
    geometry_mask,
    gsd,
    nodata_mask,
    prompt_map,
    read_vector,
    spatial_dims,
    valid_mask,
)


def _reference(geoms, crs, da, *, all_touched=True):
    """rasterio.features.rasterize of geometries reprojected by hand with geopandas."""
    gs = gpd.GeoSeries(geoms, crs=crs).to_crs(da.rio.crs)
    return rasterio.features.rasterize(
        [(g, 1) for g in gs], out_shape=(da.rio.height, da.rio.width),
        transform=da.rio.transform(), all_touched=all_touched, fill=0, dtype="uint8",
    ).astype(bool)


def _lonlat_polygons(da):
    """Polygons in EPSG:4326 over ``da``, with vertices at arbitrary (non pixel-edge) places."""
    w, s, e, n = transform_bounds(da.rio.crs, "EPSG:4326", *da.rio.bounds())
    dx, dy = e - w, n - s

    def p(u, v):
        return (w + u * dx, s + v * dy)

    hexagon = shapely.Polygon([p(0.3 + 0.1131 * math.cos(a), 0.6 + 0.0937 * math.sin(a))
                               for a in np.linspace(0, 2 * np.pi, 7)[:-1]])
    with_hole = shapely.Polygon(
        [p(0.55, 0.15), p(0.91, 0.2), p(0.83, 0.47), p(0.52, 0.41)],
        holes=[[p(0.63, 0.25), p(0.75, 0.27), p(0.7, 0.36)]],
    )
    beyond_edge = shapely.Polygon([p(-0.2, 0.8), p(0.17, 0.77), p(0.21, 1.3), p(-0.1, 1.2)])
    thin = shapely.Polygon([p(0.1, 0.1), p(0.45, 0.123), p(0.451, 0.1271)])
    return [hexagon, with_hole, beyond_edge, thin]


# ------------------------------------------------------------------ vs rasterio
@pytest.mark.parametrize("all_touched", [True, False])
def test_lonlat_polygons_on_utm_raster(landsat_da, all_touched):
    polys = _lonlat_polygons(landsat_da)
    gdf = gpd.GeoDataFrame(geometry=polys, crs="EPSG:4326")
    mask = geometry_mask(gdf, landsat_da, all_touched=all_touched)
    ref = _reference(polys, "EPSG:4326", landsat_da, all_touched=all_touched)
    assert mask.dtype == bool and mask.dims == ("y", "x")
    assert 1000 < ref.sum() < ref.size / 2
    np.testing.assert_array_equal(mask.values, ref)


@pytest.mark.parametrize("all_touched", [True, False])
def test_utm_polygons_on_lonlat_raster(landsat_da, derived, all_touched):
    da4326 = derived("epsg4326")
    polys_utm = list(gpd.GeoSeries(_lonlat_polygons(landsat_da), crs=4326).to_crs(32621))
    real = list(read_vector(_polys_path()).geometry.buffer(150.0))  # real labelled polygons
    polys = polys_utm + real
    mask = geometry_mask(gpd.GeoSeries(polys, crs="EPSG:32621"), da4326, all_touched=all_touched)
    ref = _reference(polys, "EPSG:32621", da4326, all_touched=all_touched)
    assert ref.sum() > 1000
    np.testing.assert_array_equal(mask.values, ref)
    assert mask.rio.crs == da4326.rio.crs


def _polys_path():
    from conftest import POLYGONS

    return POLYGONS


def test_rotated_grid(landsat_da):
    rot = _rotated(landsat_da, 17.0)
    polys = _lonlat_polygons(landsat_da)
    mask = geometry_mask(gpd.GeoSeries(polys, crs=4326), rot)
    ref = _reference(polys, "EPSG:4326", rot)
    assert ref.sum() > 1000
    np.testing.assert_array_equal(mask.values, ref)
    assert mask.rio.transform() == rot.rio.transform()


def test_output_grid_and_crs(landsat_da):
    mask = geometry_mask(_lonlat_polygons(landsat_da), landsat_da, crs="EPSG:4326")
    assert mask.dims == spatial_dims(landsat_da)
    np.testing.assert_array_equal(mask.x.values, landsat_da.x.values)
    np.testing.assert_array_equal(mask.y.values, landsat_da.y.values)
    assert "spatial_ref" in mask.coords and mask.rio.crs == landsat_da.rio.crs
    assert mask.rio.transform() == landsat_da.rio.transform()
    assert_same_grid(mask, landsat_da)


# --------------------------------------------------------------------- dask
@pytest.mark.parametrize("chunks", [{"x": 100, "y": 128}, {"x": 512, "y": 37}, {"x": 64, "y": 64}])
@pytest.mark.parametrize("all_touched", [True, False])
def test_dask_equals_numpy(landsat_da, chunks, all_touched):
    polys = gpd.GeoSeries(_lonlat_polygons(landsat_da), crs=4326)
    eager = geometry_mask(polys, landsat_da, all_touched=all_touched, buffer_m=45.0)
    lazy = geometry_mask(polys, landsat_da.chunk(chunks), all_touched=all_touched, buffer_m=45.0)
    assert lazy.chunks is not None
    assert lazy.data.chunks == landsat_da.chunk(chunks).data.chunks[1:]
    np.testing.assert_array_equal(lazy.values, eager.values)


def test_dask_graph_is_deterministic(landsat_da):
    polys = _lonlat_polygons(landsat_da)
    a = geometry_mask(polys, landsat_da.chunk({"x": 128, "y": 128}), crs=4326)
    b = geometry_mask(polys, landsat_da.chunk({"x": 128, "y": 128}), crs=4326)
    assert a.data.name == b.data.name


# ------------------------------------------------------------------- buffer
def test_buffer_point_is_a_disk(landsat_da):
    t = landsat_da.rio.transform()
    centre = shapely.Point(t @ (200.5, 300.5))  # a pixel centre
    m = geometry_mask(centre, landsat_da, crs=landsat_da.rio.crs, buffer_m=100.0, all_touched=False)
    # pixel centres within 100 m of the point: (i, j) with i^2 + j^2 <= 11 -> 37 pixels
    assert int(m.sum()) == 37
    rows, cols = np.nonzero(m.values)
    assert rows.min() == 297 and rows.max() == 303 and cols.min() == 197 and cols.max() == 203


@pytest.mark.parametrize("case", ["utm", "epsg4326", "us_ft", "rotated", "epsg3857"])
def test_buffer_area_in_metres(derived, landsat_da, case):
    da = derived(case)
    t = landsat_da.rio.transform()
    point = shapely.Point(t @ (256.3, 255.8))
    radius = 600.0
    m = geometry_mask(gpd.GeoSeries([point], crs=landsat_da.rio.crs), da, buffer_m=radius,
                      all_touched=False)
    gx, gy = gsd(da, per_axis=True)
    area = float(m.sum()) * gx * gy
    assert area == pytest.approx(math.pi * radius**2, rel=0.04), case


def test_buffer_grows_and_shrinks(landsat_da):
    polys = gpd.GeoSeries(_lonlat_polygons(landsat_da), crs=4326)
    base = geometry_mask(polys, landsat_da, all_touched=False)
    grown = geometry_mask(polys, landsat_da, all_touched=False, buffer_m=60.0)
    shrunk = geometry_mask(polys, landsat_da, all_touched=False, buffer_m=-60.0)
    assert bool((grown | base).equals(grown)) and grown.sum() > base.sum()
    assert bool((shrunk & base).equals(shrunk)) and shrunk.sum() < base.sum()
    # growing by 60 m (2 pixels) reaches no further than 3 pixels from any touched pixel
    from scipy import ndimage

    touched = geometry_mask(polys, landsat_da, all_touched=True).values
    reach = ndimage.binary_dilation(touched, structure=np.ones((3, 3)), iterations=3)
    assert not (grown.values & ~reach).any()
    far = ndimage.binary_dilation(touched, structure=np.ones((3, 3)), iterations=1)
    assert (grown.values & ~far).any()


# ----------------------------------------------------- invalid, empty, errors
def test_make_valid_bowtie(landsat_da):
    t = landsat_da.rio.transform()
    a, b, c, d = (t @ (100.3, 100.7), t @ (300.2, 300.9), t @ (300.6, 100.1), t @ (100.4, 300.2))
    bowtie = shapely.Polygon([a, b, c, d])
    assert not bowtie.is_valid
    mask = geometry_mask(bowtie, landsat_da, crs=32621, all_touched=False)
    ref = rasterio.features.rasterize(
        [shapely.make_valid(bowtie)], out_shape=(512, 512), transform=t).astype(bool)
    np.testing.assert_array_equal(mask.values, ref)
    # both lobes are filled: about half of the 200 x 200 box
    assert 0.4 < mask.sum() / 40000 < 0.6


@pytest.mark.parametrize(
    "empty", [[], gpd.GeoDataFrame(geometry=[], crs=32621), shapely.Polygon(), [None]]
)
def test_empty_input_gives_all_false(landsat_da, empty):
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoOverlapWarning)
        mask = geometry_mask(empty, landsat_da, crs=32621)
    assert mask.shape == (512, 512) and not mask.any()


def test_no_overlap_warns(landsat_da):
    far = shapely.box(10.0, 50.0, 10.1, 50.1)  # Germany, raster in Paraguay
    with pytest.warns(NoOverlapWarning):
        mask = geometry_mask(far, landsat_da, crs="EPSG:4326")
    assert not mask.any()
    with pytest.warns(NoOverlapWarning):
        geometry_mask(far, landsat_da.chunk({"x": 256}), crs="EPSG:4326")


def test_missing_geometry_crs(landsat_da):
    t = landsat_da.rio.transform()
    poly = shapely.box(*(t @ (10.2, 20.7)), *(t @ (50.6, 80.1)))
    with pytest.raises(GeometryCRSError, match="set_crs|crs="):
        geometry_mask(gpd.GeoSeries([poly]), landsat_da)
    with pytest.raises(GeometryCRSError):
        geometry_mask(poly, landsat_da)
    ok = geometry_mask(poly, landsat_da, crs="EPSG:32621")
    assert ok.sum() > 0
    with pytest.raises(GeometryCRSError):  # conflicting CRS
        geometry_mask(gpd.GeoSeries([poly], crs=32621), landsat_da, crs="EPSG:4326")


def test_raster_without_crs(landsat_da):
    bare = landsat_da.drop_vars("spatial_ref")
    bare.attrs.pop("crs", None)
    assert bare.rio.crs is None
    with pytest.raises(MissingCRSError):
        geometry_mask(gpd.GeoSeries([shapely.box(0, 0, 1, 1)], crs=4326), bare)
    # neither has a CRS: geometries are taken in the raster's coordinates
    t = landsat_da.rio.transform()
    m = geometry_mask(shapely.box(*(t @ (10.2, 20.7)), *(t @ (50.6, 80.1))), bare, all_touched=False)
    assert int(m.sum()) == 41 * 59  # pixel centres 10.5..50.5 by 21.5..79.5


def test_inputs_path_list_geojson(landsat_da, polygons_path):
    from_path = geometry_mask(polygons_path, landsat_da)
    from_gdf = geometry_mask(gpd.read_file(polygons_path), landsat_da)
    np.testing.assert_array_equal(from_path.values, from_gdf.values)
    assert from_path.sum() > 300  # water + crop polygons lie in the crop
    geoms = list(gpd.read_file(polygons_path).geometry)
    from_list = geometry_mask(geoms, landsat_da, crs=32621)
    np.testing.assert_array_equal(from_list.values, from_gdf.values)
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(g)} for g in geoms]}
    np.testing.assert_array_equal(geometry_mask(fc, landsat_da, crs=32621).values, from_gdf.values)
    with pytest.raises(ParameterError, match="not found"):
        geometry_mask("/nonexistent/polys.gpkg", landsat_da)
    with pytest.raises(ParameterError):
        geometry_mask(landsat_da.isel(band=0) > 0, landsat_da)


# --------------------------------------------------------------- prompt map
def test_prompt_map_real_polygons(landsat_da, polygons_path):
    labels, prompts = prompt_map(gpd.read_file(polygons_path), "name", landsat_da)
    assert prompts == ["water", "crop", "tree", "developed"]
    assert labels.dtype == np.int32 and labels.dims == ("y", "x")
    counts = {int(k): int(v) for k, v in zip(*np.unique(labels.values, return_counts=True))}
    assert set(counts) == {0, 1, 2}  # tree and developed lie outside this crop
    gdf = gpd.read_file(polygons_path)
    water = geometry_mask(gdf[gdf.name == "water"], landsat_da)
    np.testing.assert_array_equal(labels.values == 1, water.values)


def test_prompt_map_overlap_later_wins_and_dask(landsat_da):
    t = landsat_da.rio.transform()
    a = shapely.box(*(t @ (10.3, 200.6)), *(t @ (200.2, 10.4)))
    b = shapely.box(*(t @ (100.1, 300.3)), *(t @ (300.7, 100.2)))
    c = shapely.box(*(t @ (400.4, 450.5)), *(t @ (450.6, 400.3)))
    gdf = gpd.GeoDataFrame({"text": ["river", "forest", None], "geometry": [a, b, c]}, crs=32621)
    labels, prompts = prompt_map(gdf, "text", landsat_da, all_touched=False)
    assert prompts == ["river", "forest", ""]
    assert labels.values[150, 150] == 2  # inside both a and b: b (later) wins
    assert labels.values[50, 50] == 1 and labels.values[425, 425] == 3 and labels.values[5, 500] == 0
    # same prompt twice shares a label
    gdf2 = gpd.GeoDataFrame({"text": ["river", "forest", "river"], "geometry": [a, b, c]}, crs=32621)
    labels2, prompts2 = prompt_map(gdf2, "text", landsat_da.chunk({"x": 100, "y": 100}),
                                   all_touched=False)
    assert prompts2 == ["river", "forest"]
    assert labels2.chunks is not None
    expected = labels.values.copy()
    expected[expected == 3] = 1
    np.testing.assert_array_equal(labels2.values, expected)
    with pytest.raises(ParameterError, match="column"):
        prompt_map(gdf, "caption", landsat_da)


# ------------------------------------------------------------- grid helpers
def test_nodata_and_valid_mask(landsat_da, derived):
    nd = nodata_mask(landsat_da)
    assert nd.dims == ("y", "x") and nd.dtype == bool
    expected = (landsat_da.values == 0).any(axis=0)
    np.testing.assert_array_equal(nd.values, expected)
    assert 0.01 < expected.mean() < 0.05  # the crop holds part of the scene edge
    np.testing.assert_array_equal(valid_mask(landsat_da).values, ~expected)
    np.testing.assert_array_equal(nodata_mask(derived("float_nan")).values, expected)
    lazy = nodata_mask(landsat_da.chunk({"x": 128}))
    assert lazy.chunks is not None
    np.testing.assert_array_equal(lazy.values, expected)
    no_nd = landsat_da.copy()
    no_nd.attrs.pop("_FillValue")
    assert not nodata_mask(no_nd).any()


def test_nodata_from_masked_open(data_dir):
    import rioxarray

    da = rioxarray.open_rasterio(data_dir / "landsat_224078_rgb_crop.tif", masked=True)
    raw = rioxarray.open_rasterio(data_dir / "landsat_224078_rgb_crop.tif")
    np.testing.assert_array_equal(nodata_mask(da).values, (raw.values == 0).any(axis=0))


def test_assert_same_grid(landsat_da, derived):
    assert_same_grid(landsat_da, landsat_da.isel(band=0))
    with pytest.raises(GridMismatchError, match="reproject_match"):
        assert_same_grid(landsat_da, landsat_da.isel(x=slice(1, None)))
    shifted = landsat_da.assign_coords(x=landsat_da.x + 30.0)
    with pytest.raises(GridMismatchError, match="reproject_match"):
        assert_same_grid(landsat_da, shifted)
    other_crs = landsat_da.rio.write_crs("EPSG:32721")
    with pytest.raises(GridMismatchError, match="CRS"):
        assert_same_grid(landsat_da, other_crs)
    tiny = landsat_da.assign_coords(x=landsat_da.x + 1e-9)
    assert_same_grid(landsat_da, tiny)
    with pytest.raises(GridMismatchError):
        assert_same_grid(landsat_da, derived("rotated"))


def test_spatial_dims():
    da = xr.DataArray(np.zeros((2, 3, 4)), dims=("band", "lat", "lon"))
    assert spatial_dims(da) == ("lat", "lon")


def test_huge_lonlat_polygons_are_clipped_before_reprojection(landsat_da):
    """A hemisphere in EPSG:4326 does not survive vertex-wise reprojection to UTM unless
    clipped near the raster first."""
    import pyproj

    world = shapely.box(-180, -89.9, 180, 89.9)
    assert geometry_mask(world, landsat_da, crs=4326).all()
    w, s, e, n = transform_bounds(landsat_da.rio.crs, "EPSG:4326", *landsat_da.rio.bounds())
    lon_cut = w + 0.37 * (e - w)
    west = shapely.box(-180, -89.9, lon_cut, 89.9)
    m = geometry_mask(west, landsat_da, crs=4326, all_touched=False).values
    xx, yy = np.meshgrid(landsat_da.x.values, landsat_da.y.values)
    lon, _ = pyproj.Transformer.from_crs(32621, 4326, always_xy=True).transform(xx, yy)
    expected = lon < lon_cut
    assert 0.2 < expected.mean() < 0.6
    assert (m == expected).mean() > 0.995
