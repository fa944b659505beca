"""Write a DataArray as a Cloud-Optimized GeoTIFF (GDAL COG driver), atomically.

Two steps, so that a dask array of any size is never held in memory and the COG still
gets its overviews:

1. every dask block is computed and written into a tiled GeoTIFF next to the
   destination (hidden temporary name), one window at a time, under a write lock;
2. GDAL's COG driver copies it into a second temporary file, computing overviews
   (``OVERVIEWS=AUTO``), then ``os.replace`` moves that file onto the destination.

Any failure (also Ctrl-C, and SIGTERM in the ``geot2e`` command line) removes both temporary
files and leaves the destination untouched. A process killed outright (SIGKILL) cannot clean
up: its temporaries, named ``.NAME.<pid>-<id>.part.tif`` / ``.cog.tif``, are removed by the
next ``to_cog`` to the same destination once that pid is gone.

COG layout written by :func:`to_cog`
------------------------------------
- bands 1..N: the raster, in its own dtype, with its nodata, CRS, transform and band
  descriptions (from a string ``band`` coordinate or the ``long_name`` attribute);
- optional band N+1, description ``synthesized``, band tag ``GEOT2E_ROLE=synthesized``:
  1 where a pixel was synthesized by the model, 0 where it is original data (same dtype
  as the raster, since a GeoTIFF has one dtype); the dataset tag
  ``GEOT2E_SYNTHESIZED_BAND`` holds its 1-based index. So that no reader takes it for
  transparency, its colour interpretation is ``undefined`` (TIFF extra sample
  "unspecified", never alpha, also on a uint8 RGB image), and when the raster has a nodata
  value the COG carries a GDAL internal mask (valid = any data band is not nodata): GDAL,
  QGIS and rasterio's ``dataset_mask()`` then read the valid pixels from that mask, not
  from the flags band;
- colour interpretation of the data bands from their names: red, green, blue, nir,
  swir/swir1/swir2, pan, coastal, rededge; other bands keep GDAL's default (a 3-band
  uint8 image is RGB), except that a data band is never alpha;
- the geotransform of the source, bit for bit (see :func:`geot2e.io.raster.exact_transform`),
  so ``xr.align(open_raster(path), da, join="exact")`` holds;
- dataset tag ``GEOT2E_PROVENANCE``: a JSON object with the ``geot2e_*`` provenance
  attrs (see :mod:`geot2e.io.provenance`);
- other ``tags``, and the plain scalar attrs of the array (str/number, e.g. tags read
  from a GeoTIFF by rioxarray), as GDAL metadata items (str values as given, others JSON).
"""
from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr

from geot2e.errors import (
    DimensionError,
    EmptyRasterError,
    GridMismatchError,
    ParameterError,
)
from geot2e.io._paths import check_output_path, remove_quietly
from geot2e.io.provenance import PROVENANCE_TAG, PREFIX, encode_provenance, provenance_from_attrs
from geot2e.io.raster import SYNTHESIZED_NAME, SYNTHESIZED_TAG, exact_transform

__all__ = ["to_cog", "check_cog_options", "COMPRESSIONS", "RESAMPLINGS"]

#: Compression names accepted by ``to_cog`` (GDAL COG driver ``COMPRESS``).
COMPRESSIONS = (
    "deflate", "lzw", "zstd", "lzma", "packbits", "jpeg", "webp",
    "lerc", "lerc_deflate", "lerc_zstd", "none",
)
#: Overview resampling names accepted by ``to_cog``.
RESAMPLINGS = ("nearest", "average", "bilinear", "cubic", "cubicspline", "lanczos", "mode", "rms")
_PREDICTOR = {"deflate", "lzw", "zstd", "lzma"}
_GDAL_DTYPES = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
    "float32", "float64", "complex64", "complex128",
}
ROLE_TAG = "GEOT2E_ROLE"
# attrs that are written as GDAL properties (or not at all), never as tags
_NOT_TAGS = {
    "_FillValue", "missing_value", "nodata", "scale_factor", "add_offset", "long_name",
    "grid_mapping", "coordinates", "AREA_OR_POINT", "transform", "crs", "crs_wkt",
    "spatial_ref", "units_metadata", PROVENANCE_TAG, SYNTHESIZED_TAG,
}


# --------------------------------------------------------------------------- validation
def _check_options(compress, blocksize, overviews, resampling):
    comp = "none" if compress is None else str(compress).lower()
    if comp not in COMPRESSIONS:
        raise ParameterError(f"compress={compress!r} is not one of {COMPRESSIONS}.")
    if isinstance(blocksize, bool) or not isinstance(blocksize, (int, np.integer)) or blocksize < 16 or blocksize % 16:
        raise ParameterError(f"blocksize must be a multiple of 16 (e.g. 256 or 512), got {blocksize!r}.")
    if overviews is None or overviews is False or overviews == "none" or overviews == 0:
        ovr = 0
    elif overviews == "auto":
        ovr = "auto"
    elif isinstance(overviews, (int, np.integer)) and not isinstance(overviews, bool) and overviews > 0:
        ovr = int(overviews)
    else:
        raise ParameterError(
            f"overviews={overviews!r} is not understood; pass 'auto', a number of levels, or 'none'."
        )
    res = str(resampling).lower()
    if res not in RESAMPLINGS:
        raise ParameterError(f"resampling={resampling!r} is not one of {RESAMPLINGS}.")
    return comp, int(blocksize), ovr, res


def check_cog_options(*, compress="deflate", blocksize=512, overviews="auto", resampling="average",
                      dtype=None) -> None:
    """Check the options :func:`to_cog` would refuse, before any work (e.g. before a model runs
    whose result is to be written). Raises :class:`ParameterError`."""
    _check_options(compress, blocksize, overviews, resampling)
    if dtype is not None:
        _out_dtype(np.dtype(dtype))


def _as_band_yx(da: xr.DataArray) -> xr.DataArray:
    if not isinstance(da, xr.DataArray):
        raise ParameterError(f"to_cog expects an xarray.DataArray, got {type(da).__name__}.")
    y, x = da.rio.y_dim, da.rio.x_dim
    if da.ndim == 2 and da.dims == (y, x):
        da = da.expand_dims("band")
    elif not (da.ndim == 3 and da.dims[1:] == (y, x)):
        raise DimensionError(
            f"to_cog writes (band, y, x) or (y, x) arrays, got dims {da.dims}; select or stack "
            "the other dimensions first (e.g. da.isel(time=0))."
        )
    if 0 in da.shape:
        raise EmptyRasterError(f"the array has a zero-sized dimension {dict(da.sizes)}; nothing to write.")
    return da


def _out_dtype(dtype: np.dtype) -> np.dtype:
    if dtype == bool:
        return np.dtype("uint8")
    if dtype == np.float16:
        return np.dtype("float32")
    if dtype.kind == "c":
        raise ParameterError(
            f"dtype {dtype} (complex) cannot be written as a COG: GDAL's predictor and overview "
            "resampling do not support complex data. Write real-valued bands instead, e.g. "
            "abs(da) and the phase, or da.real and da.imag stacked along 'band'."
        )
    if dtype.name not in _GDAL_DTYPES:
        raise ParameterError(f"dtype {dtype} cannot be written to GeoTIFF; cast it first (da.astype(...)).")
    return dtype


def _check_nodata(nodata, dtype: np.dtype):
    if nodata is None:
        return None
    value = float(nodata)
    if math.isnan(value):
        if dtype.kind != "f":
            raise ParameterError(f"nodata=nan cannot be stored in {dtype}; pass an integer nodata.")
        return value
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not (value.is_integer() and info.min <= value <= info.max):
            raise ParameterError(f"nodata={nodata!r} is not a valid {dtype} value; pick one in range.")
        return int(value)
    return value


def _band_descriptions(da: xr.DataArray) -> list[str | None]:
    nb = da.sizes[da.dims[0]]
    coord = da.coords.get(da.dims[0])
    if coord is not None and coord.dtype.kind in "UO" and all(isinstance(v, str) for v in coord.values):
        return [str(v) for v in coord.values]
    long_name = da.attrs.get("long_name")
    if isinstance(long_name, str) and nb == 1:
        return [long_name]
    if isinstance(long_name, (tuple, list)) and len(long_name) == nb:
        return [str(v) if v else None for v in long_name]
    return [None] * nb


_COLOR_NAMES = {
    "red": "red", "green": "green", "blue": "blue", "nir": "nir", "swir": "swir", "swir1": "swir",
    "swir2": "swir", "pan": "pan", "coastal": "coastal", "rededge": "rededge",
}


def _colorinterp(gdal_default: tuple, descriptions: list[str | None], with_flags: bool) -> list:
    """GDAL colour interpretation of every band: data bands named after a colour or spectral
    role get it, others keep GDAL's default; the flags band is ``undefined`` (never alpha)."""
    from rasterio.enums import ColorInterp

    out = list(gdal_default)
    for i, desc in enumerate(descriptions):
        name = _COLOR_NAMES.get(str(desc).lower()) if desc else None
        if name is not None:
            out[i] = ColorInterp[name]
        elif out[i] == ColorInterp.alpha:  # a data band is never transparency
            out[i] = ColorInterp.undefined
    if with_flags:
        out[-1] = ColorInterp.undefined
    return out


def _synthesized_map(da: xr.DataArray, synthesized: Any):
    """The (y, x) synthesized map to write as an extra band, or None."""
    if synthesized is None:
        synthesized = da.coords.get(SYNTHESIZED_NAME)
        if synthesized is None:
            return None
    elif isinstance(synthesized, str):
        if synthesized != "none":
            raise ParameterError(
                f"synthesized={synthesized!r} is not understood; pass None (use the "
                "'synthesized' coordinate if any), 'none', or a bool (y, x) array."
            )
        return None
    elif synthesized is False:
        return None
    elif synthesized is True:
        if SYNTHESIZED_NAME not in da.coords:
            raise ParameterError(
                "synthesized=True but the array has no 'synthesized' coordinate; pass the "
                "bool (y, x) map itself."
            )
        synthesized = da.coords[SYNTHESIZED_NAME]
    ny, nx = da.shape[-2:]
    if isinstance(synthesized, xr.DataArray):
        extra = set(synthesized.dims) - {da.rio.y_dim, da.rio.x_dim}
        if extra:
            raise GridMismatchError(f"the synthesized map must be (y, x), got dims {synthesized.dims}.")
        synthesized = synthesized.transpose(da.rio.y_dim, da.rio.x_dim).data
    if getattr(synthesized, "shape", None) is None:
        synthesized = np.asarray(synthesized)
    if tuple(synthesized.shape) != (ny, nx):
        raise GridMismatchError(
            f"the synthesized map has shape {tuple(synthesized.shape)} but the raster is "
            f"{ny} x {nx} pixels; pass a (y, x) map on the raster's grid."
        )
    return synthesized


def _tags(da: xr.DataArray, tags: Mapping[str, Any] | None) -> dict[str, str]:
    prov = provenance_from_attrs(da.attrs)
    out: dict[str, str] = {}
    for key, value in da.attrs.items():  # plain scalar attrs travel as tags, like rioxarray
        if (
            isinstance(key, str) and key not in _NOT_TAGS and not key.startswith(PREFIX)
            and key.replace("_", "").isalnum() and isinstance(value, (str, int, float, np.number))
            and not isinstance(value, bool)
        ):
            out[key] = str(value)
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not key or any(c in key for c in "= \n"):
            raise ParameterError(f"tag name {key!r} is not valid; use a non-empty name without '=' or spaces.")
        if key.startswith(PREFIX):
            prov[key] = value
        else:
            out[key] = value if isinstance(value, str) else json.dumps(value)
    if prov:
        out[PROVENANCE_TAG] = encode_provenance(prov)
    return out


# --------------------------------------------------------------------------- writing
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:  # pragma: no cover - unknown: keep its files
        return True
    return True


def _remove_stale_temporaries(dest: Path) -> None:
    """Remove the hidden temporaries a killed :func:`to_cog` left next to ``dest``
    (``.NAME.<pid>-<id>.part.tif`` / ``.cog.tif`` and GDAL side files) whose writing process is
    gone. Temporaries of live processes (a concurrent writer) are left alone; those of versions
    that did not record the pid are hidden and never read."""
    import re

    pattern = re.compile(rf"^\.{re.escape(dest.name)}\.(\d+)-[0-9a-f]{{12}}\.(part|cog)\.tif(\..+)?$")
    try:
        names = os.listdir(dest.parent)
    except OSError:  # pragma: no cover - checked by check_output_path
        return
    for name in names:
        m = pattern.match(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            remove_quietly(dest.parent / name)



class _WindowWriter:
    """dask ``store`` target: writes each block into a window of a GeoTIFF on disk.

    Opens the file for each block (under the store lock), so it works with threads and
    with ``dask.distributed`` workers on the same filesystem. ``mask=True``: the blocks are
    (1, h, w) uint8 valid-data masks written into the GDAL internal mask.
    """

    def __init__(self, path: str, mask: bool = False):
        self.path = path
        self.mask = mask

    def __setitem__(self, key, value):
        import rasterio
        from rasterio.windows import Window

        bands, ys, xs = key
        with rasterio.open(self.path, "r+") as dst:
            if self.mask:
                dst.write_mask(np.asarray(value)[0], window=Window.from_slices(ys, xs))
                return
            indexes = list(range(bands.start + 1, bands.stop + 1))
            dst.write(value, indexes=indexes, window=Window.from_slices(ys, xs))


def _write_lock():
    """A lock valid for the active scheduler (distributed if a client is running)."""
    try:
        from distributed import Lock, get_client

        client = get_client()
    except Exception:  # no distributed client: threads or synchronous
        from dask.utils import SerializableLock

        return SerializableLock()
    del client  # the lock finds the running client itself
    return Lock(f"geot2e-to-cog-{uuid.uuid4().hex}")


def to_cog(
    da: xr.DataArray,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    compress: str | None = "deflate",
    blocksize: int = 512,
    overviews: str | int | None = "auto",
    resampling: str = "average",
    nodata: float | None = None,
    tags: Mapping[str, Any] | None = None,
    synthesized: Any = None,
    progress: bool = False,
) -> Path:
    """Write ``da`` as a Cloud-Optimized GeoTIFF.

    Parameters
    ----------
    da : xarray.DataArray
        (band, y, x) or (y, x) raster, numpy- or dask-backed, with rioxarray CRS and
        transform. Dask blocks are computed and written one at a time.
    path : str or os.PathLike
        Destination file. Written atomically: it appears complete or not at all.
    overwrite : bool, default False
        Replace an existing file.
    compress : str, default "deflate"
        One of :data:`COMPRESSIONS` (``None`` or "none" for no compression). Lossless
        codecs use GDAL's predictor.
    blocksize : int, default 512
        Internal tile size in pixels (a multiple of 16).
    overviews : "auto", int or "none", default "auto"
        ``"auto"``: halve until the smallest level fits in one tile; an int: that many
        levels; ``"none"``/0/None: no overviews.
    resampling : str, default "average"
        Overview resampling, one of :data:`RESAMPLINGS` (use "nearest" or "mode" for
        classes).
    nodata : float, optional
        Nodata value to record; default ``da.rio.nodata``. Values are not changed,
        except for a masked read (``rio.encoded_nodata`` set): NaN becomes the encoded
        nodata and the original dtype is restored, as rioxarray does.
    tags : dict, optional
        Extra GDAL metadata items. Keys starting with ``geot2e_`` join the provenance
        (``GEOT2E_PROVENANCE`` JSON tag, together with ``da.attrs``' ``geot2e_*``);
        other str values are written as they are, others JSON-encoded.
    synthesized : None, "none", bool or (y, x) bool array, default None
        Synthesized-pixel map written as an extra last band named ``synthesized``
        (1 = synthesized, 0 = original). None uses ``da.coords["synthesized"]`` when
        present; "none" (or False) writes no such band.
    progress : bool, default False
        Show a dask progress bar while blocks are computed.

    Returns
    -------
    pathlib.Path
        The absolute path of the written COG.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False.
    OutputPathError
        The directory is missing or not writable.
    DimensionError, EmptyRasterError, GridMismatchError, ParameterError
        Bad input or options. All these are checked before anything is computed.
    """
    import dask
    import dask.array as dsa
    import rasterio
    import rasterio.shutil
    import rioxarray  # noqa: F401 - registers the .rio accessor (geot2e imports the raster stack lazily)

    dest = check_output_path(path, overwrite=overwrite, kind="file")
    comp, blocksize, ovr, res = _check_options(compress, blocksize, overviews, resampling)
    da = _as_band_yx(da)
    if nodata is None and da.rio.encoded_nodata is not None:
        nodata = da.rio.encoded_nodata
        target = np.dtype(da.encoding.get("rasterio_dtype", da.encoding.get("dtype", da.dtype)))
        da = da.fillna(nodata).astype(target)
    elif nodata is None:
        nodata = da.rio.nodata
    dtype = _out_dtype(np.dtype(da.dtype))
    nodata = _check_nodata(nodata, dtype)
    syn = _synthesized_map(da, synthesized)
    if syn is not None and nodata == 1:
        raise ParameterError(
            "nodata=1 would hide the synthesized pixels (value 1) of the 'synthesized' band; "
            "write with another nodata, or pass synthesized='none'."
        )
    descriptions = _band_descriptions(da)
    gdal_tags = _tags(da, tags)
    scale = da.attrs.get("scale_factor", 1.0)
    offset = da.attrs.get("add_offset", 0.0)
    crs = da.rio.crs
    transform = exact_transform(da)
    nb, ny, nx = da.shape

    data = da.data
    if not isinstance(data, dsa.Array):
        step = 4 * blocksize
        data = dsa.from_array(np.asarray(data), chunks=(nb, step, step))
    if data.dtype != dtype:
        data = data.astype(dtype)
    count = nb
    valid = None
    if syn is not None and nodata is not None:  # GDAL internal mask: keeps the flags band from being read as one
        valid = (dsa.isnan(data) if isinstance(nodata, float) and math.isnan(nodata) else data == nodata)
        valid = (~valid.all(axis=0, keepdims=True)).astype(np.uint8) * np.uint8(255)
    if syn is not None:
        if not isinstance(syn, dsa.Array):
            syn = dsa.from_array(np.asarray(syn), chunks=data.chunks[1:])
        else:
            syn = syn.rechunk(data.chunks[1:])
        data = dsa.concatenate([data, (syn != 0).astype(dtype)[None]], axis=0)
        count = nb + 1
        descriptions = descriptions + [SYNTHESIZED_NAME]
        gdal_tags[SYNTHESIZED_TAG] = str(count)

    _remove_stale_temporaries(dest)
    stem = dest.with_name(f".{dest.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}")
    tmp_tiff = Path(f"{stem}.part.tif")
    tmp_cog = Path(f"{stem}.cog.tif")
    try:
        profile = dict(
            driver="GTiff", width=nx, height=ny, count=count, dtype=dtype.name, crs=crs,
            transform=transform, nodata=nodata, tiled=True, blockxsize=blocksize,
            blockysize=blocksize, compress="deflate", zlevel=1, bigtiff="IF_SAFER",
        )
        if syn is not None:
            profile["alpha"] = "UNSPECIFIED"  # the extra flags band is never alpha
        with rasterio.open(tmp_tiff, "w", **profile) as dst:
            for i, desc in enumerate(descriptions, start=1):
                if desc:
                    dst.set_band_description(i, desc)
            dst.update_tags(**gdal_tags)
            if syn is not None:
                dst.update_tags(count, **{ROLE_TAG: SYNTHESIZED_NAME})
            dst.colorinterp = _colorinterp(dst.colorinterp, descriptions[:nb], syn is not None)
            if (scale, offset) != (1.0, 0.0):
                dst.scales = [float(scale)] * nb + [1.0] * (count - nb)
                dst.offsets = [float(offset)] * nb + [0.0] * (count - nb)
        if valid is None:
            store = dsa.store(data, _WindowWriter(str(tmp_tiff)), lock=_write_lock(), compute=False)
        else:
            store = dsa.store([data, valid], [_WindowWriter(str(tmp_tiff)), _WindowWriter(str(tmp_tiff), mask=True)],
                              lock=_write_lock(), compute=False)
        if progress:
            from dask.diagnostics import ProgressBar

            with ProgressBar():
                dask.compute(store)
        else:
            dask.compute(store)
        options = dict(
            COMPRESS=comp.upper(), BLOCKSIZE=blocksize, RESAMPLING=res.upper(), BIGTIFF="IF_SAFER",
            OVERVIEWS="NONE" if ovr == 0 else "AUTO",
        )
        if isinstance(ovr, int) and ovr > 0:
            options["OVERVIEW_COUNT"] = ovr
        if comp in _PREDICTOR:
            options["PREDICTOR"] = "YES"
        rasterio.shutil.copy(tmp_tiff, tmp_cog, driver="COG", **options)
        os.replace(tmp_cog, dest)
    finally:
        for name in os.listdir(dest.parent):
            if name.startswith(stem.name):  # temporaries and any GDAL side files
                remove_quietly(dest.parent / name)
    return dest
