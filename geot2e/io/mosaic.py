"""Many GeoTIFFs as one lazy, CRS-aware mosaic; and the same mosaic written to Zarr.

The mosaic grid is computed from file metadata only (no pixel is read when opening).
Each dask block then reads, from each file that overlaps it, just the pixels it needs:
a plain windowed read for files already on the mosaic's grid, or a GDAL ``WarpedVRT``
onto the mosaic's grid for files in another CRS or at another resolution. Overlaps are
resolved like :func:`rioxarray.merge.merge_arrays` (``method="first"``): a pixel takes
its value from the first file in ``paths`` that has valid data there.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import xarray as xr

from geot2e.errors import GridMismatchError, MissingCRSError, OutputPathError, ParameterError

__all__ = ["open_mosaic", "build_zarr_mosaic", "MosaicGrid"]

_RESAMPLING = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode")


@dataclass(frozen=True)
class _Source:
    """What a dask task needs to read one file onto the mosaic grid (small, picklable)."""

    path: str
    count: int
    nodata: float | None
    aligned: bool
    row_off: int  # offset of the file's pixel (0, 0) in the mosaic grid (aligned files)
    col_off: int
    rows: tuple[int, int]  # footprint rows/cols in the mosaic grid (half-open, clipped)
    cols: tuple[int, int]


@dataclass(frozen=True)
class MosaicGrid:
    """The mosaic's pixel grid: CRS (WKT), affine transform, height, width."""

    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    height: int
    width: int


def _snap(value: float, anchor: float, step: float, up: bool) -> float:
    n = (value - anchor) / step
    r = round(n)
    if abs(n - r) < 1e-6:
        n = r
    else:
        n = math.ceil(n) if up else math.floor(n)
    return anchor + n * step


def _resolution(resolution: Any) -> tuple[float, float] | None:
    if resolution is None:
        return None
    if isinstance(resolution, (int, float)):
        resolution = (resolution, resolution)
    try:
        xres, yres = (abs(float(v)) for v in resolution)
    except (TypeError, ValueError):
        raise ParameterError(
            f"resolution={resolution!r} is not understood; pass a number or (xres, yres) in CRS units."
        ) from None
    if not (xres > 0 and yres > 0 and math.isfinite(xres) and math.isfinite(yres)):
        raise ParameterError(f"resolution must be positive and finite, got {resolution!r}.")
    return xres, yres


def _plan(paths, crs, resolution, bands):
    """Read metadata of every file and compute the mosaic grid and per-file sources."""
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.warp import calculate_default_transform, transform_bounds

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(os.fspath(p)).expanduser() for p in paths]
    if not paths:
        raise ParameterError("open_mosaic needs at least one raster path.")
    infos = []
    for p in paths:
        if not p.exists():
            raise OutputPathError(f"{p} does not exist; check the list of rasters to mosaic.")
        with rasterio.open(p) as src:
            if src.crs is None:
                raise MissingCRSError(
                    f"{p} has no CRS, so it cannot be placed in a mosaic; assign one first "
                    "(e.g. with rioxarray: da.rio.write_crs(...).rio.to_raster(...))."
                )
            infos.append(
                dict(
                    path=str(p), crs=src.crs, transform=src.transform, width=src.width,
                    height=src.height, count=src.count, dtype=src.dtypes[0],
                    nodata=src.nodata, bounds=src.bounds, descriptions=src.descriptions,
                )
            )
    counts = {i["count"] for i in infos}
    if len(counts) != 1:
        raise GridMismatchError(
            "the rasters have different band counts "
            f"({[(Path(i['path']).name, i['count']) for i in infos]}); mosaic files with the "
            "same bands, or select them with bands=[...]."
        )
    count = infos[0]["count"]
    if bands is None:
        indexes = list(range(1, count + 1))
    else:
        indexes = [int(b) for b in ([bands] if isinstance(bands, (int, np.integer)) else bands)]
        bad = [b for b in indexes if not 1 <= b <= count]
        if bad:
            raise ParameterError(f"bands {bad} do not exist; bands are numbered 1..{count}.")
    first = infos[0]
    dst_crs = CRS.from_user_input(crs) if crs is not None else first["crs"]
    res = _resolution(resolution)
    first_same_crs = first["crs"] == dst_crs
    if res is None:
        if first_same_crs:
            res = (abs(first["transform"].a), abs(first["transform"].e))
        else:
            t, _, _ = calculate_default_transform(
                first["crs"], dst_crs, first["width"], first["height"], *first["bounds"]
            )
            res = (abs(t.a), abs(t.e))
    xres, yres = res
    dst_bounds = []
    for info in infos:
        if info["crs"] == dst_crs:
            dst_bounds.append(tuple(info["bounds"]))
        else:
            dst_bounds.append(transform_bounds(info["crs"], dst_crs, *info["bounds"], densify_pts=21))
    left = min(b[0] for b in dst_bounds)
    bottom = min(b[1] for b in dst_bounds)
    right = max(b[2] for b in dst_bounds)
    top = max(b[3] for b in dst_bounds)
    ft = first["transform"]
    if first_same_crs and ft.b == 0 and ft.d == 0:
        ax, ay = ft.c, ft.f  # keep the first file's pixels where they are
    else:
        ax, ay = left, top
    left, right = _snap(left, ax, xres, False), _snap(right, ax, xres, True)
    top, bottom = _snap(top, ay, -yres, False), _snap(bottom, ay, -yres, True)
    width = int(round((right - left) / xres))
    height = int(round((top - bottom) / yres))
    dst_transform = Affine(xres, 0.0, left, 0.0, -yres, top)
    sources = []
    for info, b in zip(infos, dst_bounds):
        t = info["transform"]
        col_f = (t.c - left) / xres
        row_f = (top - t.f) / yres
        aligned = (
            info["crs"] == dst_crs
            and t.b == 0 and t.d == 0
            and abs(t.a - xres) <= 1e-9 * xres and abs(-t.e - yres) <= 1e-9 * yres
            and abs(col_f - round(col_f)) < 1e-6 and abs(row_f - round(row_f)) < 1e-6
        )
        margin = 0 if aligned else 1
        c0 = max(0, math.floor((b[0] - left) / xres + 1e-6) - margin)
        c1 = min(width, math.ceil((b[2] - left) / xres - 1e-6) + margin)
        r0 = max(0, math.floor((top - b[3]) / yres + 1e-6) - margin)
        r1 = min(height, math.ceil((top - b[1]) / yres - 1e-6) + margin)
        sources.append(
            _Source(
                path=info["path"], count=count, nodata=info["nodata"], aligned=aligned,
                row_off=int(round(row_f)) if aligned else 0,
                col_off=int(round(col_f)) if aligned else 0,
                rows=(r0, r1), cols=(c0, c1),
            )
        )
    dtype = np.result_type(*[np.dtype(i["dtype"]) for i in infos])
    grid = MosaicGrid(dst_crs.to_wkt(), tuple(dst_transform)[:6], height, width)
    return grid, tuple(sources), tuple(indexes), dtype, first


def _valid(data: np.ndarray, nodata: float | None) -> np.ndarray:
    if nodata is None:
        return np.ones(data.shape, dtype=bool)
    if isinstance(nodata, float) and math.isnan(nodata):
        return ~np.isnan(data)
    return data != nodata


def _read_block(sources, grid: MosaicGrid, indexes, dtype, fill, resampling, block_info=None):
    """Fill one mosaic block from the files that overlap it (first valid file wins)."""
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    (b0, b1), (r0, r1), (c0, c1) = block_info[None]["array-location"]
    band_idx = indexes[b0:b1]
    out = np.full((len(band_idx), r1 - r0, c1 - c0), fill, dtype=dtype)
    filled = np.zeros(out.shape, dtype=bool)
    for src_info in sources:
        rr0, rr1 = max(r0, src_info.rows[0]), min(r1, src_info.rows[1])
        cc0, cc1 = max(c0, src_info.cols[0]), min(c1, src_info.cols[1])
        if rr0 >= rr1 or cc0 >= cc1:
            continue
        window = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
        with rasterio.open(src_info.path) as src:
            if src_info.aligned:
                sw = Window(cc0 - src_info.col_off, rr0 - src_info.row_off, cc1 - cc0, rr1 - rr0)
                data = src.read(band_idx, window=sw)
                valid = _valid(data, src_info.nodata)
            else:
                kwargs = dict(
                    crs=grid.crs_wkt, transform=Affine(*grid.transform), width=grid.width,
                    height=grid.height, resampling=Resampling[resampling],
                )
                if src_info.nodata is None:
                    with WarpedVRT(src, add_alpha=True, **kwargs) as vrt:
                        data = vrt.read(band_idx, window=window)
                        alpha = vrt.read(src_info.count + 1, window=window)
                    valid = np.broadcast_to(alpha > 0, data.shape)
                else:
                    with WarpedVRT(src, nodata=src_info.nodata, **kwargs) as vrt:
                        data = vrt.read(band_idx, window=window)
                    valid = _valid(data, src_info.nodata)
        ys, xs = slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0)
        take = valid & ~filled[:, ys, xs]
        np.copyto(out[:, ys, xs], data.astype(dtype, copy=False), where=take)
        filled[:, ys, xs] |= valid
        if filled.all():
            break
    return out


def _dask_chunks(chunks, shape, dtype):
    import dask.array as dsa

    if isinstance(chunks, bool):
        raise ParameterError("chunks must be 'auto', an int, a tuple or a dict, not a bool.")
    if isinstance(chunks, (int, np.integer)):
        chunks = (shape[0], int(chunks), int(chunks))
    elif isinstance(chunks, dict):
        chunks = (
            chunks.get("band", shape[0]), chunks.get("y", 512), chunks.get("x", 512)
        )
    elif isinstance(chunks, tuple) and len(chunks) == 2:
        chunks = (shape[0],) + chunks
    elif chunks != "auto" and not isinstance(chunks, tuple):
        raise ParameterError(
            f"chunks={chunks!r} is not understood; pass None, 'auto', an int or a dict "
            "such as {'y': 512, 'x': 512}."
        )
    return dsa.core.normalize_chunks(chunks, shape, dtype=dtype, previous_chunks=(shape[0], 512, 512))


def open_mosaic(
    paths: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    crs: Any = None,
    resolution: float | tuple[float, float] | None = None,
    chunks: None | str | int | tuple | dict = 512,
    bands: Sequence[int] | int | None = None,
    nodata: float | None = None,
    resampling: str = "nearest",
) -> xr.DataArray:
    """Open many GeoTIFFs (or any GDAL rasters) as one lazy, CRS-aware mosaic.

    Parameters
    ----------
    paths : sequence of str or os.PathLike
        The rasters, all with the same band count. Where they overlap, the first file in
        this list with valid (non-nodata) data wins, as in
        ``rioxarray.merge.merge_arrays``.
    crs : anything rasterio's ``CRS.from_user_input`` takes, optional
        Mosaic CRS; default the first file's. Files in another CRS are warped onto the
        mosaic grid (GDAL ``WarpedVRT``) as their blocks are read.
    resolution : float or (float, float), optional
        Pixel size in CRS units; default the first file's (in the mosaic CRS).
    chunks : None, "auto", int, tuple or dict, default 512
        Dask chunks (an int is pixels per side; all bands in one chunk). ``None`` reads
        the whole mosaic into memory now.
    bands : int or sequence of int, optional
        1-based band numbers to keep.
    nodata : float, optional
        Nodata of the mosaic; default the first file's. Pixels no file covers get this
        value (0 when there is none).
    resampling : str, default "nearest"
        GDAL resampling for warped files (nearest, bilinear, cubic, cubic_spline,
        lanczos, average, mode).

    Returns
    -------
    xarray.DataArray
        (band, y, x), dask-backed unless ``chunks=None``, with ``rio.crs``,
        ``rio.transform()`` and ``rio.nodata`` set. Nothing is read until computed.

    Raises
    ------
    MissingCRSError
        A file has no CRS.
    GridMismatchError
        The files have different band counts.
    """
    import dask.array as dsa
    from dask.base import tokenize

    if resampling not in _RESAMPLING:
        raise ParameterError(f"resampling={resampling!r} is not one of {_RESAMPLING}.")
    grid, sources, indexes, dtype, first = _plan(paths, crs, resolution, bands)
    if nodata is None:
        nodata = first["nodata"]
    fill = 0 if nodata is None else nodata
    shape = (len(indexes), grid.height, grid.width)
    dchunks = _dask_chunks(512 if chunks is None else chunks, shape, dtype)
    mtimes = [os.stat(s.path).st_mtime_ns for s in sources]
    name = "open_mosaic-" + tokenize(sources, mtimes, grid, indexes, str(dtype), fill, resampling)
    data = dsa.map_blocks(
        _read_block, sources, grid, indexes, dtype, fill, resampling,
        chunks=dchunks, dtype=dtype, meta=np.empty((0, 0, 0), dtype=dtype), name=name,
    )
    from affine import Affine

    transform = Affine(*grid.transform)
    xs = transform.c + transform.a * (np.arange(grid.width) + 0.5)
    ys = transform.f + transform.e * (np.arange(grid.height) + 0.5)
    da = xr.DataArray(
        data, dims=("band", "y", "x"), coords={"band": list(indexes), "y": ys, "x": xs}
    )
    da.name = None  # not the dask graph name
    descriptions = [first["descriptions"][i - 1] for i in indexes]
    if any(descriptions):
        names = tuple(d or "" for d in descriptions)
        da.attrs["long_name"] = names if len(names) > 1 else names[0]
    da = da.rio.write_crs(grid.crs_wkt).rio.write_transform(transform)
    if nodata is not None:
        da = da.rio.write_nodata(nodata, encoded=False)
    if chunks is None:
        da = da.load()
    return da


def build_zarr_mosaic(
    paths: Sequence[str | os.PathLike],
    store: str | os.PathLike,
    *,
    crs: Any = None,
    resolution: float | tuple[float, float] | None = None,
    chunks: int = 512,
    overwrite: bool = False,
    bands: Sequence[int] | int | None = None,
    nodata: float | None = None,
    resampling: str = "nearest",
    attrs: dict | None = None,
) -> Path:
    """Write the mosaic of many GeoTIFFs into a Zarr v3 store, one chunk at a time.

    Same options and overlap rule as :func:`open_mosaic`. Each Zarr chunk is one dask
    task (read the overlapping files, write the chunk), so memory stays at a few chunks
    per worker whatever the mosaic size. Open the result with :func:`geot2e.io.open_zarr`
    or :func:`geot2e.io.open_raster`.

    Parameters
    ----------
    paths : sequence of str or os.PathLike
        The rasters.
    store : str or os.PathLike
        Directory of the new store.
    chunks : int, default 512
        Zarr (and dask) chunk size in pixels along y and x; all bands in one chunk.
    overwrite : bool, default False
        Replace an existing store.
    attrs : dict, optional
        Extra group attributes.

    Returns
    -------
    pathlib.Path
        The store path.

    Raises
    ------
    OutputExistsError
        The store exists and ``overwrite`` is False (checked before reading any file).
    OutputPathError
        The parent directory is missing or read-only.
    """
    from geot2e.io._paths import check_output_path
    from geot2e.io.zarr_store import create_zarr_like, write_zarr_region

    if not isinstance(chunks, (int, np.integer)) or isinstance(chunks, bool) or chunks < 1:
        raise ParameterError(f"chunks must be a positive int (pixels per side), got {chunks!r}.")
    check_output_path(store, overwrite=overwrite, kind="store")
    mosaic = open_mosaic(
        paths, crs=crs, resolution=resolution, chunks=int(chunks), bands=bands,
        nodata=nodata, resampling=resampling,
    )
    dest = create_zarr_like(mosaic, store, chunks=int(chunks), overwrite=overwrite, attrs=attrs)
    write_zarr_region(mosaic, dest, {"y": slice(None), "x": slice(None)})
    return dest
