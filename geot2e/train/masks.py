"""Random editing masks for training: cloud-like blobs, brush strokes, rectangles,
outpainting edge bands and full masks (text-to-image). 1 = synthesize."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["random_mask", "cloud_blobs", "brush_strokes", "rectangle", "edge_band", "MASK_KINDS"]

MASK_KINDS = ("clouds", "brush", "rectangle", "edge", "full")


def cloud_blobs(rng: np.random.Generator, h: int, w: int, *, coverage: float | None = None) -> np.ndarray:
    cov = rng.uniform(0.1, 0.6) if coverage is None else coverage
    sigma = rng.uniform(0.04, 0.15) * max(h, w)
    field = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma, mode="wrap")
    thr = np.quantile(field, 1 - cov)
    return field > thr


def brush_strokes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.integers(1, 5)):
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        width = rng.uniform(0.03, 0.12) * max(h, w)
        for _ in range(rng.integers(3, 9)):
            ang = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(0.1, 0.35) * max(h, w)
            for s in np.linspace(0, 1, 8):
                cy, cx = y + s * length * np.sin(ang), x + s * length * np.cos(ang)
                m |= (yy - cy) ** 2 + (xx - cx) ** 2 < width ** 2
            y, x = np.clip(y + length * np.sin(ang), 0, h), np.clip(x + length * np.cos(ang), 0, w)
    return m


def rectangle(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    rh, rw = int(rng.uniform(0.2, 0.7) * h), int(rng.uniform(0.2, 0.7) * w)
    y0, x0 = rng.integers(0, h - rh + 1), rng.integers(0, w - rw + 1)
    m[y0:y0 + rh, x0:x0 + rw] = True
    return m


def edge_band(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    side = rng.integers(0, 4)
    frac = rng.uniform(0.2, 0.6)
    if side == 0:
        m[: int(frac * h)] = True
    elif side == 1:
        m[h - int(frac * h):] = True
    elif side == 2:
        m[:, : int(frac * w)] = True
    else:
        m[:, w - int(frac * w):] = True
    return m


def random_mask(rng: np.random.Generator, h: int, w: int, *,
                weights: dict[str, float] | None = None) -> np.ndarray:
    """One random mask of the kinds above, drawn with ``weights`` (defaults favour clouds)."""
    weights = weights or {"clouds": 0.45, "brush": 0.15, "rectangle": 0.15, "edge": 0.15, "full": 0.10}
    kinds = list(weights)
    p = np.array([weights[k] for k in kinds], float)
    kind = kinds[rng.choice(len(kinds), p=p / p.sum())]
    if kind == "clouds":
        m = cloud_blobs(rng, h, w)
    elif kind == "brush":
        m = brush_strokes(rng, h, w)
    elif kind == "rectangle":
        m = rectangle(rng, h, w)
    elif kind == "edge":
        m = edge_band(rng, h, w)
    else:
        m = np.ones((h, w), bool)
    if not m.any():
        m = rectangle(rng, h, w)
    return m
