"""Open a raster (GeoTIFF, COG, VRT or a geot2e Zarr store) as a rioxarray DataArray."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import xarray as xr

from geot2e.errors import DimensionError, OutputPathError, ParameterError
from geot2e.io.georef import exact_transform
from geot2e.io.provenance import PROVENANCE_TAG, decode_provenance, provenance_from_attrs

__all__ = ["open_raster", "read_provenance", "is_zarr_store", "exact_transform", "SYNTHESIZED_TAG",
           "SYNTHESIZED_NAME"]

#: Dataset tag written by :func:`geot2e.io.to_cog` naming the 1-based band that holds
#: the synthesized-pixel map.
SYNTHESIZED_TAG = "GEOT2E_SYNTHESIZED_BAND"
#: Band description and coordinate name of the synthesized-pixel map.
SYNTHESIZED_NAME = "synthesized"


def is_zarr_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a Zarr store (a directory, or a name ending in .zarr)."""
    p = Path(os.fspath(path))
    return p.suffix.lower() == ".zarr" or p.is_dir()


def _check_chunks(chunks: Any) -> None:
    if chunks is None or chunks == "auto" or isinstance(chunks, (int, dict, tuple)):
        if isinstance(chunks, bool):
            raise ParameterError("chunks must be None, 'auto', an int, a tuple or a dict, not a bool.")
        return
    raise ParameterError(
        f"chunks={chunks!r} is not understood; pass None (no dask), 'auto', an int "
        "(pixels per side), or a dict such as {'y': 512, 'x': 512}."
    )


def _auto_chunks(source) -> dict[str, int]:
    """dask "auto" chunks that follow the file's internal blocks, all bands together."""
    import rasterio
    from dask.array.core import normalize_chunks

    with rasterio.open(source) as src:
        shape = (src.count, src.height, src.width)
        by, bx = src.block_shapes[0]
        dtype = np.dtype(src.dtypes[0])
    chunks = normalize_chunks("auto", shape, dtype=dtype, previous_chunks=(src.count, by, bx))
    return {"band": chunks[0][0], "y": chunks[1][0], "x": chunks[2][0]}


def _split_synthesized(da: xr.DataArray) -> xr.DataArray:
    """Move the synthesized band written by ``to_cog`` into a bool (y, x) coordinate."""
    index = da.attrs.get(SYNTHESIZED_TAG)
    if index is None or "band" not in da.dims:
        return da
    try:
        pos = int(index) - 1
    except (TypeError, ValueError):
        return da
    if not 0 <= pos < da.sizes["band"] or da.sizes["band"] < 2:
        return da
    keep = [i for i in range(da.sizes["band"]) if i != pos]
    synthesized = da.isel(band=pos, drop=True) != 0
    out = da.isel(band=keep)
    out = out.assign_coords({SYNTHESIZED_NAME: (("y", "x"), synthesized.data)})
    out.attrs = {k: v for k, v in da.attrs.items() if k != SYNTHESIZED_TAG}
    long_name = out.attrs.get("long_name")
    if isinstance(long_name, (tuple, list)) and len(long_name) == da.sizes["band"]:
        names = tuple(n for i, n in enumerate(long_name) if i != pos)
        out.attrs["long_name"] = names if len(names) > 1 else names[0]
    return out


def check_nodata_for(nodata: Any, dtype: Any, *, what: str = "nodata") -> Any:
    """``nodata`` as a value ``dtype`` can hold, or a :class:`ParameterError` saying why not
    (NaN or a fraction for integers, a value out of the dtype's range)."""
    import math

    dtype = np.dtype(dtype)
    try:
        value = float(nodata)
    except (TypeError, ValueError):
        raise ParameterError(f"{what}={nodata!r} is not a number; give a value the raster's dtype "
                             f"({dtype}) can hold.") from None
    if dtype.kind in "iub":
        if math.isnan(value):
            raise ParameterError(f"{what}=nan cannot be stored in {dtype} (integers have no NaN); give an "
                                 f"integer value in the dtype's range, e.g. 0.")
        info = np.iinfo(dtype) if dtype.kind != "b" else np.iinfo(np.uint8)
        if not (value.is_integer() and info.min <= value <= info.max):
            raise ParameterError(f"{what}={nodata!r} is not a valid {dtype} value (whole numbers "
                                 f"{info.min}..{info.max}); pick one in range.")
        return int(value)
    return value


def _select_bands(da: xr.DataArray, bands: Sequence[int | str] | int | str) -> xr.DataArray:
    if "band" not in da.dims:
        raise DimensionError("bands= was given but the raster has no 'band' dimension.")
    items = [bands] if isinstance(bands, (int, str, np.integer)) else list(bands)
    long_name = da.attrs.get("long_name")
    if isinstance(long_name, str):
        long_name = (long_name,)
    names = list(long_name) if isinstance(long_name, (tuple, list)) else []
    coord = list(da["band"].values)
    positions = []
    for item in items:
        if isinstance(item, str):
            if item in coord:
                positions.append(coord.index(item))
            elif item in names:
                positions.append(names.index(item))
            else:
                raise ParameterError(
                    f"band {item!r} not found; available band names: {names or coord}."
                )
        else:
            if int(item) not in [int(c) for c in coord if isinstance(c, (int, np.integer))]:
                raise ParameterError(
                    f"band {item!r} not found; bands are numbered {coord} (1-based, as in GDAL)."
                )
            positions.append([int(c) for c in coord].index(int(item)))
    out = da.isel(band=positions)
    if len(names) == da.sizes["band"]:
        picked = tuple(names[p] for p in positions)
        out.attrs["long_name"] = picked if len(picked) > 1 else picked[0]
    return out


def open_raster(
    path: str | os.PathLike,
    *,
    chunks: None | str | int | dict | tuple = None,
    bands: Sequence[int | str] | int | str | None = None,
    nodata: float | None = None,
) -> xr.DataArray:
    """Open a GeoTIFF, COG, VRT or geot2e Zarr store as a (band, y, x) DataArray.

    Values keep the file's dtype (no masking, no scaling); the nodata value is recorded in
    ``da.rio.nodata``. A raster written by :func:`geot2e.io.to_cog` comes back as it was
    written: its ``GEOT2E_PROVENANCE`` tag becomes ``geot2e_*`` attrs and its
    ``synthesized`` band (if any) becomes a bool ``synthesized`` (y, x) coordinate.

    Parameters
    ----------
    path : str or os.PathLike
        A file GDAL can open (GeoTIFF, COG, VRT, ...), or a Zarr store written by
        :mod:`geot2e.io` (a directory, or any path ending in ``.zarr``).
    chunks : None, "auto", int, tuple or dict, optional
        ``None`` gives a lazily-read numpy-backed array; anything else gives a dask
        array with these chunks (xarray's meaning: an int applies to every dimension).
    bands : int, str or sequence of them, optional
        Bands to keep: 1-based band numbers, or band descriptions (``long_name``).
    nodata : float, optional
        Nodata value to record when the file has none (or to override it). Pixel
        values are not changed.

    Returns
    -------
    xarray.DataArray
        CRS-aware (``da.rio.crs``), with ``band``, ``y`` and ``x`` coordinates.

    Raises
    ------
    OutputPathError
        ``path`` does not exist.
    ParameterError
        ``chunks`` or ``bands`` are not understood, or ``nodata`` is not a value of the
        raster's dtype (NaN or -1 for an integer raster).
    """
    _check_chunks(chunks)
    p = Path(os.fspath(path)).expanduser()
    is_url = "://" in os.fspath(path) or os.fspath(path).startswith("/vsi")
    if not is_url and not p.exists():
        raise OutputPathError(f"{p} does not exist; check the path of the raster to open.")
    if not is_url and is_zarr_store(p):
        from geot2e.io.zarr_store import open_zarr

        da = open_zarr(p, chunks=chunks)
    else:
        import rioxarray

        source = os.fspath(path) if is_url else p
        if chunks == "auto":
            chunks = _auto_chunks(source)
        da = rioxarray.open_rasterio(source, masked=False, mask_and_scale=False, chunks=chunks)
        if isinstance(da, list):  # pragma: no cover - subdatasets
            raise ParameterError(f"{p} holds several subdatasets; open one of them by name.")
        if isinstance(da, xr.Dataset):  # pragma: no cover - subdatasets
            raise ParameterError(f"{p} holds several variables; open one of them by name.")
        prov = decode_provenance(da.attrs.pop(PROVENANCE_TAG, ""))
        da.attrs.update(prov)
        da = _split_synthesized(da)
    if bands is not None:
        da = _select_bands(da, bands)
    if nodata is not None:
        da = da.rio.write_nodata(check_nodata_for(nodata, da.dtype), encoded=False)
    return da


def read_provenance(source: Any) -> dict[str, Any]:
    """Read provenance back from a GeoTIFF/COG, a geot2e Zarr store or a DataArray.

    Parameters
    ----------
    source : str, os.PathLike or xarray.DataArray
        A raster written by :func:`geot2e.io.to_cog`, a store written by
        :func:`geot2e.io.create_zarr_like`/:func:`geot2e.io.build_zarr_mosaic`, or a
        DataArray carrying ``geot2e_*`` attrs.

    Returns
    -------
    dict
        ``{"geot2e_<field>": value}``; empty when the source carries no provenance.
    """
    attrs = getattr(source, "attrs", None)
    if attrs is not None and not isinstance(source, (str, os.PathLike)):
        prov = provenance_from_attrs(attrs)
        if not prov and PROVENANCE_TAG in attrs:  # raw rioxarray read of a COG
            prov = decode_provenance(attrs[PROVENANCE_TAG])
        return prov
    path = Path(source)
    if not path.exists():
        raise OutputPathError(f"{path} does not exist; pass the path of an existing raster.")
    if path.is_dir():
        from geot2e.io.zarr_store import read_store_attrs

        return provenance_from_attrs(read_store_attrs(path))
    import rasterio

    with rasterio.open(path) as src:
        return decode_provenance(src.tags().get(PROVENANCE_TAG, ""))
