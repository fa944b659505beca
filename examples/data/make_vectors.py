"""Recreate the small vector files used by the examples (committed next to this script).

    python examples/data/make_vectors.py

- ``clouds_224078.gpkg``: cloud and cloud-shadow polygons (column ``kind``) over the
  Landsat 8 224/078 scene of 2020-05-18, in EPSG:4326 (the examples show that they are
  reprojected to the raster's UTM zone). That acquisition is cloud-free: the polygons are
  *simulated* clouds with realistic shapes (a smooth random outline, a shadow offset
  away from the sun), so the real ground under them is known and a fill can be
  compared with it.
- ``edits_224078.gpkg``: three polygons with a ``prompt`` column (a prompt map) over
  fields of the committed test crop, in the scene's CRS (EPSG:32621).

Shapes are drawn in scene pixel coordinates (row, column) of
``LC08_L1TP_224078_20200518_20200518_01_RT.TIF`` (30 m, origin 717345 E, -2776995 N).
"""
from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
from shapely.geometry import Polygon

HERE = Path(__file__).resolve().parent
CRS = "EPSG:32621"
X0, Y0, RES = 717345.0, -2776995.0, 30.0

#: (row, col, radius in pixels) of each simulated cloud, in scene pixels
CLOUDS = [(520, 860, 26), (630, 980, 20), (760, 560, 34), (1000, 700, 40), (1200, 1100, 36), (880, 1250, 30)]
#: shadow offset in pixels (rows down, cols left: the sun is in the north-east) and scale
SHADOW_OFFSET, SHADOW_SCALE = (14.0, -12.0), 0.85

#: prompt-map polygons: corners in scene pixels (row, col) and the prompt
EDITS = [
    ([(490, 780), (488, 830), (530, 836), (534, 784)], "a lake with dark blue water"),
    ([(590, 920), (586, 985), (632, 990), (636, 922)], "dense green forest"),
    ([(620, 790), (618, 836), (660, 838), (662, 792)], "a harvested field of bare soil"),
]


def to_xy(row: float, col: float) -> tuple[float, float]:
    return X0 + col * RES, Y0 - row * RES


def blob(row: float, col: float, radius: float, rng: np.random.Generator, n: int = 64) -> Polygon:
    """A cloud-like outline: a circle whose radius varies smoothly with the angle."""
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, 7):
        r += rng.uniform(0.03, 0.18) / (k - 1) ** 0.5 * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    rows = row + radius * r * np.sin(theta)
    cols = col + radius * r * np.cos(theta)
    return Polygon([to_xy(a, b) for a, b in zip(rows, cols)])


def main() -> None:
    rng = np.random.default_rng(224078)
    geoms, kinds = [], []
    for row, col, radius in CLOUDS:
        state = rng.bit_generator.state
        geoms.append(blob(row, col, radius, rng))
        kinds.append("cloud")
        rng.bit_generator.state = state  # the shadow has the cloud's shape
        dr, dc = SHADOW_OFFSET
        geoms.append(blob(row + dr * radius / 20, col + dc * radius / 20, radius * SHADOW_SCALE, rng))
        kinds.append("shadow")
    clouds = gpd.GeoDataFrame({"kind": kinds}, geometry=geoms, crs=CRS).to_crs("EPSG:4326")
    out = HERE / "clouds_224078.gpkg"
    out.unlink(missing_ok=True)
    clouds.to_file(out, driver="GPKG", layer="clouds")
    print(f"{out.name}: {len(clouds)} polygons, {clouds.crs}")

    edits = gpd.GeoDataFrame(
        {"prompt": [p for _, p in EDITS]},
        geometry=[Polygon([to_xy(r, c) for r, c in corners]) for corners, _ in EDITS], crs=CRS)
    out = HERE / "edits_224078.gpkg"
    out.unlink(missing_ok=True)
    edits.to_file(out, driver="GPKG", layer="edits")
    print(f"{out.name}: {len(edits)} polygons, {edits.crs}")


if __name__ == "__main__":
    main()
