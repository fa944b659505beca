"""Fidelity and realism of a fill, measured over the synthesized (masked) pixels only.

All metrics work in one documented common scale: the crop's reflectance values (DN) are
mapped per band by the *truth* crop's robust range, ``(x - p0.5) / (p99.5 - p0.5)`` with
the 0.5th and 99.5th percentiles of all the truth crop's pixels, so that 0..1 spans the
crop's contrast (values are not clipped). Every method of a comparison is scored in the
same scale, fitted on the same truth crop.

- :func:`psnr`: ``10 log10(1 / MSE)`` with the MSE over masked pixels and bands (peak 1).
- :func:`ssim`: the SSIM map of :func:`skimage.metrics.structural_similarity`
  (``full=True``, ``data_range=1``, 7x7 uniform window, bands as channels), averaged over
  masked pixels and bands.
- :func:`texture_ratio`: std of the Laplacian of the fill ÷ std of the Laplacian of the
  truth, over masked pixels whose 3x3 stencil lies inside the mask (so the seam between
  fill and known pixels does not count as texture); 1.0 is natural, 0 a flat fill.
- :func:`colour_error`: ``|mean fill - mean truth|`` over masked pixels, per band,
  averaged over bands.
- :func:`offpalette_excess`: specks of colours the scene does not have. Colours are
  quantised to 12 levels per band over the common scale (clipped to 0..1); the share of
  synthesized pixels whose colour occurs nowhere among the crop's unmasked pixels, minus
  the same share for the true pixels under the mask (0 = no more foreign colours than
  the ground itself brings).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

__all__ = ["robust_range", "to_unit", "psnr", "ssim", "texture_ratio", "colour_error", "offpalette_share",
           "offpalette_excess", "masked_metrics", "summarize", "METRICS"]

#: names of the metrics :func:`masked_metrics` returns, in table order
METRICS = ("psnr", "ssim", "texture_ratio", "colour_error", "offpalette")
PALETTE_LEVELS = 12


def _chw(a) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"expected a (band, y, x) or (y, x) array, got shape {a.shape}")
    return a


def _mask(mask, shape) -> np.ndarray:
    m = np.asarray(mask, dtype=bool)
    if m.shape != tuple(shape[-2:]):
        raise ValueError(f"mask shape {m.shape} does not match the image's (y, x) shape {tuple(shape[-2:])}")
    if not m.any():
        raise ValueError("the mask selects no pixel; metrics over masked pixels are undefined")
    return m


def robust_range(truth, *, low: float = 0.5, high: float = 99.5) -> tuple[np.ndarray, np.ndarray]:
    """Per-band ``(lo, hi)`` percentiles of the truth crop (all its pixels), ``hi > lo``."""
    t = _chw(truth).astype(np.float64)
    lo = np.percentile(t.reshape(t.shape[0], -1), low, axis=1)
    hi = np.percentile(t.reshape(t.shape[0], -1), high, axis=1)
    hi = np.where(hi > lo, hi, lo + 1.0)  # a constant band: unit span
    return lo, hi


def to_unit(x, lo, hi) -> np.ndarray:
    """``(x - lo) / (hi - lo)`` per band (float64, unclipped)."""
    x = _chw(x).astype(np.float64)
    lo = np.asarray(lo, np.float64).reshape(-1, 1, 1)
    hi = np.asarray(hi, np.float64).reshape(-1, 1, 1)
    return (x - lo) / (hi - lo)


def psnr(fill, truth, mask) -> float:
    """PSNR in dB over masked pixels of two arrays already in the common [0, 1] scale (inf if equal)."""
    f, t = _chw(fill).astype(np.float64), _chw(truth).astype(np.float64)
    m = _mask(mask, t.shape)
    mse = float(np.mean((f[:, m] - t[:, m]) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def ssim(fill, truth, mask, *, win_size: int = 7) -> float:
    """Mean of the SSIM map over masked pixels (and bands); 1.0 for identical images."""
    from skimage.metrics import structural_similarity

    f, t = _chw(fill).astype(np.float64), _chw(truth).astype(np.float64)
    m = _mask(mask, t.shape)
    win = min(win_size, *t.shape[-2:])
    win -= (win + 1) % 2  # odd
    _, smap = structural_similarity(t, f, channel_axis=0, data_range=1.0, full=True, win_size=win)
    return float(np.mean(smap[:, m]))


def _texture_region(m: np.ndarray) -> np.ndarray:
    inner = ndimage.binary_erosion(m, structure=np.ones((3, 3), bool), border_value=1)
    return inner if inner.sum() >= 16 else m


def texture_ratio(fill, truth, mask) -> float:
    """std(Laplacian(fill)) / std(Laplacian(truth)) over the mask's interior (bands pooled).

    NaN when the truth has no texture there (a flat truth)."""
    f, t = _chw(fill).astype(np.float64), _chw(truth).astype(np.float64)
    m = _texture_region(_mask(mask, t.shape))
    lf = np.stack([ndimage.laplace(b, mode="reflect") for b in f])[:, m]
    lt = np.stack([ndimage.laplace(b, mode="reflect") for b in t])[:, m]
    st = float(lt.std())
    return float(lf.std()) / st if st > 0 else math.nan


def colour_error(fill, truth, mask) -> float:
    """Mean over bands of |mean fill − mean truth| over masked pixels (common scale)."""
    f, t = _chw(fill).astype(np.float64), _chw(truth).astype(np.float64)
    m = _mask(mask, t.shape)
    return float(np.mean(np.abs(f[:, m].mean(axis=1) - t[:, m].mean(axis=1))))


def _codes(x: np.ndarray, levels: int) -> np.ndarray:
    q = np.clip(np.floor(np.clip(x, 0.0, 1.0) * levels), 0, levels - 1).astype(np.int64)
    code = np.zeros(q.shape[1:], np.int64)
    for b in q:
        code = code * levels + b
    return code


def offpalette_share(fill, truth, mask, *, levels: int = PALETTE_LEVELS) -> float:
    """Share of masked pixels of ``fill`` whose quantised colour occurs nowhere among the
    unmasked pixels of ``truth`` (both in the common scale)."""
    f, t = _chw(fill).astype(np.float64), _chw(truth).astype(np.float64)
    m = _mask(mask, t.shape)
    if m.all() or not m.any():
        return math.nan
    palette = np.unique(_codes(t, levels)[~m])
    return float(np.mean(~np.isin(_codes(f, levels)[m], palette)))


def offpalette_excess(fill, truth, mask, *, levels: int = PALETTE_LEVELS) -> float:
    """:func:`offpalette_share` of the fill minus that of the truth under the mask."""
    return offpalette_share(fill, truth, mask, levels=levels) - offpalette_share(truth, truth, mask, levels=levels)


def masked_metrics(fill, truth, mask, *, lo=None, hi=None) -> dict[str, float]:
    """All metrics of a fill against the truth, in the common scale.

    Parameters
    ----------
    fill, truth : array (band, y, x) or (y, x)
        Values in the raster's units (e.g. uint16 DN). ``fill`` usually equals ``truth``
        outside the mask (known pixels composited back), which SSIM's window sees.
    mask : array (y, x) of bool
        True where the pixel was synthesized.
    lo, hi : per-band arrays, optional
        Common-scale bounds; default :func:`robust_range` of ``truth``.

    Returns
    -------
    dict
        ``psnr`` (dB), ``ssim``, ``texture_ratio``, ``colour_error`` (common scale units),
        ``offpalette`` (excess share of foreign colours, :func:`offpalette_excess`).
    """
    if lo is None or hi is None:
        lo, hi = robust_range(truth)
    f, t = to_unit(fill, lo, hi), to_unit(truth, lo, hi)
    return {"psnr": psnr(f, t, mask), "ssim": ssim(f, t, mask), "texture_ratio": texture_ratio(f, t, mask),
            "colour_error": colour_error(f, t, mask), "offpalette": offpalette_excess(f, t, mask)}


def summarize(rows: Sequence[Mapping[str, float]], keys: Sequence[str] = METRICS) -> dict[str, dict[str, float]]:
    """Mean, standard deviation and median over crops of each metric (NaNs skipped).

    PSNR is averaged in dB (the mean of per-crop PSNRs)."""
    out: dict[str, dict[str, float]] = {}
    for k in keys:
        v = np.array([r[k] for r in rows if k in r], dtype=np.float64)
        v = v[~np.isnan(v)]
        if v.size == 0:
            out[k] = {"mean": math.nan, "std": math.nan, "median": math.nan, "n": 0}
        else:
            out[k] = {"mean": float(v.mean()), "std": float(v.std()), "median": float(np.median(v)), "n": int(v.size)}
    return out
