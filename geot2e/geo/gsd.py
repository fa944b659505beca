"""Ground sample distance (GSD): metres on the ground per pixel.

The GSD is a ground distance, not a grid unit. It is measured at the scene centre.

Projected CRS
    The pixel's column and row vectors come from the affine transform (so rotation
    and shear are handled) in CRS units. They are mapped to ground metres (east,
    north) with the inverse of the projection's local Jacobian: the derivatives of
    the CRS's forward transformation with respect to longitude and latitude (central
    finite differences of 1e-6 rad, through pyproj, which also applies the axis unit,
    e.g. US survey feet), scaled by the radii of curvature of the CRS's own ellipsoid.
    For a conformal CRS this equals "grid length x unit factor / scale factor"
    (``pyproj.Proj(crs).get_factors``); it is also right for non-conformal
    projections, grids not aligned with north, and for EPSG:3857, whose spherical
    formulas on WGS84 coordinates make ``get_factors`` wrong by up to 0.7 % in y.
    Web Mercator at 25°N gives ~0.905 of its grid size.
Geographic CRS
    Geodesic length (``crs.get_geod().inv``) of one pixel step along the column and
    row vectors, centred on the scene centre.

Transforms follow the rasterio convention: x is easting/longitude, y northing/latitude.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyproj
from affine import Affine

from geot2e.errors import MissingCRSError, ParameterError

__all__ = ["gsd", "gsd_from_transform", "ground_jacobian", "to_pyproj_crs"]


def to_pyproj_crs(crs: Any) -> pyproj.CRS:
    """A horizontal :class:`pyproj.CRS` from anything pyproj or rasterio accept.

    Compound CRSs give their horizontal part, bound CRSs their source CRS.
    """
    if crs is None:
        raise MissingCRSError("no CRS given")
    try:
        out = pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError as exc:
        raise ParameterError(f"not a valid CRS: {crs!r} ({exc})") from exc
    if out.is_bound and out.source_crs is not None:
        out = out.source_crs
    if out.is_compound:
        out = next((c for c in out.sub_crs_list if c.is_projected or c.is_geographic), out)
    return out


def _axis_factors(crs: pyproj.CRS) -> tuple[float, float]:
    """Unit conversion factors (to metres, or to radians for angles) of the x and y axes."""
    axes = list(crs.axis_info)
    if not axes:
        return 1.0, 1.0
    xf = yf = None
    for ax in axes:
        d = (ax.direction or "").lower()
        if d in ("east", "west") and xf is None:
            xf = ax.unit_conversion_factor
        elif d in ("north", "south") and yf is None:
            yf = ax.unit_conversion_factor
    if xf is None or yf is None:  # unusual axis directions: transforms are (x, y) ordered
        xf = xf or axes[0].unit_conversion_factor
        yf = yf or axes[min(1, len(axes) - 1)].unit_conversion_factor
    return float(xf), float(yf)


def _centre_lonlat(crs: pyproj.CRS, x: float, y: float) -> tuple[float, float]:
    tr = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    lon, lat = tr.transform(x, y, errcheck=False)
    return float(lon), float(lat)


def _radii(crs: pyproj.CRS, lat: float) -> tuple[float, float]:
    """Meridional (M) and prime-vertical (N) radii of curvature in metres at ``lat``."""
    ell = crs.ellipsoid
    a = ell.semi_major_metre
    b = ell.semi_minor_metre
    e2 = 1.0 - (b * b) / (a * a)
    s = math.sin(math.radians(lat))
    w = 1.0 - e2 * s * s
    return a * (1.0 - e2) / w**1.5, a / math.sqrt(w)


_STEP_RAD = 1e-6  # finite-difference step in longitude/latitude (about 6 m)


def ground_jacobian(crs: Any, x: float, y: float) -> np.ndarray:
    """Local linear map from ground metres (east, north) to CRS units (x, y).

    Parameters
    ----------
    crs : CRS-like
        Projected or geographic CRS.
    x, y : float
        Point in CRS coordinates (easting/longitude first, as in rasterio
        transforms).

    Returns
    -------
    numpy.ndarray
        2x2 matrix ``J`` with ``[dx, dy] = J @ [east_m, north_m]``: CRS units per
        ground metre. Geographic CRSs use the ellipsoid's radii of curvature; projected
        CRSs the finite-difference derivatives of the projection (see module notes).
    """
    crs = to_pyproj_crs(crs)
    lon, lat = _centre_lonlat(crs, x, y)
    if crs.is_geographic:
        xf, yf = _axis_factors(crs)
        lat_deg = math.degrees(lat * yf)
        m, n = _radii(crs, lat_deg)
        coslat = math.cos(math.radians(lat_deg))
        # radians per metre, then CRS angular units (xf, yf are radians per unit)
        return np.array([[1.0 / (n * coslat) / xf, 0.0], [0.0, 1.0 / m / yf]])
    if not crs.is_projected:
        raise ParameterError(
            f"cannot measure ground distances in a {crs.type_name} CRS ({crs.name}); "
            "pass gsd= explicitly."
        )
    geo = crs.geodetic_crs
    gxf, gyf = _axis_factors(geo)  # radians per angular unit
    lat_deg = math.degrees(lat * gyf) if np.isfinite(lat) else lat
    if not (np.isfinite(lon) and np.isfinite(lat)) or abs(lat_deg) > 90.0 - 1e-4:
        raise ParameterError(
            f"the scene centre ({x}, {y}) has no usable longitude/latitude in {crs.name!r} "
            f"(got {lon}, {lat}); reproject the raster or pass gsd= explicitly."
        )
    fwd = pyproj.Transformer.from_crs(geo, crs, always_xy=True)
    d = _STEP_RAD
    dl, dp = d / gxf, d / gyf
    px, py = fwd.transform(
        [lon - dl, lon + dl, lon, lon], [lat, lat, lat - dp, lat + dp], errcheck=False
    )
    px, py = np.asarray(px, float), np.asarray(py, float)
    d_lam = np.array([px[1] - px[0], py[1] - py[0]]) / (2 * d)  # CRS units per radian
    d_phi = np.array([px[3] - px[2], py[3] - py[2]]) / (2 * d)
    m, n = _radii(geo, lat_deg)
    j = np.column_stack([d_lam / (n * math.cos(math.radians(lat_deg))), d_phi / m])
    if not np.all(np.isfinite(j)) or abs(np.linalg.det(j)) == 0.0:
        raise ParameterError(
            f"the projection {crs.name!r} is undefined or singular at lon={lon:.6f}, "
            f"lat={lat:.6f} (the scene centre): reproject the raster or pass gsd= explicitly."
        )
    return j


def gsd_from_transform(
    transform: Affine | tuple,
    crs: Any,
    shape: tuple[int, int],
    *,
    per_axis: bool = False,
) -> float | tuple[float, float]:
    """GSD of a pixel grid given by its affine transform, CRS and shape.

    Parameters
    ----------
    transform : affine.Affine or 6-tuple
        Pixel-to-CRS transform (rasterio convention).
    crs : CRS-like
        Anything :func:`pyproj.CRS.from_user_input` accepts (rasterio CRS, EPSG
        code, WKT, PROJ string).
    shape : (int, int)
        (height, width) of the grid; the GSD is measured at its centre.
    per_axis : bool, optional
        Return ``(gx, gy)``: ground length of one column step and one row step.

    Returns
    -------
    float or (float, float)
        Metres per pixel: geometric mean ``sqrt(gx * gy)``, or both.

    Raises
    ------
    MissingCRSError
        ``crs`` is None.
    ParameterError
        The CRS is neither projected nor geographic or is undefined at the centre.
    """
    if crs is None:
        raise MissingCRSError(
            "cannot compute the GSD without a CRS: write one with "
            "`da = da.rio.write_crs('EPSG:....')` or pass gsd= explicitly."
        )
    t = transform if isinstance(transform, Affine) else Affine(*tuple(transform)[:6])
    crs = to_pyproj_crs(crs)
    height, width = int(shape[0]), int(shape[1])
    cx, cy = t @ (width / 2.0, height / 2.0)
    col = np.array([t.a, t.d], float)  # one step to the next column
    row = np.array([t.b, t.e], float)  # one step to the next row
    if crs.is_geographic:
        gx, gy = _geodesic_steps(crs, cx, cy, col, row)
    else:
        j = ground_jacobian(crs, cx, cy)
        inv = np.linalg.inv(j)
        gx = float(np.linalg.norm(inv @ col))
        gy = float(np.linalg.norm(inv @ row))
    if not (np.isfinite(gx) and np.isfinite(gy)) or gx <= 0 or gy <= 0:
        raise ParameterError(
            f"could not measure a positive finite GSD (got {gx}, {gy}) for transform {tuple(t)[:6]} "
            f"in {crs.name!r}; check the transform or pass gsd= explicitly."
        )
    if per_axis:
        return gx, gy
    return math.sqrt(gx * gy)


def _geodesic_steps(crs, cx, cy, col, row) -> tuple[float, float]:
    xf, yf = _axis_factors(crs)
    to_deg = np.array([math.degrees(xf), math.degrees(yf)])
    geod = crs.get_geod()
    c = np.array([cx, cy], float) * to_deg
    out = []
    for v in (col, row):
        d = v * to_deg / 2.0
        lon0, lat0 = c - d
        lon1, lat1 = c + d
        lat0, lat1 = (min(90.0, max(-90.0, lat)) for lat in (lat0, lat1))
        _, _, dist = geod.inv(lon0, lat0, lon1, lat1)
        out.append(float(dist))
    return out[0], out[1]


def gsd(da, *, per_axis: bool = False) -> float | tuple[float, float]:
    """Metres on the ground per pixel at the scene centre.

    Parameters
    ----------
    da : xarray.DataArray or xarray.Dataset
        A georeferenced raster (rioxarray), numpy- or dask-backed.
    per_axis : bool, optional
        Return ``(gx, gy)``, the ground lengths of a column step and a row step,
        instead of their geometric mean.

    Returns
    -------
    float or (float, float)

    Raises
    ------
    MissingCRSError
        The raster has no CRS.

    Examples
    --------
    >>> geot2e.gsd(da)                   # doctest: +SKIP
    29.99...
    """
    import xarray as xr

    if not isinstance(da, (xr.DataArray, xr.Dataset)):
        from geot2e.errors import DimensionError

        raise DimensionError(
            f"gsd needs a georeferenced xarray.DataArray (e.g. from rioxarray.open_rasterio or "
            f"geot2e.io.open_raster), got {type(da).__name__}: a bare array has no pixel size or CRS. For a "
            "transform and CRS you have, use geot2e.geo.gsd_from_transform(transform, crs, (height, width))."
        )
    crs = da.rio.crs
    if crs is None:
        raise MissingCRSError(
            "the raster has no CRS, so its ground sample distance is unknown: write one with "
            "`da = da.rio.write_crs('EPSG:....')`, or pass gsd=<metres per pixel> explicitly."
        )
    return gsd_from_transform(
        da.rio.transform(), crs, (da.rio.height, da.rio.width), per_axis=per_axis
    )


def gsd_rows(transform: Affine | tuple, crs: Any, shape: tuple[int, int]) -> np.ndarray:
    """Ground sample distance of every row of a grid (at the row's centre column), in metres.

    On a geographic grid the ground length of a column step shrinks with the cosine of the
    latitude, so one GSD for the whole raster is wrong away from its centre: a window taken
    at 60° N of a global plate carrée has pixels about 0.7 times as long as at the equator
    (geometric mean of x and y). Training windows use the GSD of their own rows.
    """
    t = transform if isinstance(transform, Affine) else Affine(*tuple(transform)[:6])
    height, width = int(shape[0]), int(shape[1])
    return np.array([gsd_from_transform(t @ Affine.translation(0, r), crs, (1, width)) for r in range(height)])
