"""Raster masks from vector geometries, prompt maps and metric dilation.

Geometries are always reprojected to the raster's CRS (the raster is never
resampled) and burnt with :func:`rasterio.features.rasterize` on the raster's own
pixel grid. Dask-backed rasters give dask-backed masks built block by block, equal
to the eager result.

``buffer_m`` (metres on the ground) is applied to the *geometries*, in a local
metric frame: each geometry is mapped to ground metres (east, north) with the
CRS's local Jacobian at the scene centre (:func:`geot2e.geo.gsd.ground_jacobian`),
buffered by ``buffer_m`` there, and mapped back. This is exact at the scene centre
in any CRS (metres, feet, degrees, rotated grids) and off only by the variation of
the projection's scale across the scene (< 0.1 % within a UTM zone; for a
geographic CRS the east-west distance drifts with cos(latitude) away from the
centre row). A negative ``buffer_m`` shrinks polygons.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import dask.array as dsa
import numpy as np
import pandas as pd
import shapely
import shapely.affinity
import xarray as xr
from affine import Affine
from dask.base import tokenize
from rasterio.features import rasterize as _rio_rasterize
from rasterio.warp import transform_bounds

import rioxarray  # noqa: F401

from geot2e.errors import (
    DimensionError,
    GeometryCRSError,
    MissingCRSError,
    NoOverlapWarning,
    ParameterError,
)
from geot2e.geo.grid import assert_same_grid, grid_coords, spatial_dims
from geot2e.geo.gsd import ground_jacobian, gsd as _gsd, to_pyproj_crs

__all__ = [
    "geometry_mask",
    "prompt_map",
    "read_vector",
    "dilate_mask",
    "assert_same_grid",
]


# ----------------------------------------------------------------------------- inputs
def read_vector(path_or_obj: Any, *, crs: Any = None):
    """Read geometries into a :class:`geopandas.GeoDataFrame`.

    Parameters
    ----------
    path_or_obj : str, os.PathLike, GeoDataFrame, GeoSeries, shapely geometry, \
GeoJSON-like dict or a sequence of geometries
        A vector file (any format GDAL/pyogrio reads: GeoPackage, GeoJSON,
        Shapefile, ...) or in-memory geometries.
    crs : CRS-like, optional
        CRS of geometries that carry none (ignored if they have one; a conflicting
        CRS raises :class:`GeometryCRSError`).

    Returns
    -------
    geopandas.GeoDataFrame
    """
    import geopandas as gpd

    obj = path_or_obj
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        if not path.exists() and "://" not in str(obj):
            raise ParameterError(f"vector file not found: {path}")
        try:
            gdf = gpd.read_file(path)
        except Exception as exc:  # pyogrio / fiona errors
            raise ParameterError(f"cannot read vector file {path}: {exc}") from exc
    elif isinstance(obj, gpd.GeoDataFrame):
        gdf = obj
    elif isinstance(obj, gpd.GeoSeries):
        gdf = gpd.GeoDataFrame(geometry=obj)
    elif isinstance(obj, xr.DataArray):
        raise ParameterError(
            "got a DataArray where geometries were expected: a raster mask is used as it is "
            "(on the same grid), not rasterized."
        )
    elif isinstance(obj, shapely.Geometry):
        gdf = gpd.GeoDataFrame(geometry=[obj])
    elif isinstance(obj, dict) or hasattr(obj, "__geo_interface__"):
        gi = obj if isinstance(obj, dict) else obj.__geo_interface__
        kind = gi.get("type")
        if kind == "FeatureCollection":
            gdf = gpd.GeoDataFrame.from_features(gi)
        elif kind == "Feature":
            gdf = gpd.GeoDataFrame.from_features([gi])
        else:
            gdf = gpd.GeoDataFrame(geometry=[shapely.geometry.shape(gi)])
    elif isinstance(obj, Iterable):
        items = list(obj)
        geoms = []
        for g in items:
            if g is None or isinstance(g, shapely.Geometry):
                geoms.append(g)
            elif isinstance(g, dict) or hasattr(g, "__geo_interface__"):
                gi = g if isinstance(g, dict) else g.__geo_interface__
                geoms.append(shapely.geometry.shape(gi.get("geometry", gi)))
            else:
                raise ParameterError(
                    f"cannot use {type(g).__name__} as a geometry; give shapely geometries, "
                    "a GeoDataFrame/GeoSeries or a path to a vector file."
                )
        gdf = gpd.GeoDataFrame(geometry=geoms)
    else:
        raise ParameterError(
            f"cannot read geometries from {type(obj).__name__}; give a GeoDataFrame, GeoSeries, "
            "shapely geometry (or a list of them) or a path to a vector file."
        )
    if crs is not None:
        if gdf.crs is None:
            gdf = gdf.set_crs(to_pyproj_crs(crs))
        elif not gdf.crs.equals(to_pyproj_crs(crs), ignore_axis_order=True):
            raise GeometryCRSError(
                f"crs={to_pyproj_crs(crs).to_string()} was given but the geometries are in "
                f"{gdf.crs.to_string()}; drop crs= (their own CRS is used) or fix the data."
            )
    return gdf


def _check_like(like) -> None:
    """``like=`` must be a georeferenced DataArray: a numpy array has no grid to rasterize onto."""
    if not isinstance(like, (xr.DataArray, xr.Dataset)):
        raise DimensionError(
            f"like must be an xarray.DataArray with a CRS and a transform (e.g. from "
            f"rioxarray.open_rasterio or geot2e.io.open_raster), got {type(like).__name__}; a numpy array has "
            "no grid: wrap it with xarray and write its CRS and transform (da.rio.write_crs(...), "
            "da.rio.write_transform(...))."
        )


def _geometries_in_raster_crs(geoms, like, *, crs, buffer_m: float) -> tuple[list, np.ndarray, int]:
    """Valid, non-empty shapely geometries in ``like``'s CRS, their input row numbers and
    the number of non-empty input geometries."""
    _check_like(like)
    try:
        finite = buffer_m is None or np.isfinite(float(buffer_m))
    except (TypeError, ValueError):
        finite = False
    if not finite:
        raise ParameterError(f"buffer_m must be a finite number of metres (negative shrinks the polygons), got "
                             f"{buffer_m!r}.")
    gdf = read_vector(geoms, crs=crs)
    gs = gdf.geometry
    raster_crs = like.rio.crs
    if raster_crs is not None and gs.crs is None:
        raise GeometryCRSError(
            f"the geometries carry no CRS while the raster is in {raster_crs.to_string()}: "
            "set it with `gdf = gdf.set_crs(...)` or pass crs=<the geometries' CRS>."
        )
    if raster_crs is None and gs.crs is not None:
        raise MissingCRSError(
            f"the raster has no CRS but the geometries are in {gs.crs.to_string()}: write the "
            "raster's CRS with `da = da.rio.write_crs(...)`."
        )
    arr = np.asarray(gs.values, dtype=object)
    keep = np.array([g is not None and not shapely.is_empty(g) for g in arr], dtype=bool)
    rows = np.flatnonzero(keep)
    arr = arr[keep]
    if arr.size == 0:
        return [], rows, 0
    if raster_crs is not None:
        dst = to_pyproj_crs(raster_crs)
        if not gs.crs.equals(dst, ignore_axis_order=True):
            arr = _reproject(arr, gs.crs, dst, like)
    invalid = ~shapely.is_valid(arr)
    if invalid.any():
        arr[invalid] = shapely.make_valid(arr[invalid], method="structure", keep_collapsed=False)
    if buffer_m:
        arr = _buffer_metres(arr, like, buffer_m)
    nonempty = ~shapely.is_empty(arr)
    return list(arr[nonempty]), rows[nonempty], int(keep.sum())


def _footprint_in(like, crs) -> tuple[float, float, float, float] | None:
    """Bounds of ``like``'s footprint seen from ``crs`` (None if not computable)."""
    h, w = like.rio.height, like.rio.width
    t = like.rio.transform()
    corners = [t @ (c, r) for c, r in ((0, 0), (w, 0), (w, h), (0, h))]
    xs, ys = zip(*corners)
    try:
        b = transform_bounds(like.rio.crs, crs, min(xs), min(ys), max(xs), max(ys), densify_pts=21)
    except Exception:
        return None
    if not np.all(np.isfinite(b)) or b[0] >= b[2] or b[1] >= b[3]:
        return None  # e.g. crossing the antimeridian
    return b


def _reproject(arr: np.ndarray, src, dst, like) -> np.ndarray:
    """Reproject geometries; clip those reaching far beyond the raster first.

    A geometry much larger than the raster (e.g. a continent in EPSG:4326 over a
    UTM scene) does not survive vertex-wise reprojection into a local projection.
    Geometries extending more than the footprint's own size beyond it (seen from the
    source CRS) are clipped to that enlarged footprint before reprojection; local
    geometries are reprojected untouched.
    """
    import geopandas as gpd

    arr = arr.copy()
    fp = _footprint_in(like, src)
    if fp is not None:
        left, bottom, right, top = fp
        mx, my = right - left, top - bottom
        box = (left - mx, bottom - my, right + mx, top + my)
        gb = shapely.bounds(arr)
        big = (gb[:, 0] < box[0]) | (gb[:, 1] < box[1]) | (gb[:, 2] > box[2]) | (gb[:, 3] > box[3])
        if big.any():
            arr[big] = shapely.clip_by_rect(arr[big], *box)
    out = np.asarray(gpd.GeoSeries(arr, crs=src).to_crs(dst).values, dtype=object)
    bad = ~np.all(np.isfinite(shapely.bounds(out)), axis=1) & ~shapely.is_empty(out)
    if bad.any():
        raise GeometryCRSError(
            f"{int(bad.sum())} geometries cannot be reprojected from {src.to_string()} to "
            f"{dst.to_string()} near the raster; clip them to the raster's area first."
        )
    return out


def _buffer_metres(arr: np.ndarray, like, buffer_m: float) -> np.ndarray:
    crs = like.rio.crs
    if crs is None:
        raise MissingCRSError(
            "buffer_m needs the raster's CRS to convert metres to pixels: write it with "
            "`da = da.rio.write_crs(...)`."
        )
    t = like.rio.transform()
    cx, cy = t @ (like.rio.width / 2.0, like.rio.height / 2.0)
    j = ground_jacobian(crs, cx, cy)  # CRS units per ground metre
    ji = np.linalg.inv(j)
    to_m = [ji[0, 0], ji[0, 1], ji[1, 0], ji[1, 1],
            -(ji[0, 0] * cx + ji[0, 1] * cy), -(ji[1, 0] * cx + ji[1, 1] * cy)]
    back = [j[0, 0], j[0, 1], j[1, 0], j[1, 1], cx, cy]
    out = []
    for g in arr:
        local = shapely.affinity.affine_transform(g, to_m)
        out.append(shapely.affinity.affine_transform(local.buffer(float(buffer_m)), back))
    out_arr = np.empty(len(out), dtype=object)
    out_arr[:] = out
    return out_arr


# ----------------------------------------------------------------------- rasterizing
def _to_pixel_space(geoms: list, transform: Affine) -> list:
    inv = ~transform
    m = [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f]
    return [shapely.affinity.affine_transform(g, m) for g in geoms]


def _burn(shapes: list, shape: tuple[int, int], offset: tuple[int, int], all_touched: bool, dtype):
    """Rasterize pixel-space (geometry, value) pairs into a block at (row, col) offset."""
    if not shapes:
        return np.zeros(shape, dtype=dtype)
    r0, c0 = offset
    burn_dtype = "uint8" if np.dtype(dtype) == np.bool_ else dtype
    moved = [(shapely.affinity.translate(g, -c0, -r0), v) for g, v in shapes]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NotGeoreferencedWarning for the identity transform
        out = _rio_rasterize(
            moved, out_shape=shape, transform=Affine.identity(), fill=0,
            all_touched=all_touched, dtype=burn_dtype,
        )
    return out.astype(dtype, copy=False)


def _rasterize_like(pix_geoms: list, values: Sequence, like, *, all_touched: bool, dtype):
    """numpy or dask (y, x) array of burnt values on ``like``'s grid."""
    ydim, xdim = spatial_dims(like)
    h, w = int(like.sizes[ydim]), int(like.sizes[xdim])
    data = like.data if isinstance(like, xr.DataArray) else None
    lazy = isinstance(data, dsa.Array)
    shapes = list(zip(pix_geoms, values))
    if not lazy:
        return _burn(shapes, (h, w), (0, 0), all_touched, dtype)
    ax_y, ax_x = like.dims.index(ydim), like.dims.index(xdim)
    ychunks, xchunks = data.chunks[ax_y], data.chunks[ax_x]
    tree = shapely.STRtree(pix_geoms) if pix_geoms else None
    token = tokenize(
        [shapely.to_wkb(g) for g in pix_geoms], list(values), (h, w), ychunks, xchunks,
        all_touched, str(np.dtype(dtype)),
    )
    name = f"geot2e-rasterize-{token}"
    dsk = {}
    r0 = 0
    for i, hc in enumerate(ychunks):
        c0 = 0
        for jx, wc in enumerate(xchunks):
            if tree is None:
                idx = []
            else:
                box = shapely.box(c0 - 1, r0 - 1, c0 + wc + 1, r0 + hc + 1)
                idx = sorted(int(k) for k in tree.query(box))  # keep order: later wins
            sub = [shapes[k] for k in idx]
            dsk[(name, i, jx)] = (_burn, sub, (hc, wc), (r0, c0), all_touched, dtype)
            c0 += wc
        r0 += hc
    return dsa.Array(dsk, name, chunks=(ychunks, xchunks), dtype=np.dtype(dtype))


def _wrap(arr, like, name: str) -> xr.DataArray:
    ydim, xdim = spatial_dims(like)
    out = xr.DataArray(arr, dims=(ydim, xdim), coords=grid_coords(like), name=name)
    crs = like.rio.crs
    if crs is not None:
        out = out.rio.write_crs(crs)
    out = out.rio.write_transform(like.rio.transform())
    return out


def _overlap_check(pix_geoms: list, n_in: int, like, *, burnt=None) -> None:
    if n_in == 0:
        return
    h, w = like.rio.height, like.rio.width
    footprint = shapely.box(0, 0, w, h)
    if not pix_geoms or not np.any(
        shapely.intersects(np.asarray(pix_geoms, dtype=object), footprint)
    ):
        warnings.warn(
            "the geometries do not overlap the raster: the mask is all False. Check that they "
            "cover the raster's area and that their CRS is right.",
            NoOverlapWarning,
            stacklevel=3,
        )
    elif burnt is not None and not burnt.any():
        warnings.warn(
            "the geometries overlap the raster but cover no pixel centre: the mask is all False; "
            "use all_touched=True or buffer_m= to include touched pixels.",
            NoOverlapWarning,
            stacklevel=3,
        )


def geometry_mask(
    geoms: Any,
    like: xr.DataArray,
    *,
    all_touched: bool = True,
    buffer_m: float = 0.0,
    crs: Any = None,
) -> xr.DataArray:
    """Rasterize geometries to a boolean mask on a raster's grid.

    Parameters
    ----------
    geoms : GeoDataFrame, GeoSeries, shapely geometry, list of geometries or path
        The geometries, in any CRS (reprojected to the raster's CRS). Invalid
        geometries are repaired with :func:`shapely.make_valid`.
    like : xarray.DataArray
        The raster whose pixel grid (shape, transform, CRS, chunks) the mask takes.
    all_touched : bool, optional
        Burn every pixel a geometry touches (default), or only pixels whose centre
        lies inside.
    buffer_m : float, optional
        Grow (or with a negative value shrink) the geometries by this many metres on
        the ground before rasterizing (see the module notes).
    crs : CRS-like, optional
        CRS of geometries that carry none.

    Returns
    -------
    xarray.DataArray
        bool (y, x), True inside the geometries, with the raster's y/x coordinates
        and CRS; dask-backed if ``like`` is.

    Raises
    ------
    GeometryCRSError
        The geometries have no CRS (and ``crs=`` is not given) while the raster has one.
    MissingCRSError
        The raster has no CRS while the geometries have one.

    Warns
    -----
    NoOverlapWarning
        Non-empty geometries that miss the raster (the mask is all False).
    """
    geo_list, _, n_in = _geometries_in_raster_crs(geoms, like, crs=crs, buffer_m=buffer_m)
    pix = _to_pixel_space(geo_list, like.rio.transform())
    arr = _rasterize_like(pix, [1] * len(pix), like, all_touched=all_touched, dtype=bool)
    _overlap_check(pix, n_in, like, burnt=None if isinstance(arr, dsa.Array) else arr)
    return _wrap(arr, like, "mask")


def prompt_map(
    gdf: Any,
    column: str,
    like: xr.DataArray,
    *,
    all_touched: bool = True,
    crs: Any = None,
) -> tuple[xr.DataArray, list[str]]:
    """Label raster of per-polygon prompts.

    Parameters
    ----------
    gdf : GeoDataFrame or path to a vector file
        Polygons with a text column.
    column : str
        Name of the column holding each polygon's prompt. Missing values become "".
    like : xarray.DataArray
        The raster whose grid the labels take.
    all_touched : bool, optional
        As in :func:`geometry_mask`.
    crs : CRS-like, optional
        CRS of geometries that carry none.

    Returns
    -------
    labels : xarray.DataArray
        int32 (y, x): 0 where no polygon, ``i`` where prompt ``prompts[i - 1]``
        applies. Where polygons overlap, the later row wins.
    prompts : list of str
        Distinct prompts in order of first appearance.
    """
    frame = read_vector(gdf, crs=crs)
    if column not in frame.columns:
        raise ParameterError(
            f"column {column!r} not found; the vector data have columns {list(frame.columns)}."
        )
    prompts: list[str] = []
    labels = []
    for value in frame[column]:
        text = "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)
        if text not in prompts:
            prompts.append(text)
        labels.append(prompts.index(text) + 1)
    kept_geoms, rows, n_in = _geometries_in_raster_crs(frame, like, crs=None, buffer_m=0.0)
    kept_labels = [labels[r] for r in rows]
    pix = _to_pixel_space(kept_geoms, like.rio.transform())
    arr = _rasterize_like(pix, kept_labels, like, all_touched=all_touched, dtype=np.int32)
    _overlap_check(pix, n_in, like, burnt=None if isinstance(arr, dsa.Array) else arr)
    return _wrap(arr, like, "prompt_label"), prompts


# ------------------------------------------------------------------------- dilation
def _structuring_element(rx: float, ry: float) -> np.ndarray:
    ix, iy = int(np.floor(rx + 1e-9)), int(np.floor(ry + 1e-9))
    yy, xx = np.mgrid[-iy:iy + 1, -ix:ix + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        dx = np.where(xx == 0, 0.0, xx / max(rx, 1e-12))
        dy = np.where(yy == 0, 0.0, yy / max(ry, 1e-12))
    return (dx * dx + dy * dy) <= 1.0 + 1e-9


def dilate_mask(mask, buffer_m: float, *, gsd: float | tuple[float, float] | None = None):
    """Grow a boolean (y, x) mask by ``buffer_m`` metres on the ground.

    Pixels within an ellipse of radii ``buffer_m / gx`` by ``buffer_m / gy`` pixels
    (the per-axis GSD) of a True pixel become True.

    Parameters
    ----------
    mask : xarray.DataArray or numpy.ndarray
        bool (y, x); numpy input needs ``gsd=``.
    buffer_m : float
        Distance in metres (>= 0).
    gsd : float or (float, float), optional
        Metres per pixel (or per x and y pixel); default: measured from ``mask``.

    Returns
    -------
    Same type as ``mask``; dask arrays stay lazy (``map_overlap``, equal to eager).
    """
    if buffer_m is None or buffer_m == 0:
        return mask
    if not np.isfinite(buffer_m) or buffer_m < 0:
        raise ParameterError(f"buffer_m must be a finite distance >= 0 in metres, got {buffer_m}.")
    if gsd is None:
        if not isinstance(mask, xr.DataArray):
            raise MissingCRSError(
                "buffer_m on a numpy mask needs its pixel size: pass gsd=<metres per pixel>, or "
                "give a DataArray with a CRS (`da.rio.write_crs(...)`)."
            )
        gx, gy = _gsd(mask, per_axis=True)
    elif np.ndim(gsd) == 0:
        gx = gy = float(gsd)
    else:
        gx, gy = (float(v) for v in gsd)
    se = _structuring_element(buffer_m / gx, buffer_m / gy)
    if se.size == 1:
        return mask
    from scipy import ndimage

    iy, ix = se.shape[0] // 2, se.shape[1] // 2

    def _dilate(block):
        return ndimage.binary_dilation(np.asarray(block, bool), structure=se)

    data = mask.data if isinstance(mask, xr.DataArray) else mask
    if isinstance(data, dsa.Array):
        out = data.astype(bool).map_overlap(
            _dilate, depth={0: iy, 1: ix}, boundary=False, dtype=bool, trim=True
        )
    else:
        out = _dilate(data)
    if isinstance(mask, xr.DataArray):
        return mask.copy(data=out)
    return out
