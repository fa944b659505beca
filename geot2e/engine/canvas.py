"""Canvases for outpainting (a raster grown in whole pixels) and generation (a new grid)."""
from __future__ import annotations

import numpy as np
import xarray as xr
from affine import Affine

from ..errors import BandCountError, DimensionError, MissingCRSError, ParameterError
from .execute import _is_dask
from .raster import raster_dims

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


def _grid_for_bounds(bounds, crs, gsd, shape):
    from rasterio.transform import from_bounds, from_origin

    from ..geo import gsd_from_transform

    try:
        left, bottom, right, top = (float(v) for v in bounds)
    except (TypeError, ValueError) as e:
        raise ParameterError(f"bounds must be (left, bottom, right, top), got {bounds!r}.") from e
    if not (right > left and top > bottom):
        raise ParameterError(f"bounds {bounds!r} are empty: need right > left and top > bottom.")
    if shape is not None:
        hgt, wid = (int(v) for v in shape)
        if hgt < 1 or wid < 1:
            raise ParameterError(f"shape must be (height, width) >= 1, got {shape!r}.")
        return from_bounds(left, bottom, right, top, wid, hgt), (hgt, wid)
    if gsd is None:
        raise ParameterError("generate with bounds= needs gsd= (metres per pixel) or shape=(height, width).")
    sx = sy = float(gsd)
    for _ in range(3):  # pixel size in CRS units whose ground length at the centre is gsd
        wid = max(1, int(round((right - left) / sx)))
        hgt = max(1, int(round((top - bottom) / sy)))
        gx, gy = gsd_from_transform(from_origin(left, top, sx, sy), crs, (hgt, wid), per_axis=True)
        sx, sy = sx * gsd / gx, sy * gsd / gy
    wid = max(1, int(round((right - left) / sx)))
    hgt = max(1, int(round((top - bottom) / sy)))
    return from_origin(left, top, sx, sy), (hgt, wid)


def blank_canvas(model, *, like=None, bounds=None, crs=None, gsd=None, shape=None):
    """An all-masked canvas for :func:`geot2e.generate`.

    Returns ``(canvas, mask, radiometry)``: with ``like`` (same band count as the model)
    the canvas takes like's grid, band coordinate, dtype and nodata and the radiometry is
    fitted on like's valid pixels; otherwise float32 with a [0, 1] scaling.
    """
    from ..geo import Radiometry

    nb = model.bands
    unit = Radiometry(lo=(0.0,) * nb, hi=(1.0,) * nb, dtype="float32")
    if like is not None:
        if not isinstance(like, xr.DataArray):
            raise ParameterError(f"like must be a DataArray (a raster to copy the grid from), got {type(like).__name__}.")
        leading, band, ydim, xdim = raster_dims(like)
        if leading:
            raise DimensionError(f"like has dims {like.dims}; give a (band, y, x) or (y, x) raster.")
        if like.rio.crs is None:
            raise MissingCRSError("like has no CRS; write one with like.rio.write_crs(...).")
        same_bands = band is not None and int(like.sizes[band]) == nb
        if same_bands:
            dims = like.dims
            shape3 = like.shape
            dtype = like.dtype
            coords = {k: c for k, c in like.coords.items()}
            rad = None
            try:
                rad = Radiometry.fit(like)
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
    transform, (h, w) = _grid_for_bounds(bounds, pcrs, gsd, shape)
    ys = transform.f + transform.e * (np.arange(h) + 0.5)
    xs = transform.c + transform.a * (np.arange(w) + 0.5)
    if h * w > 50_000_000:
        raise ParameterError(f"the canvas would be {h} x {w} pixels; generate tiles of it with like= a dask-backed "
                             "template (e.g. a Zarr store from geot2e.io.create_zarr_like) instead.")
    canvas = xr.DataArray(np.zeros((nb, h, w), np.float32), dims=("band", "y", "x"),
                          coords={"band": np.arange(1, nb + 1), "y": ys, "x": xs},
                          attrs={"long_name": tuple(model.config.band_names)})
    canvas = canvas.rio.write_crs(pcrs.to_wkt()).rio.write_transform(transform)
    mask = xr.DataArray(np.ones((h, w), dtype=bool), dims=("y", "x"))
    return canvas, mask, unit
