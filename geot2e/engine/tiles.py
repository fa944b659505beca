"""Work on one tile and on one output block (numpy + torch; no xarray, no dask).

The same functions run in the eager (numpy) path and inside dask tasks, on windows
assembled from whatever blocks hold them, so the values the model sees (and therefore
its outputs) never depend on chunking.

A tile result is a float32 array ``(K, C, h, w)`` in the model's [-1, 1] space covering
its cell, NaN where the cell's pixels were not synthesized (outside the mask).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..sampling import MODEL_SAMPLING, OPTIONS
from .grid import TileGrid
from .noise import sample_noise

__all__ = ["ModelRef", "Job", "torch_threads", "paste", "invalid_pixels", "spatial_multiple", "cell_items",
           "run_batch", "run_cell", "assemble"]


class ModelRef:
    """A picklable reference to a model: its checkpoint folder and device.

    In-process the live model object is used directly; pickled (dask.distributed) only
    the path travels and each worker loads the model once (``load_model`` caches it).
    """

    def __init__(self, model, device: str):
        self.path = getattr(model, "source", None)
        self.device = device
        self.few_step = getattr(model, "student_steps", None) is not None   # a folder's few-step student
        self.translate = getattr(model, "controlnet", None) is not None     # with its translation ControlNet
        self.modality = getattr(model, "modality", None)                     # with a modality adapter merged
        self.detail = getattr(model, "detail_net", None) is not None         # with its pixel-detail network
        self._model = model

    def get(self):
        if self._model is None:
            from ..models import load_model

            self._model = load_model(self.path, device=self.device, few_step=self.few_step,
                                     translate=getattr(self, "translate", False),
                                     modality=getattr(self, "modality", None),
                                     detail=getattr(self, "detail", True))
        return self._model

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.path is not None:
            state["_model"] = None  # never ship weights when a checkpoint path exists
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"ModelRef({self.path!r}, device={self.device!r})"


@dataclass(frozen=True)
class Job:
    """Everything a tile task needs besides its pixels (small, picklable)."""

    grid: TileGrid
    model: ModelRef
    scaling: Any  # geot2e.geo.Radiometry: to_model / from_model, per band
    nodata: Any
    dtype: np.dtype
    prompt: str = ""
    gsd: float | None = None
    guidance: float = OPTIONS["guidance"]     # defaults: the table geot2e.sampling
    guidance_interval: float = OPTIONS["guidance_interval"]  # see Text2Earth.inpaint
    steps: int = MODEL_SAMPLING["steps"]
    scheduler: str = MODEL_SAMPLING["scheduler"]
    seed: int = OPTIONS["seed"]
    samples: int = OPTIONS["samples"]
    harmonize: bool | str = MODEL_SAMPLING["harmonize"]  # see Text2Earth.inpaint
    key: tuple[int, ...] = field(default=())  # (run, *leading index): part of the noise key
    threads: int | None = None                # torch CPU threads the tile runs with (see torch_threads)
    tight: bool = True                        # run on tight windows (False: every cell on its full window)
    joint: bool = True                        # a hole across cell borders runs whole in one cell's window
                                              # (TileGrid.joint_owner; False: split at the cell edges)
    batch: bool = True                        # windows of similar size share a model call (False: one each)
    task: str | None = None                   # a translation task (geot2e.models.control.TASKS): not inpainting
    scale: int = 1                            # the translation's resolution factor
    control_bands: int = 0                    # trailing raster bands that are the translation's input
    strength: float | None = None             # the translation's start (geot2e.models.control.STRENGTH)

    #: the sampling options a Job takes from the API's resolved options (engine.raster.Options)
    OPTION_FIELDS = ("guidance", "guidance_interval", "steps", "scheduler", "seed", "samples", "harmonize",
                     "threads", "task", "scale", "control_bands", "strength")

    @classmethod
    def from_options(cls, opts, **fields) -> "Job":
        """A Job with the sampling options of ``opts`` (:class:`geot2e.engine.raster.Options`)
        and the tile-specific ``fields`` (grid, model, scaling, nodata, dtype, prompt, gsd, key)."""
        return cls(**{name: getattr(opts, name) for name in cls.OPTION_FIELDS}, **fields)


@contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads in *this* thread, then restore.

    OpenMP's thread count is per thread: a dask worker thread does not inherit the main
    thread's ``torch.set_num_threads``, and kernels split reductions by thread count, so
    pinning it per tile is what makes numpy, threaded-dask and distributed runs agree bit for bit.
    """
    import torch

    if not n:
        yield
        return
    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def paste(blocks: Sequence[np.ndarray], offsets: Sequence[tuple[int, int]], region: tuple[int, int, int, int],
          fill) -> np.ndarray:
    """Cut ``region = (y0, y1, x0, x1)`` out of blocks placed at ``offsets`` (their global
    (y, x) origins). Pixels of the region no block covers get ``fill``."""
    y0, y1, x0, x1 = region
    b0 = blocks[0]
    out = np.full(b0.shape[:-2] + (y1 - y0, x1 - x0), fill, dtype=b0.dtype)
    for b, (by, bx) in zip(blocks, offsets):
        ys, ye = max(y0, by), min(y1, by + b.shape[-2])
        xs, xe = max(x0, bx), min(x1, bx + b.shape[-1])
        if ys < ye and xs < xe:
            out[..., ys - y0:ye - y0, xs - x0:xe - x0] = b[..., ys - by:ye - by, xs - bx:xe - bx]
    return out


def invalid_pixels(block: np.ndarray, nodata) -> np.ndarray:
    """(h, w) bool: pixels where any band is NaN/inf or equals ``nodata``."""
    bad = np.zeros(block.shape[-2:], dtype=bool)
    if np.issubdtype(block.dtype, np.floating):
        bad |= ~np.isfinite(block).all(axis=0)
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        bad |= (block == nodata).any(axis=0)
    return bad


def _fill_value(dtype: np.dtype):
    return np.nan if np.issubdtype(dtype, np.floating) else 0


def spatial_multiple(model) -> int:
    """Pixels that a model input's height and width must be multiples of: the VAE factor
    times the UNet's downsampling (``2 ** (levels - 1)``); the VAE factor alone for models
    without a diffusers UNet config."""
    f = int(model.vae_factor)
    chans = getattr(getattr(getattr(model, "unet", None), "config", None), "block_out_channels", None)
    return f * 2 ** (len(chans) - 1) if chans else f


def _owned(job: Job, model, i: int, j: int, window_mask: np.ndarray) -> tuple[list, np.ndarray]:
    """``(windows, owner)`` of cell (i, j) (:meth:`TileGrid.cell_windows` over its window's
    mask); with ``job.tight=False`` its whole window, writing the cell's masked pixels."""
    grid = job.grid
    if job.tight:
        return grid.cell_windows(i, j, window_mask, spatial_multiple(model), joint=job.joint)
    wy0, _, wx0, _ = grid.window(i, j)
    cy0, cy1, cx0, cx1 = grid.cell(i, j)
    owner = np.full(window_mask.shape, -1, dtype=np.int32)
    sub = (slice(cy0 - wy0, cy1 - wy0), slice(cx0 - wx0, cx1 - wx0))
    owner[sub][window_mask[sub]] = 0
    return [grid.window(i, j)], owner


def _window_input(job: Job, model, i: int, j: int, k: int, box, blocks, offsets, mblocks,
                  context_values, context_bounds):
    """What the model sees for window ``box`` of cell (i, j): images (K, C, h, w), unknown
    mask (K, 1, h, w), noise (K, c, h/f, w/f), the pixels this window writes (over the cell's
    window), and the translation's input (K, job.control_bands, h, w) in model space (None
    without one)."""
    import torch

    grid = job.grid
    f = model.vae_factor
    wy0, wy1, wx0, wx1 = grid.window(i, j)
    _, owner = _owned(job, model, i, j, paste(mblocks, offsets, (wy0, wy1, wx0, wx1), False))
    own = owner == k
    ry0, ry1, rx0, rx1 = box
    raw = paste(blocks, offsets, box, _fill_value(blocks[0].dtype))
    m = paste(mblocks, offsets, box, False)
    inside = np.zeros(m.shape, dtype=bool)
    inside[:max(0, grid.height - ry0), :max(0, grid.width - rx0)] = True
    unknown = m | invalid_pixels(raw, job.nodata) | ~inside
    x = np.clip(job.scaling.to_model(raw), -1.0, 1.0)
    k_samples = job.samples
    control = None
    if job.control_bands:                     # the translation's input: never masked, never written
        nc = x.shape[0] - job.control_bands
        ctrl = np.where(invalid_pixels(raw[nc:], job.nodata), 0.0, x[nc:]).astype(np.float32)
        hh, ww = max(1, min(m.shape[0], grid.height - ry0)), max(1, min(m.shape[1], grid.width - rx0))
        ctrl[:, hh:, :] = ctrl[:, hh - 1:hh, :]          # past the raster's edge: its last row / column
        ctrl[:, :, ww:] = ctrl[:, :, ww - 1:ww]
        control = np.repeat(ctrl[None], k_samples, axis=0)
        x = x[:nc]
    x[:, unknown] = 0.0
    xs = np.repeat(x[None], k_samples, axis=0)
    unk = np.repeat(unknown[None, None], k_samples, axis=0)
    for vals, (vy0, vy1, vx0, vx1) in zip(context_values, context_bounds):
        ys, ye, xs0, xe = max(vy0, ry0), min(vy1, ry1), max(vx0, rx0), min(vx1, rx1)
        if ys >= ye or xs0 >= xe:
            continue
        sub = vals[:, :, ys - vy0:ye - vy0, xs0 - vx0:xe - vx0]
        known = ~np.isnan(sub[:, :1])  # (K, 1, h, w)
        dst = xs[:, :, ys - ry0:ye - ry0, xs0 - rx0:xe - rx0]
        np.copyto(dst, sub, where=np.broadcast_to(known, sub.shape))
        u = unk[:, :, ys - ry0:ye - ry0, xs0 - rx0:xe - rx0]
        u &= ~known
    # the cell window's keyed noise, cut to this window (offsets are multiples of f), so each
    # latent position gets the same noise whatever part of the window runs
    shape = (model.latent_channels, (wy1 - wy0) // f, (wx1 - wx0) // f)
    ly, lx = (ry0 - wy0) // f, (rx0 - wx0) // f
    noise = torch.stack([sample_noise(shape, job.seed, *job.key, i, j, sample=s)[:, ly:ly + (ry1 - ry0) // f,
                                                                                lx:lx + (rx1 - rx0) // f]
                         for s in range(k_samples)])
    return xs, unk, noise, own, control


def run_batch(job: Job, items, blocks, offsets, mblocks, context_values=(), context_bounds=()) -> tuple:
    """Synthesize the masked pixels of several windows of one shape in one model call.

    Parameters
    ----------
    job : Job
    items : list of (i, j, k, box, bounds)
        Cell row and column, the window's index among the cell's windows
        (:meth:`TileGrid.cell_windows`; 0 with ``job.tight=False``), its bounds (global
        pixels, the same shape for every item) and the bounds of the pixels it writes
        (:func:`cell_items`).
    blocks, offsets, mblocks : per item, the raw input blocks (C, h, w), their global (y, x)
        origins and the mask blocks that together cover the item's cell window.
    context_values, context_bounds : results of already-run windows (pass A) and their
        written bounds: their synthesized pixels are known context.

    Returns
    -------
    tuple of (K, C, h, w) float32 arrays in [-1, 1], one per item, over its written
    bounds, NaN except on the masked pixels the item writes.
    """
    import torch

    model = job.model.get()
    parts = [_window_input(job, model, i, j, k, box, bl, off, ml, context_values, context_bounds)
             for (i, j, k, box, _), bl, off, ml in zip(items, blocks, offsets, mblocks)]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    masks = torch.from_numpy(np.concatenate([p[1] for p in parts]).astype(np.float32))
    sampling = dict(gsd=job.gsd, prompts=job.prompt, guidance=job.guidance, steps=job.steps,
                    scheduler=job.scheduler, noise=torch.cat([p[2] for p in parts]), harmonize=job.harmonize,
                    guidance_interval=job.guidance_interval)
    if getattr(model, "detail_net", None) is not None:       # the pixel-detail network (geot2e.models.detail)
        if job.task is not None:
            sampling["detail"] = False   # translation's detail is its own (the guide's, the PAN's, the NIR's)
        elif job.samples > 1:
            sampling["detail"] = 0.0     # the mean of K: each fill's expected image (its pixel grain averages to 0)
    with torch_threads(job.threads):
        if job.task is not None:
            from ..models.control import split_control, translate_tiles

            guide, aux = split_control(job.task, torch.from_numpy(np.concatenate([p[4] for p in parts])))
            out = translate_tiles(model, job.task, guide, aux, known=images, mask=masks, scale=job.scale,
                                  strength=job.strength, **sampling)
        else:
            out = model.inpaint(images, masks, **sampling)
    out = out.detach().to("cpu", torch.float32).numpy()
    k_samples = job.samples
    results = []
    for n, ((i, j, _k, box, (by0, by1, bx0, bx1)), part) in enumerate(zip(items, parts)):
        wy0, _, wx0, _ = job.grid.window(i, j)
        vals = np.clip(out[n * k_samples:(n + 1) * k_samples, :, by0 - box[0]:by1 - box[0], bx0 - box[2]:bx1 - box[2]],
                       -1.0, 1.0)
        own = part[3][by0 - wy0:by1 - wy0, bx0 - wx0:bx1 - wx0]
        vals[:, :, ~own] = np.nan
        results.append(np.ascontiguousarray(vals, dtype=np.float32))
    return tuple(results)


def cell_items(job: Job, model, i: int, j: int, window_mask) -> list:
    """The windows cell (i, j) runs on, as ``(i, j, k, box, bounds)`` items: window ``k`` of
    :meth:`TileGrid.cell_windows` (its whole window with ``job.tight=False``), its pixel bounds,
    and the bounding box of the pixels it writes (the cell, with ``job.tight=False``).
    ``window_mask`` is the mask over the cell's window (:meth:`TileGrid.window`)."""
    wins, owner = _owned(job, model, i, j, np.asarray(window_mask, dtype=bool))
    if not job.tight:
        return [(i, j, 0, wins[0], job.grid.cell(i, j))] if (owner == 0).any() else []
    wy0, _, wx0, _ = job.grid.window(i, j)
    items = []
    for k, w in enumerate(wins):
        rows, cols = np.flatnonzero((owner == k).any(axis=1)), np.flatnonzero((owner == k).any(axis=0))
        items.append((i, j, k, w, (wy0 + int(rows[0]), wy0 + int(rows[-1]) + 1,
                                   wx0 + int(cols[0]), wx0 + int(cols[-1]) + 1)))
    return items


def run_cell(job: Job, i: int, j: int, blocks, offsets, mblocks, context_values=(), context_cells=()) -> np.ndarray:
    """Synthesize the masked pixels of cell (i, j) alone, each of its windows in its own call.

    The engine runs windows in batches (:func:`run_batch`); this is the one-cell form, for
    controls and tests: every hole is split at the cell's edges (``joint=False``), so the
    cells' results together cover the mask. ``context_values`` are cell-shaped results over
    ``context_cells``.

    Returns
    -------
    (K, C, h, w) float32 in [-1, 1] for the cell, NaN outside the mask.
    """
    import dataclasses

    job = dataclasses.replace(job, joint=False)
    grid = job.grid
    model = job.model.get()
    cy0, cy1, cx0, cx1 = grid.cell(i, j)
    wm = paste(mblocks, offsets, grid.window(i, j), False)
    bounds = [grid.cell(*c) if len(c) == 2 else c for c in context_cells]
    cell = None
    for item in cell_items(job, model, i, j, wm):
        (vals,) = run_batch(job, [item], [blocks], [offsets], [mblocks], context_values, bounds)
        if cell is None:
            cell = np.full((vals.shape[0], vals.shape[1], cy1 - cy0, cx1 - cx0), np.nan, dtype=np.float32)
        by0, by1, bx0, bx1 = item[4]
        dst = cell[:, :, by0 - cy0:by1 - cy0, bx0 - cx0:bx1 - cx0]
        np.copyto(dst, vals, where=~np.isnan(vals))
    if cell is None:
        cell = np.full((job.samples, blocks[0].shape[0], cy1 - cy0, cx1 - cx0), np.nan, dtype=np.float32)
    return cell


def assemble(job: Job, block: np.ndarray, offset: tuple[int, int], mblock: np.ndarray,
             cell_values=(), cell_bounds=()):
    """Composite synthesized windows (or cells) into one output block.

    ``cell_values`` / ``cell_bounds``: the results of :func:`run_batch` (or :func:`run_cell`)
    and the pixels they cover; each masked pixel of the block must be written (not NaN) by
    exactly one of them.

    Returns ``(out, uncertainty)``: ``out`` is a copy of ``block`` (input dtype) with the
    masked pixels replaced (the mean of the samples when K > 1); ``uncertainty`` is
    float32 (C, h, w), the per-pixel standard deviation across samples in input units
    (0 outside the mask), or None when K == 1. Every pixel goes through the same
    elementwise arithmetic whatever the block layout, so results do not depend on chunks.
    """
    out = np.array(block, copy=True)
    k = job.samples
    unc = np.zeros(block.shape, dtype=np.float32) if k > 1 else None
    where = np.asarray(mblock, dtype=bool)
    if not where.any():
        return out, unc
    rad = job.scaling
    nc = block.shape[0] - job.control_bands  # bands written (a translation's input bands are not)
    if job.control_bands:
        import dataclasses

        rad = dataclasses.replace(rad, lo=rad.lo[:nc], hi=rad.hi[:nc])
    scale = (np.asarray(rad.hi, np.float64) - np.asarray(rad.lo, np.float64)) / 2.0
    by, bx = offset
    h, w = block.shape[-2:]
    written = 0
    for vals, (cy0, cy1, cx0, cx1) in zip(cell_values, cell_bounds):
        ys, ye, xs, xe = max(cy0, by), min(cy1, by + h), max(cx0, bx), min(cx1, bx + w)
        if ys >= ye or xs >= xe:
            continue
        sub = vals[:, :, ys - cy0:ye - cy0, xs - cx0:xe - cx0]
        sel = where[ys - by:ye - by, xs - bx:xe - bx] & ~np.isnan(sub[0, 0])
        if not sel.any():
            continue
        picked = sub[:, :, sel]  # (K, C, n), model space
        if np.isnan(picked).any():
            raise RuntimeError("internal error: a masked pixel was not synthesized in every band and sample")
        mean = picked[0].astype(np.float64)
        for s in range(1, k):
            mean += picked[s]
        mean /= k
        dst = out[:nc, ys - by:ye - by, xs - bx:xe - bx]
        dst[:, sel] = rad.from_model(mean[:, :, None], dtype=out.dtype)[:, :, 0]
        if k > 1:
            var = np.zeros_like(mean)
            for s in range(k):
                var += (picked[s] - mean) ** 2
            unc[:nc, ys - by:ye - by, xs - bx:xe - bx][:, sel] = (np.sqrt(var / k) * scale[:, None]).astype(np.float32)
        written += int(sel.sum())
    if written != int(where.sum()):
        raise RuntimeError("internal error: a masked pixel lies in no synthesized window, or in two")
    return out, unc
