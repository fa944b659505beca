"""Automatic captions from a tile's own measurable content.

No captions come with the rasters this package trains on, so a tile is described by
fractions of water, vegetation, bare soil and built-up surface (simple spectral rules on
RGB, NDVI/NDWI when a NIR band exists), plus brightness and texture. The same rules label
real tiles in the text-control evaluation (geot2e.eval).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TileContent", "measure_content", "caption_tile", "content_class", "CONTENT_CLASSES"]

CONTENT_CLASSES = ("water", "vegetation", "bare soil", "built-up")


@dataclass
class TileContent:
    water: float
    vegetation: float
    bare: float
    built: float
    brightness: float
    texture: float

    def dominant(self) -> str:
        fr = {"water": self.water, "vegetation": self.vegetation, "bare soil": self.bare, "built-up": self.built}
        return max(fr, key=fr.get)


def measure_content(rgb: np.ndarray, nir: np.ndarray | None = None) -> TileContent:
    """rgb: (3, H, W) floats in [0, 1] (display-stretched); nir: optional (H, W) in [0, 1]."""
    r, g, b = (np.asarray(c, dtype=np.float32) for c in rgb[:3])
    eps = 1e-6
    bright = (r + g + b) / 3
    if nir is not None:
        nir = np.asarray(nir, dtype=np.float32)
        ndvi = (nir - r) / (nir + r + eps)
        ndwi = (g - nir) / (g + nir + eps)
        water = (ndwi > 0.1) & (bright < 0.5)
        veg = (ndvi > 0.3) & ~water
    else:
        exg = 2 * g - r - b  # excess green
        water = (b > r + 0.02) & (b >= g) & (bright < 0.35)
        veg = (exg > 0.03) & ~water
    sat = np.max(rgb[:3], axis=0) - np.min(rgb[:3], axis=0)
    bare = (r > b + 0.04) & ~veg & ~water
    gy, gx = np.gradient(bright)
    grad = np.hypot(gx, gy)
    built = (sat < 0.05) & (bright > 0.5) & (grad > 0.08) & ~veg & ~water
    n = float(r.size)
    return TileContent(water=float(water.sum() / n), vegetation=float(veg.sum() / n), bare=float(bare.sum() / n),
                       built=float(built.sum() / n), brightness=float(bright.mean()), texture=float(grad.mean()))


def content_class(c: TileContent) -> str:
    """The dominant content class of a tile (one of CONTENT_CLASSES)."""
    return c.dominant()


def _amount(f: float) -> str | None:
    if f >= 0.6:
        return "mostly"
    if f >= 0.25:
        return "some"
    if f >= 0.08:
        return "a little"
    return None


def caption_tile(rgb: np.ndarray, nir: np.ndarray | None = None, *, gsd: float | None = None) -> str:
    """A short English caption, e.g. ``"satellite image, mostly green vegetation, some bare soil,
    bright, smooth texture"``. ``gsd`` (metres) adds the scale ("fields", "regional view")."""
    c = measure_content(rgb, nir)
    parts = ["satellite image"]
    names = {"water": "water", "vegetation": "green vegetation", "bare": "bare soil", "built": "built-up area"}
    fr = sorted([("vegetation", c.vegetation), ("bare", c.bare), ("water", c.water), ("built", c.built)],
                key=lambda kv: -kv[1])
    for key, f in fr:
        a = _amount(f)
        if a:
            parts.append(f"{a} {names[key]}")
    if len(parts) == 1:
        parts.append("mixed land cover")
    parts.append("bright" if c.brightness > 0.55 else "dark" if c.brightness < 0.3 else "medium brightness")
    parts.append("rough texture" if c.texture > 0.1 else "smooth texture" if c.texture < 0.04 else "fine texture")
    if gsd is not None:
        parts.append("field scale" if gsd < 60 else "landscape scale" if gsd < 200 else "regional scale")
    return ", ".join(parts)
