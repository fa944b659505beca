"""Random training tiles over real rasters, resampled to random ground sample distances.

Each sample is a window of a source raster, area-averaged to a random target GSD at or
above the native one, so the model is conditioned on the GSD of the pixels it sees
(docs/training.md, "Data"). Flips and 90° rotations; only nodata-free windows are used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .captions import caption_tile, measure_content

__all__ = ["RasterSource", "TileDataset", "load_raster_source"]


@dataclass
class RasterSource:
    """An in-memory raster to sample from (band, y, x) with its native GSD in metres."""

    data: np.ndarray              # (C, H, W) float32, raw units
    valid: np.ndarray             # (H, W) bool
    gsd: float
    name: str = "raster"
    nir_band: int | None = None   # index into data of a NIR band (for captions only)
    rgb_bands: tuple[int, int, int] = (0, 1, 2)
    weight: float = 1.0
    low: np.ndarray = field(default=None)   # scene-level percentiles per band
    high: np.ndarray = field(default=None)
    transform: Any = None         # affine.Affine pixel -> source CRS (optional; caption tables need it)
    crs: Any = None               # the source CRS (rasterio/pyproj CRS or WKT/EPSG string; optional)
    gsd_rows: Any = None          # (H,) GSD of each row (geographic grids); None: ``gsd`` everywhere

    def __post_init__(self):
        if self.data.shape[0] < 3 and tuple(self.rgb_bands) == (0, 1, 2):
            self.rgb_bands = (0, 0, 0)    # one or two bands: captions see the first as a grey image
        if self.low is None or self.high is None:
            sub = self.data[:, self.valid] if self.valid.any() else self.data.reshape(self.data.shape[0], -1)
            step = max(1, sub.shape[1] // 2_000_000)
            sub = sub[:, ::step]
            self.low = np.percentile(sub, 0.5, axis=1).astype(np.float32)
            self.high = np.percentile(sub, 99.5, axis=1).astype(np.float32)
        # integral image of invalid pixels → O(1) window validity checks
        inv = (~self.valid).astype(np.int64)
        self._ii = np.pad(inv.cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def invalid_count(self, y: int, x: int, n: int) -> int:
        ii = self._ii
        return int(ii[y + n, x + n] - ii[y, x + n] - ii[y + n, x] + ii[y, x])

    def area_table(self) -> np.ndarray:
        """The summed-area table of ``data`` ((C, H+1, W+1) float64, non-finite values as 0;
        built once, 8 bytes a value)."""
        sat = getattr(self, "_sat", None)
        if sat is None:
            sat = np.zeros((self.data.shape[0], self.data.shape[1] + 1, self.data.shape[2] + 1), np.float64)
            finite = np.isfinite(self.data)   # NaN nodata would poison every sum below and right of it;
            data = self.data if finite.all() else np.where(finite, self.data, 0)   # windows never hold it
            np.cumsum(data, axis=1, dtype=np.float64, out=sat[:, 1:, 1:])
            np.cumsum(sat[:, 1:, 1:], axis=2, out=sat[:, 1:, 1:])
            self._sat = sat
        return sat

    def area_mean(self, y: int, x: int, n: int, out: int) -> np.ndarray:
        """The ``n × n`` window at (y, x) area-averaged to ``out × out`` (float32), as
        ``F.interpolate(mode="area")`` does (output cell i spans floor(i·n/out) to
        ceil((i+1)·n/out)), from the summed-area table: 4 lookups per output value whatever
        the window's size, where averaging the window itself reads all n² pixels."""
        sat = self.area_table()
        i = np.arange(out)
        lo, hi = (i * n) // out, -((-(i + 1) * n) // out)
        y0, y1, x0, x1 = (y + lo)[:, None], (y + hi)[:, None], (x + lo)[None, :], (x + hi)[None, :]
        total = sat[:, y1, x1] - sat[:, y0, x1] - sat[:, y1, x0] + sat[:, y0, x0]
        return (total / ((hi - lo)[:, None] * (hi - lo)[None, :])).astype(np.float32)


def load_raster_source(path: str | Path, *, bands: Sequence[int] | None = None, nodata: float | None = None,
                       name: str | None = None, nir_band: int | None = None, weight: float = 1.0,
                       gsd: float | None = None) -> RasterSource:
    """Read a raster file (1-based ``bands`` in the order the model wants) into a RasterSource.

    The GSD defaults to the file's ground sample distance (geot2e.geo when available)."""
    import rasterio

    with rasterio.open(path) as src:
        idx = list(bands) if bands is not None else list(range(1, src.count + 1))
        data = src.read(idx).astype(np.float32)
        nd = nodata if nodata is not None else src.nodata
        if gsd is None:
            try:
                from ..geo import gsd_from_transform

                gsd = float(gsd_from_transform(src.transform, src.crs, (src.height, src.width)))
            except Exception:  # noqa: BLE001 - geo layer may be unavailable; fall back to grid size
                gsd = float(math.sqrt(abs(src.res[0] * src.res[1])))
        transform, crs = src.transform, src.crs
    valid = np.isfinite(data).all(0)
    if nd is not None:
        valid &= ~(data == nd).any(0)
    return RasterSource(data=data, valid=valid, gsd=gsd, name=name or Path(path).stem, nir_band=nir_band,
                        weight=weight, transform=transform, crs=crs)


class TileDataset(torch.utils.data.IterableDataset):
    """Infinite stream of dicts ``{"image": (C,size,size) in [-1,1], "gsd": float, "caption": str}``.

    Parameters
    ----------
    sources : rasters to sample from (chosen by their ``weight``).
    size : output tile side in pixels.
    gsd_max : largest target GSD in metres (log-uniform between native and this).
    window_stretch : probability of scaling by the window's own percentiles instead of the
        scene's (the engine scales by the whole input, which may be a small crop).
    stretch_word : optional words appended to the automatic caption of windows scaled by their
        own percentiles (e.g. ``"contrast stretched"``), so that the look of a stretched window
        (vegetation next to water turns cyan-green) is tied to those words and not to the
        content words. None (default) captions both scalings alike.
    caption_fn : callable(rgb01, nir01, gsd) -> str; defaults to the automatic captioner.
    class_balance : 0 (default) samples windows as the data come. β > 0 rebalances the content
        classes (the dominant one of water / vegetation / bare soil / built-up, by the captioner's
        rules): a candidate window of class c is kept with probability ``(n_min / n_c) ** β``,
        where ``n_c`` counts the candidates of class c seen so far and ``n_min`` the rarest class
        seen. β = 1 draws every class present equally often, β = 0.5 in proportion to the square
        root of its frequency. Rare classes (bare soil, built-up in the default scene) then carry
        enough captions for their prompts to be learnt; the window stream still follows ``seed``.
    caption_table : optional :class:`~geot2e.train.caption_table.CaptionTable` (footprint → text).
        A window whose footprint (in the source's CRS) intersects one of its geometries takes
        that geometry's caption (the largest overlap wins); other windows fall back to
        ``caption_fn``. The sources need ``transform`` and ``crs`` (``load_raster_source`` sets them).
    """

    def __init__(self, sources: Sequence[RasterSource], *, size: int = 64, gsd_max: float = 500.0,
                 bands: int = 3, window_stretch: float = 0.5, seed: int = 0, caption_fn=None,
                 min_texture: float | None = None, caption_table=None, class_balance: float = 0.0,
                 stretch_word: str | None = None):
        super().__init__()
        if not (0.0 <= float(class_balance) <= 1.0):
            from ..errors import ParameterError

            raise ParameterError(f"class_balance={class_balance!r} must lie in [0, 1] (0 = as the data come, "
                                 "1 = every content class equally often).")
        self.class_balance = float(class_balance)
        self.stretch_word = stretch_word or None
        self.class_counts: dict[str, int] = {}  # candidates seen per content class (class_balance > 0)
        self.sources = list(sources)
        for src in self.sources:   # built here, before DataLoader processes fork, so they share them
            src.area_table()
        self.size, self.gsd_max, self.bands = int(size), float(gsd_max), int(bands)
        if isinstance(window_stretch, bool) or not 0 <= float(window_stretch) <= 1:
            from ..errors import ParameterError

            raise ParameterError(f"window_stretch={window_stretch!r} must lie in [0, 1] (the share of windows scaled "
                                 "by their own percentiles; 0 = all by the scene's).")
        self.window_stretch = float(window_stretch)
        self.seed = int(seed)
        self.min_texture = min_texture
        self.caption_fn = caption_fn or (lambda rgb, nir, g: caption_tile(rgb, nir, gsd=g))
        w = np.array([s.weight for s in self.sources], float)
        self.p = w / w.sum()
        self.caption_table = caption_table
        if caption_table is not None:
            bare = [s.name for s in self.sources if s.transform is None or s.crs is None]
            if bare:
                from ..errors import ParameterError

                raise ParameterError(f"caption_table needs georeferenced sources, but {bare} have no transform/crs; "
                                     "load them with load_raster_source() or set RasterSource(transform=, crs=).")

    def sample(self, rng: np.random.Generator, size: int | None = None) -> dict:
        out_size = self.size if size is None else int(size)
        attempts = rejected = 0
        while attempts < 2000:   # cheap: a failed attempt is one lookup in the validity index
            attempts += 1
            src = self.sources[rng.choice(len(self.sources), p=self.p)]
            _, H, W = src.data.shape
            max_factor = min(self.gsd_max / src.gsd, min(H, W) / out_size)
            if attempts > 1000:   # clear areas too small for coarser windows (popcorn clouds): native pixels
                max_factor = 1.0
            factor = math.exp(rng.uniform(0, math.log(max(max_factor, 1.0))))
            n = max(out_size, int(round(out_size * factor)))
            if n > min(H, W):
                continue
            y, x = int(rng.integers(0, H - n + 1)), int(rng.integers(0, W - n + 1))
            if src.invalid_count(y, x, n):
                continue
            stretched = rng.random() < self.window_stretch
            if self.class_balance > 0 and rejected < 10_000:
                # the class decision on a nearest-neighbour preview (every ⌊n/32⌋-th pixel: 32 to
                # 63 a side for tiles over 32 px): most candidates are rejected, and scaling and
                # measuring each at full size made tile drawing, not the model, a GPU step's cost
                step = max(1, n // min(out_size, 32))
                preview = self._scaled(src, src.data[:, y:y + n:step, x:x + n:step], stretched)
                nir0 = preview[src.nir_band] if src.nir_band is not None else None
                if not self._keep(measure_content(preview[list(src.rgb_bands)], nir0).dominant(), rng):
                    rejected += 1
                    attempts -= 1  # a rebalancing rejection is not a failed (nodata) attempt
                    continue
            win = src.data[:, y:y + n, x:x + n] if n == out_size else src.area_mean(y, x, n, out_size)
            scaled = self._scaled(src, win, stretched)
            if self.min_texture is not None:
                bright = scaled[list(src.rgb_bands)].mean(0)
                gy, gx = np.gradient(bright)
                if float(np.hypot(gx, gy).mean()) < self.min_texture:
                    continue  # quality filter of the fine-tuning stage: skip featureless windows
            k = int(rng.integers(0, 4))
            scaled = np.rot90(scaled, k, axes=(1, 2))
            if rng.random() < 0.5:
                scaled = scaled[:, :, ::-1]
            scaled = np.ascontiguousarray(scaled)
            native = src.gsd if src.gsd_rows is None else float(np.mean(src.gsd_rows[y:y + n]))
            gsd = native * n / out_size
            rgb = scaled[list(src.rgb_bands)]
            nir = scaled[src.nir_band] if src.nir_band is not None else None
            caption = None
            if self.caption_table is not None:
                caption = self.caption_table.caption_for_window(src.transform, src.crs, y, x, n, n)
            if caption is None:
                caption = self.caption_fn(rgb, nir, gsd)
                if stretched and self.stretch_word:
                    caption = f"{caption}, {self.stretch_word}"
            img = scaled[: self.bands] if src.data.shape[0] >= self.bands else scaled
            return {"image": torch.from_numpy(img * 2 - 1), "gsd": float(gsd), "caption": caption}
        raise RuntimeError("could not find a nodata-free window; check the sources' nodata and sizes")

    @staticmethod
    def _scaled(src: RasterSource, win: np.ndarray, stretched: bool) -> np.ndarray:
        """``win`` scaled to [0, 1] by its own 0.5/99.5 percentiles (``stretched``) or the source's."""
        if stretched:
            lo = np.percentile(win, 0.5, axis=(1, 2))
            hi = np.percentile(win, 99.5, axis=(1, 2))
        else:
            lo, hi = src.low, src.high
        scaled = (win - lo[:, None, None]) / np.maximum(hi - lo, 1e-6)[:, None, None]
        return np.clip(scaled, 0, 1).astype(np.float32)

    def _keep(self, cls: str, rng: np.random.Generator) -> bool:
        """Count a candidate of content class ``cls``; keep it with probability (n_min / n_cls) ** β."""
        n = self.class_counts
        n[cls] = n.get(cls, 0) + 1
        p = (min(n.values()) / n[cls]) ** self.class_balance
        return bool(rng.random() < p)

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, wid])
        while True:
            yield self.sample(rng)

    def batch(self, rng: np.random.Generator, n: int, *, size: int | None = None) -> dict:
        items = [self.sample(rng, size) for _ in range(n)]
        return {"image": torch.stack([i["image"] for i in items]),
                "gsd": torch.tensor([i["gsd"] for i in items], dtype=torch.float32),
                "caption": [i["caption"] for i in items]}
