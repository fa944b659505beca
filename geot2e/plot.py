"""Quicklook plots: before / after / mask comparisons with a robust percentile stretch.

The stretch is computed per band on the *before* image's valid pixels (not nodata, not
NaN, and not under the mask when one is given, so bright clouds do not wash the
picture out) and applied unchanged to every panel: colours are comparable between
panels. It works for uint16 reflectance, uint8, and float rasters with NaN.

>>> fig = geot2e.plot.compare(da, filled, mask=filled.synthesized)   # doctest: +SKIP
>>> fig.savefig("before_after.png", dpi=120)                          # doctest: +SKIP

Figures are built with :class:`matplotlib.figure.Figure` (no pyplot state): they show
in Jupyter when returned from a cell (after ``%matplotlib inline``), and ``fig.savefig`` works on any machine, with or
without a display.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["compare", "quicklook", "crops_1to1", "to_rgb", "stretch_limits"]

#: Largest number of pixels per side drawn; bigger rasters are subsampled (quicklook).
MAX_PIXELS = 1024
_RGB_NAMES = (("red", "green", "blue"), ("r", "g", "b"), ("B4", "B3", "B2"))


# --------------------------------------------------------------------------- helpers
def _as_dataarray(obj: Any):
    import xarray as xr

    if isinstance(obj, xr.DataArray):
        return obj
    arr = np.asarray(obj)
    if arr.ndim == 2:
        return xr.DataArray(arr, dims=("y", "x"))
    if arr.ndim == 3:
        return xr.DataArray(arr, dims=("band", "y", "x"))
    raise ValueError(f"expected a (band, y, x) or (y, x) array, got shape {arr.shape}.")


def _yx(da) -> tuple[str, str]:
    try:
        return da.rio.y_dim, da.rio.x_dim
    except Exception:
        return da.dims[-2], da.dims[-1]


def _band_dim(da) -> str | None:
    y, x = _yx(da)
    others = [d for d in da.dims if d not in (y, x)]
    if not others:
        return None
    if len(others) > 1:
        extra = [d for d in others if d != "band"]
        raise ValueError(f"select one slice of {extra} first (e.g. da.isel({extra[0]}=0)); got dims {da.dims}.")
    return others[0]


def _pick_bands(da, bands) -> list[int]:
    """Positions of the bands to show: 3 for RGB, 1 for greyscale."""
    bdim = _band_dim(da)
    if bdim is None:
        return []
    n = int(da.sizes[bdim])
    labels = [str(v) for v in da[bdim].values] if bdim in da.coords else [str(i + 1) for i in range(n)]
    long_name = da.attrs.get("long_name")
    names = [str(v) for v in long_name] if isinstance(long_name, (list, tuple)) and len(long_name) == n else labels
    if bands is not None:
        items = [bands] if isinstance(bands, (str, int, np.integer)) else list(bands)
        if len(items) not in (1, 3):
            raise ValueError(f"bands= selects 1 (greyscale) or 3 (RGB) bands, got {len(items)}.")
        out = []
        for b in items:
            if isinstance(b, str):
                if b in labels:
                    out.append(labels.index(b))
                elif b in names:
                    out.append(names.index(b))
                else:
                    raise ValueError(f"band {b!r} not found; available: {names}.")
            else:
                if not 0 <= int(b) < n:
                    raise ValueError(f"band position {b} out of range 0..{n - 1} (positions are 0-based).")
                out.append(int(b))
        return out
    for trio in _RGB_NAMES:
        for pool in (labels, names):
            low = [p.lower() for p in pool]
            if all(t.lower() in low for t in trio):
                return [low.index(t.lower()) for t in trio]
    return [0, 1, 2] if n >= 3 else [0]


def _subsample(da, step: int):
    y, x = _yx(da)
    return da.isel({y: slice(None, None, step), x: slice(None, None, step)}) if step > 1 else da


def _step_for(da, max_pixels: int) -> int:
    y, x = _yx(da)
    return max(1, int(np.ceil(max(da.sizes[y], da.sizes[x]) / max_pixels)))


def _values(da, band_pos: list[int]) -> np.ndarray:
    """(nb, h, w) float64 values of the chosen bands (nb = 1 for a (y, x) array)."""
    bdim = _band_dim(da)
    y, x = _yx(da)
    if bdim is None:
        arr = np.asarray(da.transpose(y, x).values)[None]
    else:
        arr = np.asarray(da.transpose(bdim, y, x).isel({bdim: band_pos}).values)
    return arr.astype("float64")


def _invalid(da, vals: np.ndarray) -> np.ndarray:
    """(h, w) True where any shown band is NaN or equals the nodata value."""
    bad = ~np.isfinite(vals).all(axis=0)
    nodata = None
    try:
        nodata = da.rio.nodata
        if nodata is None:
            nodata = da.rio.encoded_nodata
    except Exception:
        nodata = da.attrs.get("_FillValue", da.attrs.get("nodata"))
    if nodata is not None and np.isfinite(float(nodata)):
        bad |= (vals == float(nodata)).all(axis=0)
    return bad


def _mask_values(mask, like_shape: tuple[int, int], step: int) -> np.ndarray | None:
    if mask is None:
        return None
    m = _as_dataarray(mask)
    y, x = _yx(m)
    if m.ndim != 2:
        others = [d for d in m.dims if d not in (y, x)]
        m = m.any(dim=others)
    m = _subsample(m, step)
    arr = np.asarray(m.transpose(y, x).values)
    if arr.dtype != bool:
        arr = np.nan_to_num(arr.astype("float64")) != 0
    if arr.shape != like_shape:
        return None
    return arr


def stretch_limits(values: np.ndarray, valid: np.ndarray, percentiles=(2, 98)) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (lo, hi) of ``values`` (nb, h, w) over the ``valid`` (h, w) pixels."""
    lo_p, hi_p = percentiles
    if not 0 <= lo_p < hi_p <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}.")
    nb = values.shape[0]
    lo = np.zeros(nb)
    hi = np.ones(nb)
    for b in range(nb):
        v = values[b][valid & np.isfinite(values[b])]
        if v.size == 0:
            v = values[b][np.isfinite(values[b])]
        if v.size == 0:
            continue
        lo[b], hi[b] = np.percentile(v, [lo_p, hi_p])
        if hi[b] <= lo[b]:
            hi[b] = lo[b] + 1.0
    return lo, hi


def to_rgb(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, invalid: np.ndarray | None = None) -> np.ndarray:
    """Stretch (nb, h, w) values with per-band limits into an (h, w, 4) RGBA float image.

    One band gives a greyscale image. Invalid pixels are fully transparent.
    """
    scaled = (values - lo[:, None, None]) / (hi - lo)[:, None, None]
    scaled = np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0)
    if scaled.shape[0] == 1:
        scaled = np.repeat(scaled, 3, axis=0)
    alpha = np.ones(scaled.shape[1:])
    if invalid is not None:
        alpha[invalid] = 0.0
    return np.concatenate([scaled, alpha[None]], axis=0).transpose(1, 2, 0)


def _extent(da):
    """imshow extent (left, right, bottom, top) in CRS units, or None for pixel axes."""
    y, x = _yx(da)
    if x not in da.coords or y not in da.coords or da.sizes[x] < 2 or da.sizes[y] < 2:
        return None
    xs, ys = np.asarray(da[x].values, float), np.asarray(da[y].values, float)
    dx, dy = xs[1] - xs[0], ys[1] - ys[0]
    return (xs[0] - dx / 2, xs[-1] + dx / 2, ys[-1] + dy / 2, ys[0] - dy / 2)


def _crs_label(da) -> str | None:
    try:
        crs = da.rio.crs
    except Exception:
        return None
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else (crs.to_string()[:40])


def _new_axes(n: int, ax, figsize):
    if ax is not None:
        axes = list(np.atleast_1d(ax).ravel())
        if len(axes) != n:
            raise ValueError(f"ax must hold {n} Axes for these panels, got {len(axes)}.")
        return axes[0].figure, axes
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize or (4.2 * n, 4.4), layout="constrained")
    return fig, list(np.atleast_1d(fig.subplots(1, n)).ravel())


def _draw(axis, rgba, extent, title, crs):
    axis.imshow(rgba, extent=extent, interpolation="nearest")
    axis.set_title(title)
    if extent is None:
        axis.set_axis_off()
    else:
        axis.tick_params(labelsize=7)
        axis.ticklabel_format(useOffset=False, style="plain")
        if crs:
            axis.set_xlabel(crs, fontsize=7)


# --------------------------------------------------------------------------- public
def compare(before, after, mask=None, *, bands: Sequence[int | str] | None = None,
            percentiles: tuple[float, float] = (2, 98), ax=None,
            titles: Sequence[str] = ("before", "after", "mask (white = synthesized)"),
            figsize: tuple[float, float] | None = None, max_pixels: int = MAX_PIXELS):
    """Before / after (/ mask) quicklook with one stretch for both images.

    Parameters
    ----------
    before, after : xarray.DataArray or numpy.ndarray
        (band, y, x) or (y, x) rasters, numpy- or dask-backed, any dtype. They may be on
        different grids (e.g. after :func:`geot2e.outpaint`): with x/y coordinates the
        panels are drawn in CRS units, so the original pixels line up.
    mask : bool array-like, optional
        (y, x) pixels that were synthesized (e.g. ``after.synthesized``), on ``after``'s
        grid. When given, a third panel shows it (white = synthesized) and the masked
        pixels are left out of the stretch.
    bands : sequence of int or str, optional
        Three bands (RGB) or one (greyscale), by 0-based position or name. Default:
        bands named red/green/blue if present, else the first three, else the first.
    percentiles : (float, float), default (2, 98)
        Lower and upper percentiles of the *before* image's valid pixels mapped to black
        and white, per band; the same limits are applied to ``after``.
    ax : sequence of matplotlib Axes, optional
        Axes to draw into (2 without a mask, 3 with one). Default: a new figure.
    titles : sequence of str
        Panel titles (before, after, mask).
    figsize : (float, float), optional
        Size of a new figure in inches.
    max_pixels : int, default 1024
        Rasters larger than this per side are subsampled for display.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, with 2 axes (or 3 with a mask). Nodata/NaN pixels are transparent.
    """
    b = _as_dataarray(before)
    a = _as_dataarray(after)
    pos = _pick_bands(b, bands)
    step = max(_step_for(b, max_pixels), _step_for(a, max_pixels))
    bs, as_ = _subsample(b, step), _subsample(a, step)
    bv, av = _values(bs, pos), _values(as_, pos if _band_dim(a) is not None else [])
    if bv.shape[0] != av.shape[0]:
        raise ValueError(f"before has {bv.shape[0]} shown band(s) but after has {av.shape[0]}; "
                         "pass rasters with the same bands.")
    b_invalid, a_invalid = _invalid(bs, bv), _invalid(as_, av)
    m = _mask_values(mask, av.shape[1:], step)
    if mask is not None and m is None:
        raise ValueError("mask must be a (y, x) array on after's grid.")
    valid = ~b_invalid
    if m is not None and m.shape == valid.shape:
        valid = valid & ~m
    lo, hi = stretch_limits(bv, valid, percentiles)
    n = 3 if m is not None else 2
    fig, axes = _new_axes(n, ax, figsize)
    titles = list(titles) + ["before", "after", "mask"][len(titles):]
    crs = _crs_label(a)
    ext_b, ext_a = _extent(bs), _extent(as_)
    _draw(axes[0], to_rgb(bv, lo, hi, b_invalid), ext_b, titles[0], crs)
    _draw(axes[1], to_rgb(av, lo, hi, a_invalid), ext_a, titles[1], crs)
    if m is not None:
        mask_rgba = np.repeat(m[..., None].astype(float), 3, axis=2)
        _draw(axes[2], mask_rgba, ext_a, titles[2], crs)
    if ext_b is not None and ext_a is not None:  # same map window in every panel
        xs = [ext_b[0], ext_b[1], ext_a[0], ext_a[1]]
        ys = [ext_b[2], ext_b[3], ext_a[2], ext_a[3]]
        for axis in axes:
            axis.set_xlim(min(xs), max(xs))
            axis.set_ylim(min(ys), max(ys))
    return fig


def quicklook(da, *, bands: Sequence[int | str] | None = None, percentiles: tuple[float, float] = (2, 98),
              ax=None, title: str | None = None, figsize: tuple[float, float] | None = None,
              max_pixels: int = MAX_PIXELS):
    """One raster as an RGB (or greyscale) image with a per-band percentile stretch.

    Parameters
    ----------
    da : xarray.DataArray or numpy.ndarray
        (band, y, x) or (y, x) raster, any dtype; nodata/NaN pixels are transparent.
    bands, percentiles, figsize, max_pixels
        As in :func:`compare`.
    ax : matplotlib Axes, optional
        Axes to draw into. Default: a new figure.
    title : str, optional
        Default: the array's name, or its ``geot2e_operation`` provenance attr.

    Returns
    -------
    matplotlib.figure.Figure
    """
    d = _as_dataarray(da)
    pos = _pick_bands(d, bands)
    ds = _subsample(d, _step_for(d, max_pixels))
    vals = _values(ds, pos)
    invalid = _invalid(ds, vals)
    lo, hi = stretch_limits(vals, ~invalid, percentiles)
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize or (5.5, 5.5), layout="constrained")
        axis = fig.subplots()
    else:
        axis = ax
        fig = ax.figure
    if title is None:
        title = str(d.attrs.get("geot2e_operation") or d.name or "")
    _draw(axis, to_rgb(vals, lo, hi, invalid), _extent(ds), title, _crs_label(d))
    return fig


def crops_1to1(rows, *, titles: Sequence[str] | None = None, row_labels: Sequence[str] | None = None,
               bands: Sequence[int | str] | None = None, reference: int = -1,
               percentiles: tuple[float, float] = (0.5, 99.5), scale: int = 1, dpi: int = 100):
    """A grid of crops shown pixel for pixel: one raster pixel is ``scale`` figure pixels.

    Crops are drawn without resampling (nearest neighbour, axes sized to the crop), so a
    figure saved at ``dpi`` (and never with ``bbox_inches="tight"`` rescaling) shows the
    pixels as they are: the way to judge texture, which a shrunk before/after hides.

    Parameters
    ----------
    rows : sequence of sequences of DataArray or numpy.ndarray
        One row per place, one (band, y, x) or (y, x) crop per panel; all crops of a
        row have the same size.
    titles : sequence of str, optional
        Column titles (drawn above the first row).
    row_labels : sequence of str, optional
        A short label drawn in the top-left corner of each row's first panel.
    bands : sequence of int or str, optional
        As in :func:`compare` (default: red, green, blue by name, else the first three).
    reference : int, optional
        The panel of each row whose valid pixels set that row's stretch (default: the
        last, e.g. the truth), applied unchanged to every panel of the row.
    percentiles : (float, float), optional
        Stretch percentiles (default 0.5, 99.5, as the evaluation's metrics use).
    scale : int, optional
        Figure pixels per raster pixel (default 1).
    dpi : int, optional
        Figure resolution; save with the same ``dpi`` to keep 1:1.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    rows = [list(r) for r in rows]
    if not rows or not rows[0]:
        raise ValueError("crops_1to1 needs at least one row with one crop.")
    prepared = []
    for r in rows:
        das = [_as_dataarray(c) for c in r]
        vals = [_values(d, _pick_bands(d, bands)) for d in das]
        shapes = {v.shape[1:] for v in vals}
        if len(shapes) != 1:
            raise ValueError(f"the crops of a row must have one size, got {sorted(shapes)}.")
        ref_inv = _invalid(das[reference], vals[reference])
        lo, hi = stretch_limits(vals[reference], ~ref_inv, percentiles)
        prepared.append([to_rgb(v, lo, hi, _invalid(d, v)) for d, v in zip(das, vals)])
    gap, top = 4, (16 if titles else 0)
    heights = [p[0].shape[0] * scale for p in prepared]
    width_px = max(sum(im.shape[1] * scale for im in p) + gap * (len(p) - 1) for p in prepared)
    height_px = top + sum(heights) + gap * (len(prepared) - 1)
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    y = height_px - top
    for i, p in enumerate(prepared):
        y -= heights[i]
        x = 0
        for j, im in enumerate(p):
            h, w = im.shape[0] * scale, im.shape[1] * scale
            ax = fig.add_axes((x / width_px, y / height_px, w / width_px, h / height_px))
            ax.imshow(im, interpolation="nearest", aspect="auto")
            ax.set_axis_off()
            if i == 0 and titles and j < len(titles):
                ax.set_title(titles[j], fontsize=8, pad=2)
            if j == 0 and row_labels and i < len(row_labels):
                ax.text(2, 2, row_labels[i], color="yellow", fontsize=7, va="top", ha="left")
            x += w + gap
        y -= gap
    return fig
