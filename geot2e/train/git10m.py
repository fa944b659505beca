"""Reader for Git-10M-format parquet files (Text2Earth's global image-text dataset).

Each row holds an encoded image (PNG/JPEG bytes, or a Hugging Face ``{"bytes", "path"}``
struct), a caption, the ground sample distance ``resolution`` in metres (may be null) and
``Google_location``, the Google Maps zoom level ℓ of the image. The GSD of a row is
``resolution`` when present, else ``2 ** (17 - ℓ)`` metres (the Google zoom level: ℓ = 17 − log2 GSD),
else unknown (NaN → the model's null resolution).

:class:`Git10MDataset` samples rows with replacement, crops a random square (at least
``min_crop`` of the short side), area-averages it to the tile size (the GSD scales with the
crop) and applies flips and 90° rotations, exactly like :class:`~geot2e.train.TileDataset`;
it has the same ``sample(rng)``/``batch(rng, n)`` interface, so the training loops take it
as it is, and :class:`MixedDataset` mixes it with raster tiles.

Row groups are read on demand (a small LRU cache), so shards of any size can be used.
"""
from __future__ import annotations

import io
import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ParameterError

__all__ = ["Git10MDataset", "MixedDataset", "gsd_from_row", "decode_image"]

LEVEL_GSD_REF = 17  # ℓ = 17 − log2(GSD): level 17 ≙ 1 m


def gsd_from_row(resolution, level) -> float:
    """GSD in metres from a row's ``resolution`` (metres) or Google level (``2**(17-ℓ)``);
    NaN when neither is known (level 0 or null means unknown)."""
    def _num(v):
        if v is None:
            return None
        try:
            f = float(str(v).strip().lower().removeprefix("level").strip()) if isinstance(v, str) else float(v)
        except ValueError:
            return None
        return None if not math.isfinite(f) else f

    r = _num(resolution)
    if r is not None and r > 0:
        return r
    lv = _num(level)
    if lv is not None and lv > 0:
        return float(2.0 ** (LEVEL_GSD_REF - lv))
    return float("nan")


def decode_image(value, bands: int = 3) -> np.ndarray:
    """Encoded image bytes (or ``{"bytes": ...}``) → (bands, H, W) float32 in [0, 1]."""
    from PIL import Image

    if isinstance(value, dict):
        value = value.get("bytes")
    if value is None:
        raise ParameterError("a Git-10M row has no image bytes")
    with Image.open(io.BytesIO(bytes(value))) as im:
        if bands != 3:
            raise ParameterError(f"Git-10M images are RGB; a model with {bands} bands cannot train on them "
                                 "(use a 3-band model, or raster sources for other band sets).")
        im = im.convert("RGB")
        a = np.asarray(im, dtype=np.float32) / 255.0
    if a.ndim == 2:
        a = a[None]
    else:
        a = a.transpose(2, 0, 1)
    return np.ascontiguousarray(a)


class Git10MDataset(torch.utils.data.IterableDataset):
    """Training samples from Git-10M-format parquet files.

    Parameters
    ----------
    paths : one parquet file, a folder of them, or a list of files.
    size : output tile side in pixels.
    bands : band count of the model (3 for RGB).
    min_crop : smallest crop side as a fraction of the image's short side (1.0 = whole image).
    flips : random flips and 90° rotations.
    min_texture : optional quality filter (mean gradient of the [0,1] brightness), as in
        the fine-tuning stage of :class:`TileDataset`.
    image_column, caption_column, resolution_column, level_column : column names.
    cache_row_groups : how many decoded row groups to keep in memory.
    weight : sampling weight when mixed with other datasets (:class:`MixedDataset`).
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], *, size: int = 64, bands: int = 3,
                 min_crop: float = 0.7, flips: bool = True, seed: int = 0, min_texture: float | None = None,
                 image_column: str = "image", caption_column: str = "caption",
                 resolution_column: str = "resolution", level_column: str = "Google_location",
                 cache_row_groups: int = 4, weight: float = 1.0):
        super().__init__()
        import pyarrow.parquet as pq

        self.files = _expand(paths)
        self.size, self.bands = int(size), int(bands)
        if self.bands != 3:
            raise ParameterError(f"Git-10M images are RGB; a model with {bands} bands cannot train on them.")
        if not 0 < float(min_crop) <= 1:
            raise ParameterError(f"min_crop must lie in (0, 1], got {min_crop!r}")
        self.min_crop, self.flips, self.seed = float(min_crop), bool(flips), int(seed)
        self.min_texture = min_texture
        self.weight = float(weight)
        self.cols = {"image": image_column, "caption": caption_column, "resolution": resolution_column,
                     "level": level_column}
        self._index: list[tuple[int, int, int]] = []   # (file, row group, rows)
        for fi, f in enumerate(self.files):
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            for need in ("image", "caption"):
                if self.cols[need] not in names:
                    raise ParameterError(f"{f}: no column {self.cols[need]!r} (columns: {names}); "
                                         f"pass {need}_column= to name it.")
            for rg in range(pf.num_row_groups):
                n = pf.metadata.row_group(rg).num_rows
                if n:
                    self._index.append((fi, rg, n))
        if not self._index:
            raise ParameterError(f"no rows in {[str(f) for f in self.files]}")
        self._counts = np.array([n for *_, n in self._index], np.int64)
        self._starts = np.concatenate([[0], np.cumsum(self._counts)])
        self._cache: OrderedDict[tuple[int, int], dict] = OrderedDict()
        self._cache_n = max(1, int(cache_row_groups))

    def __len__(self) -> int:
        return int(self._starts[-1])

    # ------------------------------------------------------------------ rows
    def _group(self, gi: int) -> dict:
        import pyarrow.parquet as pq

        fi, rg, _ = self._index[gi]
        key = (fi, rg)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        pf = pq.ParquetFile(self.files[fi])
        names = pf.schema_arrow.names
        cols = [c for c in self.cols.values() if c in names]
        t = pf.read_row_group(rg, columns=cols)
        d = {k: (t.column(c).to_pylist() if c in cols else [None] * t.num_rows) for k, c in self.cols.items()}
        self._cache[key] = d
        while len(self._cache) > self._cache_n:
            self._cache.popitem(last=False)
        return d

    def row(self, i: int) -> dict:
        """Row ``i`` decoded: ``{"image": (C,H,W) in [0,1], "caption": str, "gsd": float}``."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        gi = int(np.searchsorted(self._starts, i, side="right") - 1)
        d = self._group(gi)
        j = i - int(self._starts[gi])
        cap = d["caption"][j]
        return {"image": decode_image(d["image"][j], self.bands), "caption": "" if cap is None else str(cap),
                "gsd": gsd_from_row(d["resolution"][j], d["level"][j])}

    # ------------------------------------------------------------------ samples
    def sample(self, rng: np.random.Generator, size: int | None = None) -> dict:
        out = self.size if size is None else int(size)
        for _ in range(100):
            r = self.row(int(rng.integers(0, len(self))))
            img, gsd = r["image"], r["gsd"]
            _, h, w = img.shape
            short = min(h, w)
            side = int(round(short * rng.uniform(self.min_crop, 1.0))) if self.min_crop < 1 else short
            side = max(1, min(short, side))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            win = torch.from_numpy(np.ascontiguousarray(img[:, y:y + side, x:x + side]))[None]
            if side > out:
                win = F.interpolate(win, size=(out, out), mode="area")
            elif side < out:  # upsampling adds no detail; the GSD still follows the pixel size
                win = F.interpolate(win, size=(out, out), mode="bilinear", align_corners=False)
            a = win[0].numpy()
            if self.min_texture is not None:
                gy, gx = np.gradient(a[:3].mean(0))
                if float(np.hypot(gx, gy).mean()) < self.min_texture:
                    continue
            if self.flips:
                a = np.rot90(a, int(rng.integers(0, 4)), axes=(1, 2))
                if rng.random() < 0.5:
                    a = a[:, :, ::-1]
            a = np.ascontiguousarray(a, dtype=np.float32)
            g = gsd * side / out if math.isfinite(gsd) else float("nan")
            return {"image": torch.from_numpy(a * 2 - 1), "gsd": float(g), "caption": r["caption"]}
        raise ParameterError("no Git-10M row passed the quality filter in 100 tries; lower min_texture.")

    def batch(self, rng: np.random.Generator, n: int, *, size: int | None = None) -> dict:
        items = [self.sample(rng, size) for _ in range(n)]
        return _collate(items)

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info is not None else 0])
        while True:
            yield self.sample(rng)


class MixedDataset(torch.utils.data.IterableDataset):
    """Draws each sample from one of several datasets (``sample(rng, size)``), chosen by weight."""

    def __init__(self, datasets: Sequence, weights: Sequence[float] | None = None, *, seed: int = 0):
        super().__init__()
        self.datasets = list(datasets)
        if not self.datasets:
            raise ParameterError("MixedDataset needs at least one dataset")
        w = np.array(weights if weights is not None else [getattr(d, "weight", 1.0) for d in self.datasets], float)
        if len(w) != len(self.datasets) or (w < 0).any() or w.sum() <= 0:
            raise ParameterError(f"bad mixture weights {list(w)}")
        self.p = w / w.sum()
        self.size = self.datasets[0].size
        self.seed = int(seed)

    def sample(self, rng: np.random.Generator, size: int | None = None) -> dict:
        return self.datasets[int(rng.choice(len(self.datasets), p=self.p))].sample(rng, size)

    def batch(self, rng: np.random.Generator, n: int, *, size: int | None = None) -> dict:
        return _collate([self.sample(rng, size) for _ in range(n)])

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info is not None else 0])
        while True:
            yield self.sample(rng)


def _collate(items: list[dict]) -> dict:
    return {"image": torch.stack([i["image"] for i in items]),
            "gsd": torch.tensor([i["gsd"] for i in items], dtype=torch.float32),
            "caption": [i["caption"] for i in items]}


def _expand(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in (".parquet", ".pq")))
        elif p.is_file():
            out.append(p)
        else:
            raise ParameterError(f"Git-10M parquet {p} not found.")
    if not out:
        raise ParameterError(f"no parquet files in {[str(p) for p in paths]}")
    return out
