"""Caption tables (footprint geometry in any CRS → text) and their use by the tile dataset."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Point, box

from geot2e.errors import GeometryCRSError, ParameterError
from geot2e.train.caption_table import CaptionTable, window_footprint
from geot2e.train.dataset import TileDataset, load_raster_source

SIZE = 32


@pytest.fixture(scope="module")
def src(data_dir):
    return load_raster_source(data_dir / "landsat_224078_rgb_crop.tif", nodata=0)


@pytest.fixture(scope="module")
def halves(src):
    """Two polygons splitting the crop's footprint into a west and an east half (EPSG:32621)."""
    t = src.transform
    x0, y1 = t @ (0, 0)
    x1, y0 = t @ (512, 512)
    xm = (x0 + x1) / 2
    return gpd.GeoDataFrame({"caption": ["west half, irrigated fields", "east half, city and river"]},
                            geometry=[box(x0, y0, xm, y1), box(xm, y0, x1, y1)], crs="EPSG:32621")


def test_window_footprint_matches_raster_bounds(src, landsat_da):
    fp = window_footprint(src.transform, 0, 0, 512, 512)
    assert fp.bounds == pytest.approx(tuple(landsat_da.rio.bounds()))
    sub = window_footprint(src.transform, 10, 20, 5, 7)
    assert sub.area == pytest.approx(5 * 7 * 30.0 * 30.0)


@pytest.mark.parametrize("fmt", ["gpkg", "geojson", "geoparquet", "csv_utm", "csv_4326", "parquet_wkb_3857"])
def test_from_file_formats_and_crs(tmp_path, src, halves, fmt):
    if fmt == "gpkg":
        p = tmp_path / "t.gpkg"
        halves.to_file(p, driver="GPKG")
        table = CaptionTable.from_file(p)
    elif fmt == "geojson":
        p = tmp_path / "t.geojson"
        halves.to_crs("EPSG:4326").to_file(p, driver="GeoJSON")
        table = CaptionTable.from_file(p)
    elif fmt == "geoparquet":
        p = tmp_path / "t.parquet"
        halves.to_crs("EPSG:3857").to_parquet(p)
        table = CaptionTable.from_file(p)
    elif fmt == "csv_utm":
        p = tmp_path / "t.csv"
        pd.DataFrame({"text": halves.caption, "wkt": halves.geometry.to_wkt()}).to_csv(p, index=False)
        table = CaptionTable.from_file(p, caption_column="text", crs="EPSG:32621")
    elif fmt == "csv_4326":
        p = tmp_path / "t.csv"
        g = halves.to_crs("EPSG:4326")
        pd.DataFrame({"caption": g.caption, "footprint": g.geometry.to_wkt(), "crs": "EPSG:4326"}).to_csv(p, index=False)
        table = CaptionTable.from_file(p)                    # CRS from the csv's crs column
    else:
        p = tmp_path / "t.parquet"
        g = halves.to_crs("EPSG:3857")
        pd.DataFrame({"caption": g.caption, "wkb": g.geometry.to_wkb()}).to_parquet(p)
        table = CaptionTable.from_file(p, crs="EPSG:3857")
    assert len(table) == 2
    # windows well inside each half, queried in the raster's own CRS
    assert table.caption_for_window(src.transform, src.crs, 200, 40, 64) == "west half, irrigated fields"
    assert table.caption_for_window(src.transform, src.crs, 200, 400, 64) == "east half, city and river"
    # a window straddling the border takes the polygon it overlaps most
    assert table.caption_for_window(src.transform, src.crs, 0, 250, 40) == "east half, city and river"
    assert table.caption_for_window(src.transform, src.crs, 0, 226, 40) == "west half, irrigated fields"
    # outside the table's footprints: no caption
    assert table.caption_for_window(src.transform, src.crs, 2000, 2000, 64) is None


def test_errors_name_the_fix(tmp_path, halves):
    p = tmp_path / "t.csv"
    pd.DataFrame({"caption": halves.caption, "wkt": halves.geometry.to_wkt()}).to_csv(p, index=False)
    with pytest.raises(GeometryCRSError, match="crs="):
        CaptionTable.from_file(p)
    with pytest.raises(ParameterError, match="caption_column"):
        CaptionTable.from_file(p, caption_column="label", crs="EPSG:32621")
    q = tmp_path / "t.gpkg"
    halves.to_file(q, driver="GPKG")
    with pytest.raises(ParameterError, match="only for files without a CRS"):
        CaptionTable.from_file(q, crs="EPSG:4326")
    with pytest.raises(ParameterError, match="not found"):
        CaptionTable.from_file(tmp_path / "missing.gpkg")


def test_min_overlap_points_and_empty_rows(src):
    t = src.transform
    cx, cy = t @ (256, 256)
    big = box(cx - 2000, cy - 2000, cx + 2000, cy + 2000)
    table = CaptionTable([Point(cx, cy), big, None, box(0, 0, 1, 1)], ["a landmark", "a district", "x", ""],
                         "EPSG:32621", min_overlap=0.5)
    assert len(table) == 2                                  # null geometry and empty caption dropped
    # window centred on the point and inside the polygon: polygons win over points
    assert table.caption_for_window(t, src.crs, 240, 240, 32) == "a district"
    # a window overlapping the polygon by < 50 %: only the point... which is not in it -> None
    assert table.caption_for_window(t, src.crs, 256 - 40 - 64, 200, 64) is None
    # the point alone captions the windows it falls in
    only_pt = CaptionTable([Point(cx, cy)], ["a landmark"], "EPSG:32621")
    assert only_pt.caption_for_window(t, src.crs, 250, 250, 16) == "a landmark"
    assert only_pt.caption_for_window(t, src.crs, 0, 0, 16) is None


def test_dataset_uses_table_and_falls_back(src, halves, polygons_path):
    west_only = CaptionTable(halves.geometry.values[:1], ["west half, irrigated fields"], "EPSG:32621",
                             min_overlap=0.99)
    ds = TileDataset([src], size=SIZE, gsd_max=90.0, seed=0, caption_table=west_only)
    rng = np.random.default_rng(0)
    caps = [ds.sample(rng)["caption"] for _ in range(40)]
    n_table = sum(c == "west half, irrigated fields" for c in caps)
    n_auto = sum(c.startswith("satellite image") for c in caps)
    assert n_table + n_auto == len(caps) and n_table >= 5 and n_auto >= 5
    # the same rng stream picks the same windows with or without a table (captions aside)
    a = TileDataset([src], size=SIZE, gsd_max=90.0, seed=0).sample(np.random.default_rng(3))
    b = TileDataset([src], size=SIZE, gsd_max=90.0, seed=0, caption_table=west_only).sample(np.random.default_rng(3))
    assert np.array_equal(a["image"].numpy(), b["image"].numpy()) and a["gsd"] == b["gsd"]
    # the committed labelled polygons work as a table as they are (column "name")
    named = CaptionTable.from_file(polygons_path, caption_column="name")
    assert len(named) == 4 and named.crs.to_epsg() == 32621


def test_dataset_requires_georeferenced_sources(src, halves):
    from geot2e.train.dataset import RasterSource

    bare = RasterSource(data=src.data, valid=src.valid, gsd=30.0, name="no-georef")
    table = CaptionTable(halves.geometry.values, list(halves.caption), "EPSG:32621")
    with pytest.raises(ParameterError, match="no-georef"):
        TileDataset([bare], size=SIZE, caption_table=table)
