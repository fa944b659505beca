"""Zarr v3 raster stores: create on a grid, write regions, reopen, check, resume.

Layout of a store written by geot2e (a directory)::

    store/
      zarr.json                group attrs: "geot2e-store" (format, variable, dims), crs_wkt,
                               transform (a, b, c, d, e, f of the affine), nodata and
                               the geot2e_* provenance attrs
      <variable>/              the raster, dims (band, y, x) or (y, x), in its own dtype;
                               Zarr fill_value = nodata; CF attribute grid_mapping =
                               "spatial_ref"; the nodata value as the attribute "nodata"
                               (rioxarray reads it), not as CF "_FillValue" -- except NaN
      band/ y/ x/ spatial_ref/ coordinates (spatial_ref carries the CRS as crs_wkt and the
                               exact GeoTransform, rioxarray style)

Readable without geot2e: ``xr.open_zarr(store, decode_coords="all")["data"]`` has
``.rio.crs``, ``.rio.transform()`` and ``.rio.nodata``, and keeps the stored dtype (a
uint8 raster stays uint8: since no integer nodata is written as ``_FillValue``, xarray's
CF decoding has nothing to mask, so it does not turn the array into float with NaN). A
float raster whose nodata is NaN keeps ``_FillValue = NaN``, which decodes to the same
values. Stores written by older versions (``_FillValue`` = nodata) are still read by
:func:`open_zarr` as they were written.
      synthesized/             optional bool (y, x) coordinate
      .geot2e_done/            tile-completion ledger, an (empty) Zarr subgroup holding one
        <key>                  empty file per finished tile, created only after that
                               tile's region write returned; its attribute "blocks" holds
                               the store's chunk grid (rows, columns of chunks)

Unfinished stores: when the ledger lists some blocks of the chunk grid (keys ``"i_j"``,
as :func:`geot2e.process_zarr` writes them) but not all, the store is unfinished (a killed
or failed job): the missing blocks read as nodata. :func:`open_zarr` (and
:func:`geot2e.io.open_raster`) then warns with :class:`IncompleteStoreWarning`, and
:func:`geot2e.process_zarr` refuses it as input (:class:`IncompleteStoreError`). Resume the
job that wrote it (the same call: finished blocks are skipped). A store whose ledger is empty
(written in one call, e.g. by :func:`build_zarr_mosaic`, or by region writes without
``done_key``) is not judged.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import xarray as xr

from geot2e.errors import (
    DimensionError,
    GridMismatchError,
    IncompleteStoreWarning,
    OutputPathError,
    ParameterError,
    ZarrStoreMismatchError,
)
from geot2e.io._paths import check_output_path
from geot2e.io.ledger import LEDGER_DIR, done_keys, ensure_ledger
from geot2e.io.provenance import provenance_from_attrs

__all__ = [
    "FORMAT",
    "STORE_KEY",
    "create_zarr_like",
    "write_zarr_region",
    "open_zarr",
    "check_zarr_matches",
    "to_zarr_dataset",
    "read_store_attrs",
    "store_progress",
    "store_exists",
    "incomplete_message",
]

#: Group attribute describing the store layout (not a ``geot2e_`` provenance key).
STORE_KEY = "geot2e-store"
#: Layout version, in ``attrs["geot2e-store"]["format"]``.
FORMAT = "geot2e-raster-zarr/1"
_DEFAULT_VAR = "data"


# --------------------------------------------------------------------------- helpers
def _spatial_dims(da: xr.DataArray) -> tuple[str, ...]:
    if da.dims not in (("band", "y", "x"), ("y", "x")):
        raise DimensionError(
            f"expected dims ('band', 'y', 'x') or ('y', 'x'), got {da.dims}; "
            "transpose or rename the array first (da.transpose('band', 'y', 'x'))."
        )
    return da.dims


def _variable_name(da: xr.DataArray) -> str:
    name = da.name
    if isinstance(name, str) and name and name not in da.coords and not name.startswith("."):
        return name
    return _DEFAULT_VAR


def _nodata_json(nodata: Any) -> Any:
    if nodata is None:
        return None
    value = float(nodata)
    if math.isnan(value):
        return "nan"
    return int(value) if value.is_integer() else value


def _normalize_chunks(da: xr.DataArray, chunks: Any) -> dict[str, int]:
    sizes = dict(da.sizes)
    if chunks is None:
        chunks = 512
    if isinstance(chunks, bool):
        raise ParameterError("chunks must be an int, a (y, x) tuple or a dict, not a bool.")
    if isinstance(chunks, (int, np.integer)):
        out = {"y": int(chunks), "x": int(chunks)}
    elif isinstance(chunks, tuple) and len(chunks) == 2:
        out = {"y": int(chunks[0]), "x": int(chunks[1])}
    elif isinstance(chunks, Mapping):
        out = {str(k): int(v) if v not in (-1, None) else sizes.get(str(k), 1) for k, v in chunks.items()}
    else:
        raise ParameterError(
            f"chunks={chunks!r} is not understood; pass an int (pixels per side), "
            "a (y, x) tuple or a dict such as {'y': 512, 'x': 512}."
        )
    unknown = set(out) - set(sizes)
    if unknown:
        raise ParameterError(f"chunks names unknown dimensions {sorted(unknown)}; dims are {da.dims}.")
    result = {}
    for dim in da.dims:
        size = out.get(dim, sizes[dim] if dim == "band" else 512)
        if size < 1:
            raise ParameterError(f"chunk size for {dim!r} must be >= 1, got {size}.")
        result[dim] = max(1, min(size, sizes[dim]))
    return result


# CF names that xarray would apply as an encoding on write: stored under other names.
_RENAMED = {"scale_factor": "raster_scale_factor", "add_offset": "raster_add_offset"}
_IDENTITY = {"scale_factor": 1.0, "add_offset": 0.0}


def _clean_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in attrs.items():
        if k in ("_FillValue", "grid_mapping", "coordinates", "units_metadata"):
            continue
        if k in _RENAMED:
            if v == _IDENTITY[k]:
                continue
            k = _RENAMED[k]
        if isinstance(v, tuple):
            v = list(v)
        if isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def to_zarr_dataset(da: xr.DataArray, *, attrs: Mapping[str, Any] | None = None) -> tuple[xr.Dataset, str]:
    """Wrap a raster DataArray into the Dataset layout geot2e stores use.

    Returns the Dataset and the name of its data variable. Group attrs hold the CRS
    (WKT) and transform; the variable keeps ``_FillValue`` = nodata and its attrs.
    """
    import rioxarray  # noqa: F401 - registers the .rio accessor (geot2e imports the raster stack lazily)

    from geot2e.io.georef import exact_transform

    dims = _spatial_dims(da)
    name = _variable_name(da)
    crs = da.rio.crs
    transform = exact_transform(da)
    nodata = da.rio.nodata
    var = da.copy(deep=False)
    var.name = name
    var.encoding = {}
    var.attrs = _clean_attrs(da.attrs)
    var.attrs.pop("nodata", None)
    if nodata is not None:
        if isinstance(nodata, float) and math.isnan(nodata):
            var.attrs["_FillValue"] = nodata  # decodes to the same values
        else:  # CF decoding would turn the raster into float with NaN: rioxarray reads "nodata"
            var.attrs["nodata"] = nodata.item() if isinstance(nodata, np.generic) else nodata
    if crs is not None:
        var = var.rio.write_crs(crs)
        var = var.rio.write_transform(transform)
        var.encoding = {}
        var.attrs["grid_mapping"] = "spatial_ref"  # CF: plain xarray + rioxarray find the CRS
    ds = var.to_dataset(name=name)
    for coord in list(ds.coords):
        ds[coord].encoding = {}
        if coord != "spatial_ref":  # e.g. a synthesized map copied from the raster's attrs
            ds[coord].attrs = _clean_attrs(ds[coord].attrs)
    group_attrs = {
        STORE_KEY: {"format": FORMAT, "variable": name, "dims": list(dims)},
        "crs_wkt": crs.to_wkt() if crs is not None else None,
        "transform": list(transform)[:6],
        "nodata": _nodata_json(nodata),
    }
    group_attrs.update(provenance_from_attrs(var.attrs))
    if attrs:
        group_attrs.update(_clean_attrs(attrs))
    ds.attrs = group_attrs
    return ds, name


def _encoding(ds: xr.Dataset, name: str, chunks: Mapping[str, int]) -> dict[str, dict]:
    enc: dict[str, dict] = {}
    for vname, var in ds.variables.items():
        if vname in ds.dims and vname not in ("y", "x"):
            continue
        if set(var.dims) & {"y", "x"} and var.ndim >= 2:
            enc[vname] = {"chunks": tuple(chunks[d] for d in var.dims)}
    nodata = ds[name].attrs.get("_FillValue", ds[name].attrs.get("nodata"))
    if nodata is not None:
        enc[name]["fill_value"] = np.asarray(nodata, dtype=ds[name].dtype).item()
    return enc


def _zarr_json(store: Path) -> dict:
    meta = store / "zarr.json"
    if not meta.is_file():
        raise OutputPathError(
            f"{store} is not a Zarr v3 store (no zarr.json); give the path of a store written "
            "by geot2e.io.create_zarr_like or build_zarr_mosaic."
        )
    with open(meta, encoding="utf-8") as f:
        return json.load(f)


def read_store_attrs(store: str | os.PathLike) -> dict[str, Any]:
    """Group attributes of a geot2e store, merged with its data variable's attributes."""
    store = Path(os.fspath(store))
    attrs = dict(_zarr_json(store).get("attributes", {}))
    name = attrs.get(STORE_KEY, {}).get("variable")
    if name and (store / name / "zarr.json").is_file():
        with open(store / name / "zarr.json", encoding="utf-8") as f:
            var_attrs = json.load(f).get("attributes", {})
        attrs = {**var_attrs, **attrs}
    return attrs


def _remove_store(dest: Path) -> None:
    if not (dest / "zarr.json").is_file() and any(dest.iterdir()):
        raise OutputPathError(
            f"{dest} exists and is not a Zarr store; refusing to delete it with overwrite=True. "
            "Choose another store path."
        )
    shutil.rmtree(dest)


# --------------------------------------------------------------------------- create / open
def create_zarr_like(
    da: xr.DataArray,
    store: str | os.PathLike,
    *,
    chunks: int | tuple | Mapping[str, int] = 512,
    overwrite: bool = False,
    exist_ok: bool = False,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Create an empty Zarr v3 store on ``da``'s grid, ready for region writes.

    Only metadata and coordinates are written (dask ``compute=False`` template): chunks
    that are never written read back as the nodata value (Zarr ``fill_value``).

    Parameters
    ----------
    da : xarray.DataArray
        Template (band, y, x) or (y, x) raster; only its grid, CRS, band coordinate,
        dtype, nodata and attrs are used, never its values. A (y, x) coordinate such as
        ``synthesized`` becomes an empty (False) array in the store.
    store : str or os.PathLike
        Directory of the store.
    chunks : int, (int, int) or dict, default 512
        Zarr chunk size in pixels along y and x (all bands in one chunk unless a
        ``band`` entry is given). Region writes should follow these chunks.
    overwrite : bool, default False
        Replace an existing store (and its ledger).
    exist_ok : bool, default False
        If the store exists and matches ``da`` (see :func:`check_zarr_matches`), keep it
        as it is, with its ledger: this is how a run resumes.
    attrs : dict, optional
        Extra group attributes.

    Returns
    -------
    pathlib.Path
        The store path.

    Raises
    ------
    OutputExistsError
        The store exists and neither ``overwrite`` nor ``exist_ok`` was given.
    ZarrStoreMismatchError
        ``exist_ok=True`` and the existing store is on another grid/CRS/band layout.
    OutputPathError
        The parent directory is missing or read-only.
    """
    import dask.array as dsa

    _spatial_dims(da)
    chunk_map = _normalize_chunks(da, chunks)
    p = Path(os.fspath(store)).expanduser().absolute()
    if exist_ok and not overwrite and p.is_dir() and (p / "zarr.json").is_file():
        check_zarr_matches(p, da)
        return p
    dest = check_output_path(p, overwrite=overwrite, kind="store")
    ds, name = to_zarr_dataset(da, attrs=attrs)
    # Replace every gridded variable by an uncomputed dask array: nothing is computed.
    for vname in list(ds.variables):
        var = ds[vname]
        if vname in ds.dims or not ({"y", "x"} <= set(var.dims)):
            continue
        dtype = np.dtype(bool) if vname != name and var.dtype == bool else var.dtype
        empty = dsa.zeros(var.shape, dtype=dtype, chunks=tuple(chunk_map[d] for d in var.dims))
        if vname == name:
            ds[vname] = var.copy(data=empty)
        else:
            ds = ds.assign_coords({vname: (var.dims, empty, var.attrs)})
    if dest.exists():
        _remove_store(dest)
    ds.to_zarr(
        dest,
        mode="w",
        compute=False,
        zarr_format=3,
        consolidated=False,
        encoding=_encoding(ds, name, chunk_map),
    )
    ledger = ensure_ledger(dest)
    blocks = [-(-int(da.sizes[d]) // chunk_map[d]) for d in ("y", "x")]
    meta = json.loads((ledger / "zarr.json").read_text(encoding="utf-8"))
    meta.setdefault("attributes", {})["blocks"] = blocks
    tmp = ledger / f".zarr.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(meta), encoding="utf-8")
    os.replace(tmp, ledger / "zarr.json")
    return dest


def store_exists(store: str | os.PathLike) -> bool:
    """Whether a Zarr v3 store is already at ``store`` (a folder with ``zarr.json``): what
    :func:`geot2e.process_zarr` and the command line resume instead of creating."""
    p = Path(os.fspath(store)).expanduser()
    return p.is_dir() and (p / "zarr.json").is_file()


def store_progress(store: str | os.PathLike) -> tuple[int, int] | None:
    """``(blocks done, blocks in the chunk grid)`` of a store its ledger tracks, else None.

    None for stores whose ledger lists no block of the chunk grid (written in one call, by
    region writes without ``done_key``, or by a version that did not record the grid).
    """
    p = Path(os.fspath(store)).expanduser()
    try:
        meta = json.loads((p / LEDGER_DIR / "zarr.json").read_text(encoding="utf-8"))
        ny, nx = (int(v) for v in meta.get("attributes", {})["blocks"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    grid = {f"{i}_{j}" for i in range(ny) for j in range(nx)}
    done = len(grid & done_keys(p))
    return (done, ny * nx) if done else None


def incomplete_message(p: Path, progress: tuple[int, int]) -> str:
    """What to say about the unfinished store ``p`` (``progress``: :func:`store_progress`)."""
    done, total = progress
    return (f"the Zarr store {p} is unfinished: its ledger lists {done} of {total} blocks as written, "
            "so the other blocks read as nodata (or zeros), not as data. Resume the job that wrote it "
            "(run the same geot2e.process_zarr call again: finished blocks are skipped), or write to a "
            "new store with overwrite=True.")


def open_zarr(store: str | os.PathLike, *, chunks: Any = "zarr", check_complete: bool = True) -> xr.DataArray:
    """Open a geot2e Zarr store as a CRS-aware DataArray.

    Parameters
    ----------
    store : str or os.PathLike
        A store written by :func:`create_zarr_like` or :func:`build_zarr_mosaic`.
    chunks : "zarr", None, "auto", int or dict, default "zarr"
        ``"zarr"``: dask array on the store's own chunks; ``None``: lazily-read
        numpy-backed array; anything else: dask chunks as in :func:`xarray.open_zarr`.
    check_complete : bool, default True
        Warn (:class:`~geot2e.errors.IncompleteStoreWarning`) when the store's ledger says
        it is unfinished (see the module docstring).

    Returns
    -------
    xarray.DataArray
        Values in the stored dtype (no masking); ``rio.crs``, ``rio.transform()``,
        ``rio.nodata`` and ``geot2e_*`` provenance attrs as written.
    """
    import warnings

    import rioxarray  # noqa: F401 - registers the .rio accessor (geot2e imports the raster stack lazily)

    p = Path(os.fspath(store)).expanduser()
    group_attrs = _zarr_json(p).get("attributes", {})
    if check_complete:
        progress = store_progress(p)
        if progress is not None and progress[0] < progress[1]:
            warnings.warn(incomplete_message(p, progress), IncompleteStoreWarning, stacklevel=2)
    ds = xr.open_zarr(
        p,
        chunks={} if chunks == "zarr" else chunks,
        mask_and_scale=False,
        consolidated=False,
        decode_coords="all",
    )
    name = group_attrs.get(STORE_KEY, {}).get("variable")
    if name not in ds.data_vars:
        data_vars = [v for v in ds.data_vars if {"y", "x"} <= set(ds[v].dims)]
        if len(data_vars) != 1:
            raise OutputPathError(
                f"{p} holds {len(data_vars)} raster variables ({data_vars}); it was not written "
                "by geot2e.io. Open it with xarray.open_zarr and pick one."
            )
        name = data_vars[0]
    da = ds[name]
    for key in ("transform", "crs_wkt", "nodata", STORE_KEY):
        da.attrs.pop(key, None)
    da.attrs.update({k: v for k, v in provenance_from_attrs(group_attrs).items() if k not in da.attrs})
    for cf_name, stored_name in _RENAMED.items():
        if stored_name in da.attrs:
            da.attrs[cf_name] = da.attrs.pop(stored_name)
    if "long_name" in da.attrs and isinstance(da.attrs["long_name"], list):
        da.attrs["long_name"] = tuple(da.attrs["long_name"])
    if da.rio.crs is None and group_attrs.get("crs_wkt"):
        da = da.rio.write_crs(group_attrs["crs_wkt"])
    nodata = da.attrs.pop("nodata", None)
    if nodata is None:
        nodata = da.attrs.get("_FillValue", group_attrs.get("nodata"))
    if nodata is not None:
        da = da.rio.write_nodata(float("nan") if nodata == "nan" else nodata, encoded=False)
    return da


# --------------------------------------------------------------------------- checks
def _affine_close(a: Iterable[float], b: Iterable[float], res: float) -> bool:
    a, b = list(a)[:6], list(b)[:6]
    tol = 1e-6 * max(res, 1e-12)
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def check_zarr_matches(store: str | os.PathLike, da: xr.DataArray) -> None:
    """Raise if the store at ``store`` is not on ``da``'s grid, CRS and band layout.

    Parameters
    ----------
    store : str or os.PathLike
        An existing geot2e store.
    da : xarray.DataArray
        The raster that is going to be written into it.

    Raises
    ------
    ZarrStoreMismatchError
        Dims, shape, band coordinate, dtype, CRS or transform differ; the message lists
        each difference.
    OutputPathError
        ``store`` is not a Zarr v3 store.
    """
    from rasterio.crs import CRS

    _spatial_dims(da)
    p = Path(os.fspath(store)).expanduser()
    stored = open_zarr(p, chunks=None, check_complete=False)
    problems = []
    if stored.dims != da.dims:
        problems.append(f"dims {stored.dims} in the store vs {da.dims}")
    elif stored.shape != da.shape:
        problems.append(f"shape {stored.shape} in the store vs {da.shape}")
    if stored.dtype != da.dtype:
        problems.append(f"dtype {stored.dtype} in the store vs {da.dtype}")
    if "band" in stored.dims and "band" in da.dims and stored.sizes["band"] == da.sizes["band"]:
        if [str(v) for v in stored["band"].values] != [str(v) for v in da["band"].values]:
            problems.append(
                f"band coordinate {list(stored['band'].values)} in the store vs {list(da['band'].values)}"
            )
    crs_a, crs_b = stored.rio.crs, da.rio.crs
    if (crs_a is None) != (crs_b is None) or (
        crs_a is not None and CRS.from_user_input(crs_a) != CRS.from_user_input(crs_b)
    ):
        problems.append(f"CRS {crs_a} in the store vs {crs_b}")
    if stored.shape[-2:] == da.shape[-2:]:
        ta = stored.rio.transform(recalc=True)
        tb = da.rio.transform(recalc=True)
        if not _affine_close(ta, tb, abs(tb.a) or 1.0):
            problems.append(f"transform {tuple(ta)[:6]} in the store vs {tuple(tb)[:6]}")
    if problems:
        raise ZarrStoreMismatchError(
            f"the Zarr store {p} belongs to another raster: " + "; ".join(problems)
            + ". Write to a new store path, or pass overwrite=True to replace it."
        )


# --------------------------------------------------------------------------- region writes
def _region_from_coords(block: xr.DataArray, stored: xr.DataArray) -> dict[str, slice]:
    region = {}
    for dim in ("y", "x"):
        coord = stored[dim].values
        first = block[dim].values[0]
        step = abs(coord[1] - coord[0]) if coord.size > 1 else 1.0
        idx = int(np.argmin(np.abs(coord - first)))
        if abs(coord[idx] - first) > 1e-6 * step:
            raise GridMismatchError(
                f"the block's first {dim} coordinate {first} is not on the store's grid; "
                "cut blocks from an array on the same grid as the store."
            )
        region[dim] = slice(idx, idx + block.sizes[dim])
    return region


def _as_region(region: Any, block: xr.DataArray, stored: xr.DataArray) -> dict[str, slice]:
    if isinstance(region, str) and region == "auto":
        out = _region_from_coords(block, stored)
    elif isinstance(region, tuple) and len(region) == 2:
        out = {"y": region[0], "x": region[1]}
    elif isinstance(region, Mapping):
        out = dict(region)
    else:
        raise ParameterError(
            f"region={region!r} is not understood; pass {{'y': slice, 'x': slice}}, "
            "a (y_slice, x_slice) tuple or 'auto'."
        )
    result = {}
    for dim in stored.dims:
        sl = out.get(dim, slice(None))
        if not isinstance(sl, slice) or sl.step not in (None, 1):
            raise ParameterError(f"region[{dim!r}] must be a slice with step 1, got {sl!r}.")
        start, stop, _ = sl.indices(stored.sizes[dim])
        result[dim] = slice(start, stop)
    unknown = set(out) - set(stored.dims)
    if unknown:
        raise ParameterError(f"region names unknown dimensions {sorted(unknown)}; dims are {stored.dims}.")
    return result


def write_zarr_region(
    da_block: xr.DataArray,
    store: str | os.PathLike,
    region: Mapping[str, slice] | tuple | str = "auto",
    *,
    done_key: Any = None,
    check_alignment: bool = True,
) -> None:
    """Write one block into an existing store (a Zarr region write).

    Parameters
    ----------
    da_block : xarray.DataArray
        The block, with the store's dims and dtype (a safe cast is applied); its ``y``
        and ``x`` coordinates must match the store's at ``region``. A ``synthesized``
        (y, x) coordinate is written too when the store has one.
    store : str or os.PathLike
        A store created by :func:`create_zarr_like`.
    region : dict, (slice, slice) or "auto", default "auto"
        Pixel slices per dimension; ``"auto"`` finds them from the block's coordinates.
    done_key : str or tuple of int, optional
        Record this key in the ledger (:func:`mark_done`) once the write has returned.
    check_alignment : bool, default True
        Refuse regions that do not start and end on store chunk boundaries (or the array
        edge): two concurrent writers sharing a chunk would lose one write. Pass False
        only when writes are sequential.

    Raises
    ------
    GridMismatchError
        The block's coordinates or shape do not match the store at ``region``.
    ZarrStoreMismatchError
        The block's dtype cannot be stored safely in the store's dtype.
    ParameterError
        A bad region, or one not aligned with the chunks (see ``check_alignment``).
    """
    import zarr

    p = Path(os.fspath(store)).expanduser()
    stored = open_zarr(p, chunks=None, check_complete=False)
    name = stored.name
    if da_block.dims != stored.dims:
        raise GridMismatchError(f"block dims {da_block.dims} differ from the store's {stored.dims}.")
    reg = _as_region(region, da_block, stored)
    for dim in stored.dims:
        want = reg[dim].stop - reg[dim].start
        if da_block.sizes[dim] != want:
            raise GridMismatchError(
                f"the block has {da_block.sizes[dim]} pixels along {dim!r} but the region "
                f"{reg[dim]} spans {want}."
            )
    for dim in ("y", "x"):
        expected = stored[dim].values[reg[dim]]
        got = da_block[dim].values
        step = abs(float(expected[1] - expected[0])) if expected.size > 1 else 1.0
        if not np.allclose(got, expected, rtol=0, atol=1e-6 * step):
            raise GridMismatchError(
                f"the block's {dim} coordinates do not match the store at region {reg[dim]}; "
                "check the region or cut the block from an array on the store's grid."
            )
    if check_alignment:
        chunks = zarr.open_array(p / name, mode="r").chunks
        for dim, size in zip(stored.dims, chunks):
            sl, n = reg[dim], stored.sizes[dim]
            if sl.start % size or (sl.stop % size and sl.stop != n):
                raise ParameterError(
                    f"region {dim}={sl} is not aligned with the store's chunks ({size} pixels): "
                    "concurrent writes could overwrite each other. Write whole chunks, or pass "
                    "check_alignment=False when writes are sequential."
                )
    if da_block.dtype != stored.dtype:
        if not np.can_cast(da_block.dtype, stored.dtype, casting="same_kind"):
            raise ZarrStoreMismatchError(
                f"the block's dtype {da_block.dtype} cannot be written into the store's "
                f"{stored.dtype}; cast it first (da.astype(...))."
            )
        da_block = da_block.astype(stored.dtype)
    data_vars = {name: (stored.dims, da_block.data)}
    coords = {}
    for cname, coord in da_block.coords.items():
        if cname in stored.coords and cname not in stored.dims and set(coord.dims) == {"y", "x"}:
            coords[cname] = (coord.dims, coord.data.astype(stored[cname].dtype))
    ds = xr.Dataset(data_vars, coords=coords)
    ds.to_zarr(p, region=reg, mode="r+", zarr_format=3, consolidated=False)
    if done_key is not None:
        from geot2e.io.ledger import mark_done

        mark_done(p, done_key)
