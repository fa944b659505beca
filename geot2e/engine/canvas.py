"""Canvases for outpainting (a raster grown in whole pixels) and generation (a new grid)."""
from __future__ import annotations

import numpy as np
import xarray as xr
from affine import Affine

from ..errors import DimensionError, MissingCRSError, ParameterError
from .execute import _is_dask
from .raster import fixed_scaling, raster_dims

__all__ = ["grow_canvas", "blank_canvas"]


def _fill_for(dtype, nodata):
    if nodata is not None:
        return nodata
    return np.nan if np.issubdtype(dtype, np.floating) else 0


def _axis_coords(orig: np.ndarray, origin: float, step: float, before: int, after: int) -> np.ndarray:
    n = orig.size
    head = origin + step * (np.arange(-before, 0) + 0.5)
    tail = origin + step * (np.arange(n, n + after) + 0.5)
    return np.concatenate([head, orig, tail]).astype(orig.dtype if orig.dtype.kind == "f" else np.float64)


def grow_canvas(da: xr.DataArray, *, left: int, right: int, top: int, bottom: int):
    """``da`` grown by whole pixels on each side, and the (y, x) mask of the new pixels.

    The new pixels hold the nodata value (or NaN/0); the original pixels keep their
    values and coordinates; the transform is shifted by ``(-left, -top)`` pixels.
    """
    leading, band, ydim, xdim = raster_dims(da)
    t = da.rio.transform(recalc=True)
    if t.b != 0 or t.d != 0:
        raise ParameterError("outpaint needs a north-up grid (no rotation in the transform); "
                             "reproject the raster first (da.rio.reproject(da.rio.crs)).")
    h, w = int(da.sizes[ydim]), int(da.sizes[xdim])
    nodata = da.rio.nodata
    fill = _fill_for(da.dtype, nodata)
    iy, ix = da.dims.index(ydim), da.dims.index(xdim)
    pad = [(0, 0)] * da.ndim
    pad[iy], pad[ix] = (top, bottom), (left, right)
    if _is_dask(da.data):
        import dask.array as dsa

        data = dsa.pad(da.data, pad, mode="constant", constant_values=fill)
    else:
        data = np.pad(np.asarray(da.data), pad, mode="constant", constant_values=fill)
    ycoord = _axis_coords(da[ydim].values, t.f, t.e, top, bottom)
    xcoord = _axis_coords(da[xdim].values, t.c, t.a, left, right)
    coords = {name: c for name, c in da.coords.items() if not (set(c.dims) & {ydim, xdim})}
    coords[ydim] = (ydim, ycoord, da[ydim].attrs)
    coords[xdim] = (xdim, xcoord, da[xdim].attrs)
    canvas = xr.DataArray(data, dims=da.dims, coords=coords, attrs=dict(da.attrs), name=da.name)
    canvas.encoding = dict(da.encoding)
    if da.rio.crs is not None:
        canvas = canvas.rio.write_crs(da.rio.crs)
    canvas = canvas.rio.write_transform(t * Affine.translation(-left, -top))
    mask = np.ones((h + top + bottom, w + left + right), dtype=bool)
    mask[top:top + h, left:left + w] = False
    return canvas, xr.DataArray(mask, dims=(ydim, xdim), coords={ydim: canvas[ydim], xdim: canvas[xdim]})


#: Largest canvas :func:`blank_canvas` builds in memory from ``bounds=`` (pixels); larger scenes
#: are generated tile by tile with ``like=`` a dask-backed template.
MAX_CANVAS_PIXELS = 50_000_000


def _check_canvas_size(hgt: int, wid: int, nb: int) -> None:
    """Refuse a canvas too large to build in memory, before any array is allocated."""
    if hgt * wid > MAX_CANVAS_PIXELS:
        from ..errors import SizeLimitError

        gib = hgt * wid * (nb * 4 + 1) * 3 / 2**30  # float32 canvas, mask, result and the engine's copies
        raise SizeLimitError(
            f"the canvas would be {hgt} x {wid} pixels (about {gib:.3g} GiB in memory; the limit is "
            f"{MAX_CANVAS_PIXELS:,} pixels): check gsd= (metres per pixel) and bounds=, or generate it tile by "
            "tile with like= a dask-backed template (e.g. a Zarr store from geot2e.io.create_zarr_like).")


def _grid_for_bounds(bounds, crs, gsd, shape, nb: int = 3):
    """Transform and (height, width) of a north-up grid over ``bounds``.

    With ``gsd``: the pixel size in CRS units is chosen so that the ground sample distance at
    the grid's centre is exactly ``gsd`` along each axis (:func:`geot2e.geo.gsd_from_transform`);
    the grid starts at the bounds' top-left corner and has as many whole pixels as needed to
    cover them, so it overshoots ``right`` and ``bottom`` by less than one pixel.
    """
    import math

    from rasterio.transform import from_bounds, from_origin

    from ..geo import gsd_from_transform

    try:
        left, bottom, right, top = (float(v) for v in bounds)
    except (TypeError, ValueError) as e:
        raise ParameterError(f"bounds must be (left, bottom, right, top), got {bounds!r}.") from e
    if not all(map(math.isfinite, (left, bottom, right, top))):
        raise ParameterError(f"bounds must be finite numbers, got {bounds!r}.")
    if not (right > left and top > bottom):
        raise ParameterError(f"bounds {bounds!r} are empty: need right > left and top > bottom.")
    if shape is not None:
        try:
            hgt, wid = (int(v) for v in shape)
        except (TypeError, ValueError) as e:
            raise ParameterError(f"shape must be (height, width), got {shape!r}.") from e
        if hgt < 1 or wid < 1:
            raise ParameterError(f"shape must be (height, width) >= 1, got {shape!r}.")
        _check_canvas_size(hgt, wid, nb)
        return from_bounds(left, bottom, right, top, wid, hgt), (hgt, wid)
    if gsd is None:
        raise ParameterError("generate with bounds= needs gsd= (metres per pixel) or shape=(height, width).")
    gsd = float(gsd)

    def cover(sx, sy):
        # whole pixels covering the bounds (a relative 1e-9 of slack absorbs rounding)
        wid = max(1, math.ceil((right - left) / sx - 1e-9))
        hgt = max(1, math.ceil((top - bottom) / sy - 1e-9))
        _check_canvas_size(hgt, wid, nb)  # before any array is built
        return hgt, wid

    sx = sy = gsd
    hgt, wid = cover(sx, sy)
    for _ in range(8):  # pixel size in CRS units whose ground length at the grid's centre is gsd
        gx, gy = gsd_from_transform(from_origin(left, top, sx, sy), crs, (hgt, wid), per_axis=True)
        sx, sy = sx * gsd / gx, sy * gsd / gy
        new = cover(sx, sy)
        if new == (hgt, wid) and abs(gx - gsd) <= 1e-12 * gsd and abs(gy - gsd) <= 1e-12 * gsd:
            break
        hgt, wid = new
    return from_origin(left, top, sx, sy), (hgt, wid)


def _grid_coords(transform, hgt: int, wid: int):
    """Pixel-centre coordinates exactly as rioxarray computes them from a file's transform, so
    a written and re-read canvas aligns with ``join="exact"``."""
    t = transform * Affine.translation(0.5, 0.5)
    xs, _ = t * (np.arange(wid), np.zeros(wid))
    _, ys = t * (np.zeros(hgt), np.arange(hgt))
    return ys, xs


def value_range(model) -> tuple[float, float]:
    """What a generated raster without a template maps the model's [0, 1] to: its modality's
    ``value_range`` (:mod:`geot2e.models.modality`), (0, 1) for RGB."""
    name = getattr(model, "modality", None)
    if name in (None, "rgb"):
        return 0.0, 1.0
    from ..models.modality import get_modality

    lo, hi = get_modality(name).value_range
    return float(lo), float(hi)


def _bands_by_role(like, band, names) -> list[int] | None:
    """Indices of ``like``'s bands whose roles are the model's band ``names`` (in that order),
    or None when like's bands are no roles or lack one of them."""
    from ..errors import BandRoleError
    from ..geo.bands import band_roles, role_of

    try:
        roles = band_roles(like, None, band_dim=band)
    except BandRoleError:
        return None
    want = [role_of(n) for n in names]
    if roles is None or None in want or not set(want) <= set(roles):
        return None
    return [list(roles).index(r) for r in want]


def blank_canvas(model, *, like=None, bounds=None, crs=None, gsd=None, shape=None):
    """An all-masked canvas for :func:`geot2e.generate`.

    Returns ``(canvas, mask, radiometry)``: with ``like`` (with the model's band count, or
    holding the model's bands by role among others) the canvas takes like's grid, band
    coordinate, dtype and nodata and the radiometry is fitted on like's valid pixels (of those
    bands); otherwise float32 scaled to :func:`value_range` (0..1 for RGB) on like's grid.
    """
    from ..geo import Radiometry

    nb = model.bands
    lo, hi = value_range(model)
    unit = Radiometry(lo=(lo,) * nb, hi=(hi,) * nb, dtype="float32")
    if like is not None:
        if not isinstance(like, xr.DataArray):
            raise ParameterError(f"like must be a DataArray (a raster to copy the grid from), got {type(like).__name__}.")
        leading, band, ydim, xdim = raster_dims(like)
        if leading:
            raise DimensionError(f"like has dims {like.dims}; give a (band, y, x) or (y, x) raster.")
        if like.rio.crs is None:
            raise MissingCRSError("like has no CRS; write one with like.rio.write_crs(...).")
        if band is not None and int(like.sizes[band]) != nb:
            pick = _bands_by_role(like, band, model.config.band_names)
            if pick is not None:            # like holds the model's bands among others (e.g. nir of a 6-band scene)
                names = like.attrs.get("long_name")
                like = like.isel({band: pick})
                if isinstance(names, (tuple, list)) and len(names) > max(pick):
                    like = like.assign_attrs(long_name=tuple(names[i] for i in pick))
        same_bands = band is not None and int(like.sizes[band]) == nb
        if same_bands:
            dims = like.dims
            shape3 = like.shape
            dtype = like.dtype
            coords = {k: c for k, c in like.coords.items()}
            rad = fixed_scaling(model, dtype, like.rio.nodata)  # official models: uint8 as 0-255
            try:
                rad = rad or Radiometry.fit(like)
            except Exception:  # no valid pixel: fall back to the unit scaling
                rad = Radiometry(lo=unit.lo, hi=unit.hi, dtype=str(dtype), nodata=like.rio.nodata)
            attrs = {k: v for k, v in like.attrs.items() if not str(k).startswith("geot2e_")}
        else:
            dims = ("band", ydim, xdim)
            shape3 = (nb, int(like.sizes[ydim]), int(like.sizes[xdim]))
            dtype = np.dtype(np.float32)
            coords = {k: c for k, c in like.coords.items() if set(c.dims) <= {ydim, xdim}}
            coords["band"] = np.arange(1, nb + 1)
            rad = unit
            attrs = {"long_name": tuple(model.config.band_names)}
        if _is_dask(like.data):
            import dask.array as dsa

            ych, xch = like.chunks[like.dims.index(ydim)], like.chunks[like.dims.index(xdim)]
            chunks = tuple(ych if d == ydim else xch if d == xdim else -1 for d in dims)
            data = dsa.zeros(shape3, dtype=dtype, chunks=chunks)
        else:
            data = np.zeros(shape3, dtype=dtype)
        canvas = xr.DataArray(data, dims=dims, coords=coords, attrs=attrs)
        if same_bands:
            canvas.encoding = dict(like.encoding)
        canvas = canvas.rio.write_crs(like.rio.crs).rio.write_transform(like.rio.transform(recalc=True))
        h, w = int(like.sizes[ydim]), int(like.sizes[xdim])
        mask = xr.DataArray(np.ones((h, w), dtype=bool), dims=(ydim, xdim))
        return canvas, mask, rad
    if bounds is None:
        raise ParameterError("generate needs like= (a raster to copy the grid from) or bounds= with crs= and "
                             "gsd= (or shape=).")
    if crs is None:
        raise MissingCRSError("generate with bounds= needs crs= (e.g. crs='EPSG:32621').")
    from ..geo.gsd import to_pyproj_crs

    pcrs = to_pyproj_crs(crs)
    transform, (h, w) = _grid_for_bounds(bounds, pcrs, gsd, shape, nb)
    ys, xs = _grid_coords(transform, h, w)
    canvas = xr.DataArray(np.zeros((nb, h, w), np.float32), dims=("band", "y", "x"),
                          coords={"band": np.arange(1, nb + 1), "y": ys, "x": xs},
                          attrs={"long_name": tuple(model.config.band_names)})
    canvas = canvas.rio.write_crs(pcrs.to_wkt()).rio.write_transform(transform)
    mask = xr.DataArray(np.ones((h, w), dtype=bool), dims=("y", "x"))
    return canvas, mask, unit
