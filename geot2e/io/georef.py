"""The georeferencing geot2e writes into files: the exact geotransform of a raster's grid.

Used by both writers (:mod:`geot2e.io.cog`, :mod:`geot2e.io.zarr_store`) and re-exported by
:mod:`geot2e.io.raster`.
"""
from __future__ import annotations

import xarray as xr

__all__ = ["exact_transform"]


def exact_transform(da: xr.DataArray):
    """The affine transform of ``da``'s pixel grid, bit-exact where the source recorded one.

    ``da.rio.transform()`` rebuilds the origin from the coordinates (``x[0] - res / 2``),
    which can differ from the source's geotransform in the last bits; written into a file
    and read back, the coordinates then no longer align exactly with the array's
    (``xr.align(..., join="exact")`` fails). When the grid mapping coordinate carries a
    ``GeoTransform`` (rioxarray keeps the source's there) with the same pixel size and
    rotation, and ``da``'s coordinates lie on that grid (within 1e-6 pixel, e.g. after
    ``isel``), that transform is used, shifted by the whole number of pixels of the crop.
    Otherwise the transform is rebuilt from the coordinates.
    """
    import rioxarray  # noqa: F401 - registers the .rio accessor
    from affine import Affine

    recalc = da.rio.transform(recalc=True)
    try:
        gt = da.coords[da.rio.grid_mapping].attrs["GeoTransform"]
        cached = Affine.from_gdal(*(float(v) for v in str(gt).split()))
    except (KeyError, TypeError, ValueError):
        return recalc
    scale = max(abs(cached.a), abs(cached.b), abs(cached.d), abs(cached.e))
    if scale == 0 or any(abs(u - v) > 1e-9 * scale for u, v in zip(
            (cached.a, cached.b, cached.d, cached.e), (recalc.a, recalc.b, recalc.d, recalc.e))):
        return recalc
    try:
        col, row = ~cached * (recalc.c, recalc.f)
    except Exception:  # noqa: BLE001 - a degenerate cached transform: use the coordinates
        return recalc
    kx, ky = round(col), round(row)
    if abs(col - kx) > 1e-6 or abs(row - ky) > 1e-6:
        return recalc
    return cached if (kx, ky) == (0, 0) else cached * Affine.translation(kx, ky)
