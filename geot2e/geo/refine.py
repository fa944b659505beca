"""Finer grids for translation: integer refinements of a raster's grid (no torch).

A grid ``G'`` refines ``G`` by an integer ``s`` when both share a CRS and orientation, the
pixel size of ``G'`` is that of ``G`` divided by ``s`` in x and y, and every pixel edge of
``G`` is a pixel edge of ``G'``: each coarse pixel is exactly ``s × s`` fine pixels.
:func:`refine` puts a raster on such a grid (each coarse value replicated, the transform's
pixel size divided by ``s`` exactly, same bounds); :func:`refinement_of` checks that a given
fine raster (a PAN band) refines a coarse one and cuts both to their common extent, on
whole coarse pixels.
"""
from __future__ import annotations

import math

import numpy as np
import xarray as xr

from ..errors import GridMismatchError, ParameterError

__all__ = ["refine", "refinement_of", "refined_transform", "align_to_refinement"]

_TOL = 1e-6   # relative tolerance on pixel sizes and offsets (fractions of a pixel)


def refined_transform(transform, scale: int):
    """``transform`` with its pixel size divided by ``scale`` (same origin, exactly)."""
    from affine import Affine

    t = transform
    return Affine(t.a / scale, t.b / scale, t.c, t.d / scale, t.e / scale, t.f)


def _coords(transform, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    xs = transform.c + transform.a * (np.arange(width) + 0.5)
    ys = transform.f + transform.e * (np.arange(height) + 0.5)
    return ys, xs


def _check_axis_aligned(da: xr.DataArray, what: str) -> None:
    t = da.rio.transform()
    if t.b != 0 or t.d != 0:
        raise GridMismatchError(f"{what} has a rotated grid (transform {tuple(t)[:6]}); reproject it to a "
                                "north-up grid first (da.rio.reproject(da.rio.crs)).")


def refine(da: xr.DataArray, scale: int) -> xr.DataArray:
    """``da`` on the grid ``scale`` times finer (same CRS and bounds; each value replicated
    over ``scale × scale`` pixels); lazy for a dask-backed ``da``, chunks scaled."""
    from .grid import spatial_dims

    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ParameterError(f"scale must be a positive integer, got {scale!r}.")
    _check_axis_aligned(da, "the raster")
    ydim, xdim = spatial_dims(da)
    t = da.rio.transform()
    h, w = da.sizes[ydim], da.sizes[xdim]
    data = da.data
    ay, ax = da.dims.index(ydim), da.dims.index(xdim)
    if hasattr(data, "dask"):
        import dask.array as dsa

        data = dsa.repeat(dsa.repeat(data, scale, axis=ay), scale, axis=ax)
    else:
        data = np.repeat(np.repeat(np.asarray(data), scale, axis=ay), scale, axis=ax)
    nt = refined_transform(t, scale)
    ys, xs = _coords(nt, h * scale, w * scale)
    coords = {k: v for k, v in da.coords.items() if ydim not in v.dims and xdim not in v.dims}
    coords[ydim], coords[xdim] = ys, xs
    out = xr.DataArray(data, dims=da.dims, coords=coords, attrs=dict(da.attrs), name=da.name)
    out = out.rio.write_crs(da.rio.crs).rio.write_transform(nt)
    nd = da.rio.nodata if da.rio.nodata is not None else da.rio.encoded_nodata
    if nd is not None:
        out = out.rio.write_nodata(nd, encoded=da.rio.encoded_nodata is not None and da.rio.nodata is None)
    return out


def refinement_of(coarse: xr.DataArray, fine: xr.DataArray) -> tuple[int, xr.DataArray, xr.DataArray]:
    """Check that ``fine``'s grid refines ``coarse``'s by an integer and cut both to their
    common extent on whole coarse pixels.

    Returns ``(scale, coarse part, fine part)``: ``fine part`` covers exactly ``scale``
    times the pixels of ``coarse part``, edge on edge.

    Raises :class:`~geot2e.errors.GridMismatchError` when the CRSs differ, the pixel sizes
    are not in an integer ratio, the fine pixel edges do not fall on the coarse ones, or the
    rasters do not overlap by at least one coarse pixel.
    """
    from .grid import spatial_dims

    if coarse.rio.crs is None or fine.rio.crs is None:
        from ..errors import MissingCRSError

        raise MissingCRSError("both rasters need a CRS (da.rio.write_crs(...)) to put one on the other's grid.")
    if coarse.rio.crs != fine.rio.crs:
        raise GridMismatchError(f"the rasters have different CRSs ({coarse.rio.crs} vs {fine.rio.crs}); reproject "
                                "the coarse one onto a grid the fine one refines (rio.reproject_match on a "
                                "coarsened copy of the fine grid) and try again.")
    _check_axis_aligned(coarse, "the coarse raster")
    _check_axis_aligned(fine, "the fine raster")
    tc, tf = coarse.rio.transform(), fine.rio.transform()
    rx, ry = tc.a / tf.a, tc.e / tf.e
    s = int(round(rx))
    if s < 1 or abs(rx - s) > _TOL * s or abs(ry - s) > _TOL * s:
        raise GridMismatchError(f"the fine raster's pixels ({abs(tf.a):g} x {abs(tf.e):g}) are not an integer "
                                f"refinement of the coarse raster's ({abs(tc.a):g} x {abs(tc.e):g}): the ratio is "
                                f"{rx:.4g} x {ry:.4g}; resample the fine one to 1/2, 1/3 ... of the coarse pixel size.")
    ox, oy = (tf.c - tc.c) / tf.a, (tf.f - tc.f) / tf.e     # the fine origin, in fine pixels from the coarse one
    if abs(ox - round(ox)) > 1e-3 or abs(oy - round(oy)) > 1e-3:
        raise GridMismatchError(f"the fine raster's pixel edges are offset by ({ox - round(ox):+.3f}, "
                                f"{oy - round(oy):+.3f}) fine pixels from the coarse raster's: not a refinement of "
                                "its grid (Landsat's PAN band is offset by half a PAN pixel from the 30 m bands); "
                                "resample it onto the refined grid first: "
                                "geot2e.geo.refine.align_to_refinement(fine, coarse).")
    ox, oy = int(round(ox)), int(round(oy))
    cy, cx = spatial_dims(coarse)
    fy, fx = spatial_dims(fine)
    hc, wc = coarse.sizes[cy], coarse.sizes[cx]
    hf, wf = fine.sizes[fy], fine.sizes[fx]
    # the common extent in coarse pixels: fine pixel k of the fine raster is coarse pixel (k + o) // s
    c0x, c1x = max(0, math.ceil(ox / s)), min(wc, (ox + wf) // s)
    c0y, c1y = max(0, math.ceil(oy / s)), min(hc, (oy + hf) // s)
    if c1x <= c0x or c1y <= c0y:
        raise GridMismatchError("the rasters do not overlap by a whole coarse pixel; check that the fine raster "
                                "(e.g. the PAN band) covers the same place as the coarse one.")
    cpart = coarse.isel({cy: slice(c0y, c1y), cx: slice(c0x, c1x)})
    fpart = fine.isel({fy: slice(c0y * s - oy, c1y * s - oy), fx: slice(c0x * s - ox, c1x * s - ox)})
    return s, cpart, fpart


def align_to_refinement(fine: xr.DataArray, coarse: xr.DataArray, *, resampling: str = "bilinear") -> xr.DataArray:
    """``fine`` resampled onto the integer refinement of ``coarse``'s grid nearest its own
    pixel size (the scale ``round(coarse pixel / fine pixel)``), over ``coarse``'s bounds.

    For a fine band whose pixel edges are not on the coarse ones, e.g. Landsat 8/9's PAN
    (15 m), offset by half a PAN pixel from the 30 m bands: bilinear resampling shifts it by
    that half pixel (a slight blur, which pan-sharpening's detail injection tolerates).
    """
    from rasterio.enums import Resampling

    if coarse.rio.crs is None or fine.rio.crs is None:
        from ..errors import MissingCRSError

        raise MissingCRSError("both rasters need a CRS (da.rio.write_crs(...)).")
    _check_axis_aligned(coarse, "the coarse raster")
    tc = coarse.rio.transform()
    res = abs(fine.rio.resolution()[0])
    s = max(1, int(round(abs(tc.a) / res)))
    h, w = coarse.rio.height * s, coarse.rio.width * s
    try:
        how = Resampling[resampling]
    except KeyError:
        raise ParameterError(f"unknown resampling {resampling!r}; use one of rasterio's, e.g. 'bilinear'.") from None
    return fine.rio.reproject(coarse.rio.crs, transform=refined_transform(tc, s), shape=(h, w), resampling=how)
