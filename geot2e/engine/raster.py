"""Run the engine on rioxarray DataArrays: dims, slices, radiometry, result metadata.

:func:`synthesize` is what every public function ends in. It takes the raster and a
list of ``(mask, prompt)`` runs (one run, or one per prompt of a prompt map), and
returns a DataArray on the input's grid with the masked pixels synthesized.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import xarray as xr

from ..errors import EmptyMaskError, NodataError
from ..sampling import MODEL_SAMPLING, OPTIONS
from .execute import _is_dask, plan, run_eager, run_lazy
from .grid import TileGrid
from .bands import band_model_ref
from .tiles import Job

__all__ = ["Options", "synthesize", "plan_grid", "fit_radiometry", "run_slices", "assemble", "raster_dims",
           "fixed_scaling"]


@dataclass(frozen=True)
class Options:
    """Sampling and tiling options shared by every public function, resolved and validated by
    the API (defaults: the table :mod:`geot2e.sampling`, with the model's own sampler)."""

    guidance: float = OPTIONS["guidance"]
    guidance_interval: float = OPTIONS["guidance_interval"]  # share of the steps (noisiest first) that use guidance
    steps: int = MODEL_SAMPLING["steps"]
    seed: int = OPTIONS["seed"]
    samples: int = OPTIONS["samples"]
    tile: int = OPTIONS["tile"]
    overlap: int = OPTIONS["overlap"]
    scheduler: str = MODEL_SAMPLING["scheduler"]
    harmonize: str = MODEL_SAMPLING["harmonize"]  # "boundary", "lowpass" or "none" (geot2e.models.fill)
    progress: bool | None = OPTIONS["progress"]
    threads: int | None = OPTIONS["threads"]     # torch CPU threads per tile (None: leave the thread's setting)
    model_bands: tuple[int, ...] | None = None   # raster band of each model band (None: the same bands, in order)
    task: str | None = None                       # translation task (geot2e.translate); None: inpainting
    scale: int = 1                                # the translation's resolution factor
    control_bands: int = 0                        # trailing bands of the raster that are the translation's input
    strength: float | None = None                 # the translation's start (None: the task's default)


def raster_dims(da: xr.DataArray) -> tuple[list[str], str | None, str, str]:
    """``(leading dims, band dim or None, y dim, x dim)`` of a raster."""
    from ..geo import spatial_dims

    ydim, xdim = spatial_dims(da)
    others = [d for d in da.dims if d not in (ydim, xdim)]
    if not others:
        return [], None, ydim, xdim
    band = "band" if "band" in others else others[-1]
    return [d for d in others if d != band], band, ydim, xdim


def _token(*parts) -> str:
    from dask.base import tokenize

    return tokenize(*parts)


def _mask_for_slice(mask: xr.DataArray, leading: dict[str, int]):
    sel = {d: i for d, i in leading.items() if d in mask.dims}
    m = mask.isel(sel) if sel else mask
    return m.data


@dataclass(frozen=True)
class _Plan:
    """Stage 1's result: the raster in canonical dim order, its masks and tile grid, and which
    cells each (slice, run) synthesizes (only the masks decide)."""

    leading: list
    band: str | None
    ydim: str
    xdim: str
    canon: xr.DataArray           # (leading..., band?, y, x)
    nodata: Any
    masks: list                   # bool (y, x) or (leading..., y, x), one per run
    union: xr.DataArray
    grid: TileGrid
    lead_shape: list
    lead_index: list              # index tuples of the leading dims ([()] without any)
    lazy: bool
    cells: dict                   # (slice index, run) -> plan(grid, mask)

    @property
    def canon_dims(self) -> list:
        return [*self.leading, *([self.band] if self.band else []), self.ydim, self.xdim]

    @property
    def total(self) -> int:
        return sum(len(a) + len(b) for a, b in self.cells.values())

    def slice_mask(self, m, li):
        return _mask_for_slice(m, dict(zip(self.leading, li)))

    def slice_data(self, li):
        data = self.canon.data
        cur = data[li] if li else data
        if self.band is None:
            cur = cur[None]
        return cur if self.lazy else np.asarray(cur)

    def has_work(self, li) -> bool:
        return any(self.cells[li, r][0] or self.cells[li, r][1] for r in range(len(self.masks)))


def synthesize(da: xr.DataArray, runs: Sequence[tuple[xr.DataArray, str]], *, model, gsd: float | None,
               opts: Options, operation: str, radiometry=None, allow_empty: bool = False,
               extra_attrs: dict[str, Any] | None = None, prompt_attr: Any = None) -> xr.DataArray:
    """Synthesize the masked pixels of ``da``, in four named stages (as diffusers' pipelines
    number theirs): 1. :func:`plan_grid` (dims, masks, tile grid, cells to run); 2.
    :func:`fit_radiometry` (one value scaling per slice, all before any tile runs); 3.
    :func:`run_slices` (the tiles, eager or as a dask graph); 4. :func:`assemble` (the result
    on ``da``'s grid with its coordinates and provenance).

    Parameters
    ----------
    da : xarray.DataArray
        (band, y, x), (y, x) or (..., band, y, x) raster, numpy- or dask-backed.
    runs : list of (mask, prompt)
        Bool masks (y, x) — or (leading..., y, x) — on ``da``'s grid, run in order, each
        run seeing the previous runs' pixels as context.
    model : Text2Earth
    gsd : float or None
        GSD in metres given to the model (None: unknown).
    opts : Options
    operation : str
        Name recorded in the provenance.
    radiometry : geot2e.geo.Radiometry, optional
        Scaling to use instead of fitting one per slice.
    allow_empty : bool
        Return an unchanged copy instead of raising EmptyMaskError when no pixel is masked.

    Returns
    -------
    xarray.DataArray
        Same dims, coords, dtype, attrs, encoding as ``da``; masked pixels synthesized;
        a ``synthesized`` bool coordinate; an ``uncertainty`` coordinate when
        ``opts.samples > 1``; ``geot2e_*`` provenance attrs.
    """
    p = plan_grid(da, runs, model=model, opts=opts)
    if p.total == 0 and not allow_empty:
        raise EmptyMaskError("the mask selects no pixel to synthesize; check that the mask (or the "
                             "geometries) covers part of the raster, or use remove_clouds, which "
                             "accepts an empty mask.")
    rads = fit_radiometry(p, model=model, dtype=da.dtype, radiometry=radiometry)
    outs, uncs = run_slices(p, runs, rads, model=model, gsd=gsd, opts=opts, operation=operation,
                            radiometry=radiometry)
    return assemble(da, p, outs, uncs, rads, model=model, gsd=gsd, opts=opts, operation=operation,
                    prompt=prompt_attr if prompt_attr is not None else runs[0][1], extra_attrs=extra_attrs)


def plan_grid(da: xr.DataArray, runs, *, model, opts: Options) -> _Plan:
    """Stage 1: the raster in canonical dim order, the runs' bool masks and their union, the
    tile grid, and per (slice, run) the cells to synthesize."""
    from ..geo import get_nodata

    leading, band, ydim, xdim = raster_dims(da)
    canon = da.transpose(*leading, *([band] if band else []), ydim, xdim)
    masks = [m.astype(bool) for m, _ in runs]
    union = masks[0]
    for m in masks[1:]:
        union = union | m
    grid = TileGrid(int(da.sizes[ydim]), int(da.sizes[xdim]), opts.tile, opts.overlap, model.vae_factor)
    lead_shape = [int(da.sizes[d]) for d in leading]
    lead_index = list(np.ndindex(*lead_shape)) if leading else [()]
    cells = {}
    for li in lead_index:
        ldict = dict(zip(leading, li))
        for r, m in enumerate(masks):
            cells[li, r] = plan(grid, _mask_for_slice(m, ldict))
    return _Plan(leading=leading, band=band, ydim=ydim, xdim=xdim, canon=canon, nodata=get_nodata(da),
                 masks=masks, union=union, grid=grid, lead_shape=lead_shape, lead_index=lead_index,
                 lazy=_is_dask(canon.data), cells=cells)


def fit_radiometry(p: _Plan, *, model, dtype, radiometry=None) -> list:
    """Stage 2: the value scaling of every slice (the given one, the model's fixed one, or one
    fitted on the valid pixels outside the union of the masks), before any tile runs, so a
    slice without valid context fails early; None for a slice with nothing to synthesize."""
    fixed = fixed_scaling(model, dtype, p.nodata, bands=int(p.canon.sizes[p.band]) if p.band else 1)
    rads = []
    for li in p.lead_index:
        if radiometry is not None or fixed is not None:
            rads.append(radiometry if radiometry is not None else fixed)
            continue
        try:
            rads.append(_fit_radiometry(p.slice_data(li), p.slice_mask(p.union, li), p.nodata))
        except NodataError:
            if p.has_work(li):
                raise
            rads.append(None)  # nothing to synthesize in this slice: an unchanged copy needs no scaling
    return rads


def run_slices(p: _Plan, runs, rads, *, model, gsd, opts: Options, operation: str, radiometry=None):
    """Stage 3: run the tiles of every slice and run (each run sees the previous runs' pixels),
    eagerly with a progress bar, or as named dask tasks. Returns the slices' arrays and their
    uncertainties (None unless ``opts.samples > 1``)."""
    ref = band_model_ref(model, str(model.device), opts.model_bands)
    progress = opts.progress if opts.progress is not None else not p.lazy
    total = p.total
    bar = None
    if progress and not p.lazy and total:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"geot2e {operation}", unit="tile")
    base = ""
    if p.lazy:  # graph key names: everything the result depends on
        base = _token(p.canon.data.name, operation, opts, model.checkpoint_hash, str(model.device), gsd,
                      [pr for _, pr in runs], [m.data.name if _is_dask(m.data) else m.data for m in p.masks],
                      None if radiometry is None else radiometry.to_dict())
    outs, uncs = [], []
    try:
        for li, rad in zip(p.lead_index, rads):
            cur = p.slice_data(li)
            smask = [p.slice_mask(m, li) for m in p.masks]
            if not p.lazy:
                smask = [np.asarray(m, dtype=bool) for m in smask]
            unc = None
            for r, (m, (_, prompt)) in enumerate(zip(smask, runs)):
                cells = p.cells[li, r]
                if not (cells[0] or cells[1]):
                    continue
                job = Job.from_options(opts, grid=p.grid, model=ref, scaling=rad, nodata=p.nodata,
                                       dtype=np.dtype(p.canon.dtype), prompt=prompt, gsd=gsd, key=(r, *li))
                if p.lazy:
                    name = f"geot2e-{operation}-{base}-{r}-{'_'.join(map(str, li)) or 's'}"
                    cur, u = run_lazy(job, cur, m, name=name, cells=cells)
                else:
                    cur, u = run_eager(job, cur, m, cells=cells, progress=bar.update if bar else None)
                if u is not None:
                    unc = u if unc is None else _where(m, u, unc)
            if opts.samples > 1 and unc is None:
                unc = _zeros_like(cur, p.lazy)
            outs.append(cur if p.band is not None else cur[0])
            uncs.append(None if unc is None else (unc if p.band is not None else unc[0]))
    finally:
        if bar is not None:
            bar.close()
    return outs, uncs


def assemble(da: xr.DataArray, p: _Plan, outs, uncs, rads, *, model, gsd, opts: Options, operation: str,
             prompt: Any, extra_attrs: dict[str, Any] | None = None) -> xr.DataArray:
    """Stage 4: the slices stacked back onto ``da``'s grid, dims, chunks, attrs and encoding, with
    the ``synthesized`` (and ``uncertainty``) coordinates and the ``geot2e_*`` provenance."""
    from ..io import provenance_attrs

    out = _stack(outs, p.lead_shape, p.lazy)
    if p.lazy:
        out = out.rechunk(p.canon.data.chunks)
    result = p.canon.copy(data=out)
    coords = {"synthesized": ((p.ydim, p.xdim) if p.union.ndim == 2 else p.union.dims, p.union.data)}
    if opts.samples > 1:
        unc_arr = _stack(uncs, p.lead_shape, p.lazy)
        if p.lazy:
            unc_arr = unc_arr.rechunk(p.canon.data.chunks)
        coords["uncertainty"] = (tuple(p.canon_dims), unc_arr)
    result = result.assign_coords(coords)
    result["synthesized"].attrs = {"long_name": "pixel synthesized by geot2e"}
    if opts.samples > 1:
        result["uncertainty"].attrs = {
            "long_name": f"per-pixel standard deviation of {opts.samples} samples (input units)"}
    result = result.transpose(*da.dims)
    rad_info = [r.to_dict() if r is not None else None for r in rads]
    prov = provenance_attrs(
        operation=operation, model_id=model.model_id, checkpoint_hash=model.checkpoint_hash,
        prompt=prompt, guidance=float(opts.guidance), guidance_interval=float(opts.guidance_interval),
        steps=int(opts.steps), seed=int(opts.seed), samples=int(opts.samples), gsd=gsd,
        tile=int(opts.tile), overlap=int(opts.overlap), scheduler=opts.scheduler, threads=opts.threads,
        harmonize=opts.harmonize, radiometry=rad_info[0] if len(rad_info) == 1 else rad_info,
        **(extra_attrs or {}))
    result.attrs = {**da.attrs, **prov}
    result.encoding = dict(da.encoding)
    return result


def fixed_scaling(model, dtype, nodata, bands: int | None = None):
    """The fixed 0-255 scaling (:meth:`Radiometry.full_range`) for a uint8 raster when the model
    asks for it (official Text2Earth models: ``fixed_uint8_range``), else None (fit percentiles)."""
    if getattr(model, "fixed_uint8_range", False) and np.dtype(dtype) == np.uint8:
        from ..geo import Radiometry

        return Radiometry.full_range(bands or model.bands, nodata=nodata)
    return None


def _fit_radiometry(cur, umask, nodata):
    """Value scaling fitted on the valid pixels outside the mask, with a message that says why
    there are none (:class:`NodataError`)."""
    from ..geo import Radiometry

    try:
        return Radiometry.fit(cur, valid=~umask, nodata=nodata)
    except NodataError as e:
        try:
            Radiometry.fit(cur, nodata=nodata)
        except NodataError:
            raise NodataError(
                f"the raster has no valid pixel: every pixel is nodata ({nodata}) or NaN, so there is no "
                "context and no value range to work from; check its nodata value (da.rio.write_nodata(...)), "
                "or pass radiometry=geot2e.geo.Radiometry(lo=..., hi=...) to fill it anyway.") from e
        raise NodataError(
            "the mask covers every valid pixel of the raster, so no pixel is left as context or to fit the "
            "value scaling from; shrink the mask, pass radiometry=geot2e.geo.Radiometry.fit(da) (or explicit "
            "lo/hi), or use geot2e.generate(prompt, like=da) for a whole new scene.") from e


def _where(m, a, b):
    if _is_dask(a) or _is_dask(b) or _is_dask(m):
        import dask.array as dsa

        return dsa.where(m, a, b)
    return np.where(m, a, b)


def _zeros_like(a, lazy):
    if lazy:
        import dask.array as dsa

        return dsa.zeros(a.shape, dtype=np.float32, chunks=a.chunks)
    return np.zeros(a.shape, dtype=np.float32)


def _stack(arrs, lead_shape, lazy):
    if not lead_shape:
        return arrs[0]
    if lazy:
        import dask.array as dsa

        flat = dsa.stack(arrs)
    else:
        flat = np.stack(arrs)
    return flat.reshape(*lead_shape, *flat.shape[1:])
