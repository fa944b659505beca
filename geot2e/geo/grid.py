"""Pixel-grid helpers: spatial dims, nodata/valid masks, grid comparison.

Everything here works on rioxarray DataArrays, numpy- or dask-backed, and keeps
dask arrays lazy.
"""
from __future__ import annotations

import math

import numpy as np
import xarray as xr

import rioxarray  # noqa: F401  (registers the .rio accessor)

from geot2e.errors import DimensionError, GridMismatchError

__all__ = [
    "spatial_dims",
    "get_nodata",
    "nodata_mask",
    "valid_mask",
    "assert_same_grid",
    "grid_coords",
]

_Y_NAMES = ("y", "latitude", "lat", "northing")
_X_NAMES = ("x", "longitude", "lon", "easting")


def spatial_dims(da: xr.DataArray | xr.Dataset) -> tuple[str, str]:
    """Names of the (y, x) dimensions of a raster.

    Parameters
    ----------
    da : xarray.DataArray or xarray.Dataset
        A raster, e.g. opened with ``rioxarray.open_rasterio``.

    Returns
    -------
    (str, str)
        The row and column dimension names, e.g. ``("y", "x")``.

    Raises
    ------
    DimensionError
        If no spatial dimensions can be identified.
    """
    try:
        return da.rio.y_dim, da.rio.x_dim
    except Exception:  # rioxarray raises MissingSpatialDimensionError
        pass
    dims = list(da.dims)
    y = next((d for d in dims if str(d).lower() in _Y_NAMES), None)
    x = next((d for d in dims if str(d).lower() in _X_NAMES), None)
    if y is None or x is None:
        if isinstance(da, xr.DataArray) and da.ndim >= 2:
            y, x = dims[-2], dims[-1]
        else:
            raise DimensionError(
                f"cannot find the spatial dimensions among {dims}; name them 'y' and 'x' "
                "(da.rename({...})) or call da.rio.set_spatial_dims(x_dim=..., y_dim=...)."
            )
    return str(y), str(x)


def get_nodata(da: xr.DataArray):
    """The nodata value of a raster, or ``None``.

    Reads ``da.rio.nodata`` (``_FillValue``/``nodata`` attributes), then
    ``da.rio.encoded_nodata`` and ``encoding["_FillValue"]``: a masked (decoded)
    float raster reports ``nan`` because its nodata pixels hold NaN.
    """
    floating = np.issubdtype(da.dtype, np.floating)
    try:
        value = da.rio.nodata
    except Exception:
        value = None
    if value is not None:
        return np.nan if (floating and _is_nan(value)) else value
    try:
        encoded = da.rio.encoded_nodata
    except Exception:
        encoded = None
    if floating and (encoded is not None or "_FillValue" in da.encoding):
        return np.nan
    if "missing_value" in da.attrs:
        return da.attrs["missing_value"]
    return None


def _is_nan(value) -> bool:
    try:
        return bool(np.isnan(value))
    except (TypeError, ValueError):
        return False


def _band_axes(da: xr.DataArray) -> list[str]:
    y, x = spatial_dims(da)
    return [d for d in da.dims if d not in (y, x)]


def grid_coords(da: xr.DataArray | xr.Dataset) -> dict:
    """Coordinates that define ``da``'s pixel grid: y, x and the CRS variable."""
    y, x = spatial_dims(da)
    coords = {}
    for name, c in da.coords.items():
        if set(c.dims) <= {y, x}:
            coords[name] = c
    return coords


def nodata_mask(da: xr.DataArray) -> xr.DataArray:
    """Boolean (y, x) mask, True where any band is nodata or NaN.

    Parameters
    ----------
    da : xarray.DataArray
        Raster (band, y, x) or (y, x); the nodata value is taken from
        ``da.rio.nodata`` / ``da.rio.encoded_nodata`` / ``_FillValue``. Float data
        are also nodata where NaN, whatever the nodata value.

    Returns
    -------
    xarray.DataArray
        bool (y, x) on ``da``'s grid (lazy if ``da`` is dask-backed).
    """
    y, x = spatial_dims(da)
    nodata = get_nodata(da)
    floating = np.issubdtype(da.dtype, np.floating) or np.issubdtype(da.dtype, np.complexfloating)
    if floating:
        mask = np.isnan(da)
        if nodata is not None and not _is_nan(nodata):
            mask = mask | (da == nodata)
    elif nodata is not None and not _is_nan(nodata):
        mask = da == nodata
    else:
        mask = xr.zeros_like(da, dtype=bool)
    others = _band_axes(da)
    if others:
        mask = mask.any(dim=others)
    mask = mask.transpose(y, x)
    mask = mask.drop_vars([c for c in mask.coords if c not in grid_coords(da)])
    mask.attrs = {}
    mask.name = "nodata"
    return mask


def valid_mask(da: xr.DataArray) -> xr.DataArray:
    """Boolean (y, x) mask, True where every band holds data (``~nodata_mask``)."""
    out = ~nodata_mask(da)
    out.name = "valid"
    return out


def _shape(da) -> tuple[int, int]:
    y, x = spatial_dims(da)
    return int(da.sizes[y]), int(da.sizes[x])


def assert_same_grid(a: xr.DataArray, b: xr.DataArray, *, rtol: float = 1e-9) -> None:
    """Raise :class:`GridMismatchError` unless ``a`` and ``b`` share a pixel grid.

    Same grid means: same (height, width), affine transforms equal within ``rtol``
    (relative to the pixel size) and the same CRS (or both without one).

    Parameters
    ----------
    a, b : xarray.DataArray
        Rasters to compare.
    rtol : float, optional
        Relative tolerance on the transform coefficients.

    Raises
    ------
    GridMismatchError
    """
    hint = ("reproject one onto the other with `b = b.rio.reproject_match(a)` (for a mask: "
            "`geot2e.geo.mask_onto_grid(mask, da)`, which keeps every pixel a cloud touches)")
    sa, sb = _shape(a), _shape(b)
    if sa != sb:
        raise GridMismatchError(
            f"rasters differ in shape: {sa} vs {sb} (height, width); {hint}, or crop/pad "
            "them to the same extent."
        )
    ca, cb = a.rio.crs, b.rio.crs
    if (ca is None) != (cb is None) or (ca is not None and ca != cb):
        raise GridMismatchError(
            f"rasters differ in CRS: {_crs_name(ca)} vs {_crs_name(cb)}; {hint}"
            + (" (or write the missing CRS with `.rio.write_crs(...)`)." if None in (ca, cb) else ".")
        )
    ta, tb = a.rio.transform(), b.rio.transform()
    va, vb = np.asarray(ta[:6], float), np.asarray(tb[:6], float)
    scale = max(math.hypot(ta.a, ta.d), math.hypot(ta.b, ta.e), 1e-300)
    if not np.all(np.abs(va - vb) <= rtol * np.maximum(np.maximum(np.abs(va), np.abs(vb)), scale)):
        raise GridMismatchError(
            f"rasters differ in their pixel grid (affine transform):\n{ta}\nvs\n{tb};\n{hint}."
        )


def _crs_name(crs) -> str:
    if crs is None:
        return "no CRS"
    try:
        return crs.to_string()
    except Exception:  # pragma: no cover
        return str(crs)
