"""Image-to-image translation of georeferenced rasters: the working raster behind
:func:`geot2e.translate`.

Super-resolution and pan-sharpening put the result on a finer grid (an integer refinement
of the input's, :mod:`geot2e.geo.refine`); NIR → RGB and dehazing keep the input's grid.
Every task runs through the same tiled engine as :func:`geot2e.inpaint` (seam-free windows,
dask laziness, chunk invariance, ``samples=K`` with an ``uncertainty`` coordinate,
provenance), with the model's translation ControlNet (:mod:`geot2e.models.control`) reading
the input bands, which travel with the tiles as extra bands of the working raster.
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any
import numpy as np
import xarray as xr

from .errors import BandCountError, ParameterError
from .sampling import SR_SCALES, TRANSLATION_TASKS

__all__ = ["TASKS", "SR_SCALES", "OUTPUT_BANDS", "Prepared", "check_request", "prepare", "full_mask", "finish",
           "scaling_of"]

TASKS = TRANSLATION_TASKS
OUTPUT_BANDS = ["red", "green", "blue"]


def _bands(da: xr.DataArray, want: list[str], what: str) -> xr.DataArray:
    """``da`` as (band, y, x) with the ``want`` bands: named ones picked by their labels, or
    exactly ``len(want)`` unnamed bands taken in order."""
    from .geo import spatial_dims

    ydim, xdim = spatial_dims(da)
    if da.ndim == 2:
        da = da.expand_dims(band=[1])
    others = [d for d in da.dims if d not in (ydim, xdim)]
    if len(others) != 1:
        from .errors import DimensionError

        raise DimensionError(f"{what} must be (band, y, x) or (y, x); got dims {da.dims} (translate one time "
                             "slice at a time: da.isel(time=0)).")
    bd = others[0]
    da = da.transpose(bd, ydim, xdim)
    from .geo.bands import role_of

    # band labels: roles, aliases or sensor band names (B08, SR_B5), as geot2e.geo.bands reads them
    labels = [role_of(str(v)) or str(v).lower() for v in np.atleast_1d(da[bd].values)] if bd in da.coords else []
    if all(w in labels for w in want):
        return da.isel({bd: [labels.index(w) for w in want]})
    if da.sizes[bd] != len(want):
        raise BandCountError(f"{what} has {da.sizes[bd]} bands {labels or ''}; give {len(want)} band(s) "
                             f"({', '.join(want)}, in that order), or label them: da.assign_coords(band={want}).")
    return da


def _concat(parts: list[xr.DataArray], like: xr.DataArray) -> xr.DataArray:
    """Stack (band, y, x) parts on ``like``'s grid (its coordinates) into one raster."""
    ydim, xdim = like.dims[-2:]
    arrs = []
    for p in parts:
        p = p.rename({p.dims[0]: "band", p.dims[1]: ydim, p.dims[2]: xdim})
        arrs.append(p.drop_vars(list(p.coords)).assign_coords({ydim: like[ydim].values, xdim: like[xdim].values}))
    dtype = np.result_type(*[a.dtype for a in arrs])
    out = xr.concat([a.astype(dtype) for a in arrs], dim="band", coords="minimal", compat="override")
    out = out.assign_coords(band=np.arange(1, out.sizes["band"] + 1))
    out = out.rio.write_crs(like.rio.crs).rio.write_transform(like.rio.transform())
    nd = like.rio.nodata
    if nd is not None:
        out = out.rio.write_nodata(nd)
    out.attrs = {k: v for k, v in out.attrs.items() if k not in ("long_name", "scale_factor", "add_offset")}
    return out


def scaling_of(reference: xr.DataArray, task: str):
    """The value scaling (:class:`~geot2e.geo.Radiometry`) of ``task``'s input bands fitted on
    ``reference``, another raster of the same sensor (e.g. a clear acquisition of the place):
    what ``translate(..., radiometry=)`` takes when the input's own percentiles mislead, as
    for a raster hazy all over."""
    if task not in TASKS:
        raise ParameterError(f"unknown translation task {task!r}; choose one of {list(TASKS)}.")
    return _fit(_bands(reference, _input_bands(task), "the scaling reference"), task=task)


def _input_bands(task: str) -> list[str]:
    """The bands of a task's raster (``da``): the NIR band for ``nir_to_rgb``, else RGB."""
    return ["nir"] if task == "nir_to_rgb" else OUTPUT_BANDS


#: the percentiles a task's input is scaled by (the model's [-1, 1]) unless a radiometry is
#: given; other tasks take :meth:`~geot2e.geo.Radiometry.fit`'s robust default (0.5, 99.5).
#: The resolution tasks keep every input value (0, 100): their input is known everywhere and
#: comes back at its own resolution, and the pixels beyond the robust range, clipped, cost
#: 0.5 dB (super-resolution, Landsat 224/077) and 0.8 dB (pan-sharpening, real Landsat PAN)
FIT_PERCENTILES = {"super_resolution": (0.0, 100.0), "pansharpen": (0.0, 100.0)}


def _fit(da: xr.DataArray, radiometry=None, task: str | None = None):
    from .geo import Radiometry

    if radiometry is not None:
        return radiometry
    low, high = FIT_PERCENTILES.get(task, (None, None))
    extra = {} if low is None else {"low": low, "high": high}
    return Radiometry.fit(da, nodata=da.rio.nodata, **extra)


def _joint_radiometry(rads, dtype):
    """One scaling for the working raster from its parts' (band counts add up)."""
    from .geo import Radiometry

    first = rads[0]
    return Radiometry(lo=tuple(v for r in rads for v in r.lo), hi=tuple(v for r in rads for v in r.hi),
                      dtype=str(np.dtype(dtype)), nodata=first.nodata, low=first.low, high=first.high,
                      n_pixels=first.n_pixels, stride=first.stride, method=first.method)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The working raster of a translation: the three output bands (placeholders in the
    input's units, all synthesized), then the task's input bands
    (:data:`geot2e.models.control.CONTROL_BANDS`), on the output grid, with its scaling."""

    work: xr.DataArray
    radiometry: Any
    guide: xr.DataArray           # the input on the output grid (what the GSD is read from)
    scale: int
    control_bands: int


def check_request(task: str, da, control, scale, strength=None) -> None:
    """The typed errors of a request that need no model: task, scale, control and strength."""
    if strength is not None and (isinstance(strength, bool) or not isinstance(strength, numbers.Real)
                                 or not 0 < strength <= 1):
        raise ParameterError(f"strength must be a number in (0, 1] (where sampling starts), got {strength!r}.")
    if task not in TASKS:
        raise ParameterError(f"unknown translation task {task!r}; choose one of {list(TASKS)}.")
    if not isinstance(da, xr.DataArray):
        raise ParameterError(f"da must be an xarray.DataArray (rioxarray.open_rasterio(...)), got {type(da).__name__}.")
    if control is not None and task != "pansharpen":
        raise ParameterError(f"control= is the PAN band of task 'pansharpen'; {task!r} takes none.")
    if task == "pansharpen" and control is None:
        raise ParameterError("pansharpen needs control=<the PAN band> (a DataArray on its own finer grid).")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, numbers.Integral)):
        raise ParameterError(f"scale must be an integer, got {scale!r}.")
    if task == "super_resolution" and scale not in SR_SCALES:
        raise ParameterError(f"super_resolution needs scale= one of {SR_SCALES} (the output grid is that many "
                             f"times finer), got {scale!r}.")
    if task in ("nir_to_rgb", "dehaze") and scale not in (None, 1):
        raise ParameterError(f"{task!r} keeps the input's grid; leave scale unset (got {scale!r}).")


def prepare(da: xr.DataArray, task: str, *, control=None, scale: int | None = None, radiometry=None) -> Prepared:
    """The working raster of ``task`` on the output grid (:class:`Prepared`)."""
    from .geo.refine import refine, refinement_of
    from .models.control import CONTROL_BANDS

    src = _bands(da, _input_bands(task), "the NIR raster" if task == "nir_to_rgb" else "the RGB raster")
    s = 1
    if task == "pansharpen":
        pan = _bands(control, ["pan"], "the PAN band")
        s, src, pan = refinement_of(src, pan)
        if s < 2:
            raise ParameterError("the PAN band is on the same grid as the multispectral raster; pan-sharpening "
                                 "needs a finer PAN (e.g. Landsat 8 B8 at 15 m for 30 m bands).")
        if scale is not None and scale != s:
            raise ParameterError(f"scale={scale} but the PAN grid refines the raster's by {s}; leave scale unset.")
    elif task == "super_resolution":
        s = int(scale)
    rad_in = _fit(src, radiometry, task)
    guide = refine(src, s) if s > 1 else src
    if task == "nir_to_rgb":
        parts, part_rads = [src] * 4, [rad_in] * 4
    elif task == "pansharpen":
        parts, part_rads = [guide, guide, pan], [rad_in, rad_in, _fit(pan)]
    else:
        parts, part_rads = [guide, guide], [rad_in, rad_in]
    work = _concat(parts, guide)
    nc = CONTROL_BANDS[task]
    if int(work.sizes["band"]) != 3 + nc:
        raise RuntimeError(f"internal error: {task} built {work.sizes['band']} bands, expected {3 + nc}")
    return Prepared(work=work, radiometry=_joint_radiometry(part_rads, work.dtype), guide=guide, scale=s,
                    control_bands=nc)


def full_mask(work: xr.DataArray) -> xr.DataArray:
    """Every pixel of the working raster synthesized (lazy for a dask-backed one)."""
    ydim, xdim = work.dims[-2:]
    shape = (work.sizes[ydim], work.sizes[xdim])
    if hasattr(work.data, "dask"):
        import dask.array as dsa

        ones = dsa.ones(shape, dtype=bool, chunks=work.data.chunks[-2:])
    else:
        ones = np.ones(shape, dtype=bool)
    return xr.DataArray(ones, dims=(ydim, xdim), coords={ydim: work[ydim], xdim: work[xdim]})


def finish(res: xr.DataArray, da: xr.DataArray, prep: Prepared) -> xr.DataArray:
    """The engine's result as the user gets it: the output bands, ``da``'s dtype, attrs and
    nodata, the output grid's CRS and transform."""
    res = res.isel(band=slice(0, 3)).assign_coords(band=OUTPUT_BANDS)
    if res.dtype != da.dtype:
        res = res.astype(da.dtype)
    res.attrs = {**{k: v for k, v in da.attrs.items() if k not in ("long_name",)},
                 **{k: v for k, v in res.attrs.items() if k.startswith("geot2e_")}}
    res.attrs["long_name"] = tuple(OUTPUT_BANDS)
    res = res.rio.write_crs(prep.guide.rio.crs).rio.write_transform(prep.guide.rio.transform())
    nd = da.rio.nodata
    return res.rio.write_nodata(nd) if nd is not None else res
