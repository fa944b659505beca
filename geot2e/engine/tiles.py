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
from .noise import tile_noise

__all__ = ["ModelRef", "Job", "torch_threads", "paste", "invalid_pixels", "spatial_multiple", "run_cell",
           "assemble"]


class ModelRef:
    """A picklable reference to a model: its checkpoint folder and device.

    In-process the live model object is used directly; pickled (dask.distributed) only
    the path travels and each worker loads the model once (``load_model`` caches it).
    """

    def __init__(self, model, device: str):
        self.path = getattr(model, "source", None)
        self.device = device
        self._model = model

    def get(self):
        if self._model is None:
            from ..models import load_model

            self._model = load_model(self.path, device=self.device)
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

    #: the sampling options a Job takes from the API's resolved options (engine.raster.Options)
    OPTION_FIELDS = ("guidance", "guidance_interval", "steps", "scheduler", "seed", "samples", "harmonize",
                     "threads")

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


def run_cell(job: Job, i: int, j: int, blocks, offsets, mblocks, context_values=(), context_cells=()) -> np.ndarray:
    """Synthesize the masked pixels of cell (i, j).

    The model runs on the cell's tight window (:meth:`TileGrid.tight_window`): the
    bounding box of the cell's masked pixels plus a context margin of
    ``max(overlap, tile // 4)``, aligned to
    :func:`spatial_multiple`, inside the cell's window (the whole window when it does
    not fit), so the cost follows the masked area.

    Parameters
    ----------
    job : Job
    i, j : int
        Cell row and column in the global grid.
    blocks, offsets : raw input blocks (C, h, w) and their global (y, x) origins; together
        they cover the cell's window (inside the raster).
    mblocks : mask blocks (h, w), same offsets.
    context_values, context_cells : results of already-run cells (pass A) and their cell
        bounds: their synthesized pixels are known context for this cell.

    Returns
    -------
    (K, C, h, w) float32 in [-1, 1] for the cell, NaN outside the mask.
    """
    import torch

    grid = job.grid
    model = job.model.get()
    f = model.vae_factor
    wy0, wy1, wx0, wx1 = grid.window(i, j)
    cy0, cy1, cx0, cx1 = grid.cell(i, j)
    cm = paste(mblocks, offsets, (cy0, cy1, cx0, cx1), False)
    # the tight window: the cell's masked pixels + halo (a pure function of the mask)
    region = grid.tight_window(i, j, cm, spatial_multiple(model)) if job.tight else (wy0, wy1, wx0, wx1)
    ry0, ry1, rx0, rx1 = region
    raw = paste(blocks, offsets, region, _fill_value(blocks[0].dtype))
    m = paste(mblocks, offsets, region, False)
    inside = np.zeros(m.shape, dtype=bool)
    inside[:max(0, grid.height - ry0), :max(0, grid.width - rx0)] = True
    unknown = m | invalid_pixels(raw, job.nodata) | ~inside
    x = np.clip(job.scaling.to_model(raw), -1.0, 1.0)
    x[:, unknown] = 0.0
    k_samples = job.samples
    xs = np.repeat(x[None], k_samples, axis=0)
    unk = np.repeat(unknown[None, None], k_samples, axis=0)
    for vals, (vy0, vy1, vx0, vx1) in zip(context_values, context_cells):
        ys, ye, xs0, xe = max(vy0, ry0), min(vy1, ry1), max(vx0, rx0), min(vx1, rx1)
        if ys >= ye or xs0 >= xe:
            continue
        sub = vals[:, :, ys - vy0:ye - vy0, xs0 - vx0:xe - vx0]
        known = ~np.isnan(sub[:, :1])  # (K, 1, h, w)
        dst = xs[:, :, ys - ry0:ye - ry0, xs0 - rx0:xe - rx0]
        np.copyto(dst, sub, where=np.broadcast_to(known, sub.shape))
        u = unk[:, :, ys - ry0:ye - ry0, xs0 - rx0:xe - rx0]
        u &= ~known
    # the window's keyed noise, cut to the tight window (offsets are multiples of f), so
    # each latent position gets the same noise whatever part of the window runs
    shape = (model.latent_channels, (wy1 - wy0) // f, (wx1 - wx0) // f)
    ly, lx = (ry0 - wy0) // f, (rx0 - wx0) // f
    noise = torch.stack([tile_noise(shape, job.seed, *job.key, i, j, k)[:, ly:ly + (ry1 - ry0) // f,
                                                                         lx:lx + (rx1 - rx0) // f]
                         for k in range(k_samples)])
    with torch_threads(job.threads):
        out = model.inpaint(torch.from_numpy(xs), torch.from_numpy(unk.astype(np.float32)), gsd=job.gsd,
                            prompts=job.prompt, guidance=job.guidance, steps=job.steps, scheduler=job.scheduler,
                            noise=noise, harmonize=job.harmonize, guidance_interval=job.guidance_interval)
    out = out.detach().to("cpu", torch.float32).numpy()
    cell = np.full((k_samples, out.shape[1], cy1 - cy0, cx1 - cx0), np.nan, dtype=np.float32)
    ys, ye, xs0, xe = max(cy0, ry0), min(cy1, ry1), max(cx0, rx0), min(cx1, rx1)
    cell[:, :, ys - cy0:ye - cy0, xs0 - cx0:xe - cx0] = np.clip(
        out[:, :, ys - ry0:ye - ry0, xs0 - rx0:xe - rx0], -1.0, 1.0)
    cell[:, :, ~cm] = np.nan
    return np.ascontiguousarray(cell)


def assemble(job: Job, block: np.ndarray, offset: tuple[int, int], mblock: np.ndarray,
             cell_values=(), cell_bounds=()):
    """Composite synthesized cells into one output block.

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
    scale = (np.asarray(rad.hi, np.float64) - np.asarray(rad.lo, np.float64)) / 2.0
    by, bx = offset
    h, w = block.shape[-2:]
    written = 0
    for vals, (cy0, cy1, cx0, cx1) in zip(cell_values, cell_bounds):
        ys, ye, xs, xe = max(cy0, by), min(cy1, by + h), max(cx0, bx), min(cx1, bx + w)
        if ys >= ye or xs >= xe:
            continue
        sel = where[ys - by:ye - by, xs - bx:xe - bx]
        if not sel.any():
            continue
        picked = vals[:, :, ys - cy0:ye - cy0, xs - cx0:xe - cx0][:, :, sel]  # (K, C, n), model space
        if np.isnan(picked).any():
            raise RuntimeError("internal error: a masked pixel was not synthesized by its tile")
        mean = picked[0].astype(np.float64)
        for s in range(1, k):
            mean += picked[s]
        mean /= k
        dst = out[:, ys - by:ye - by, xs - bx:xe - bx]
        dst[:, sel] = rad.from_model(mean[:, :, None], dtype=out.dtype)[:, :, 0]
        if k > 1:
            var = np.zeros_like(mean)
            for s in range(k):
                var += (picked[s] - mean) ** 2
            unc[:, ys - by:ye - by, xs - bx:xe - bx][:, sel] = (np.sqrt(var / k) * scale[:, None]).astype(np.float32)
        written += int(sel.sum())
    if written != int(where.sum()):
        raise RuntimeError("internal error: a masked pixel lies in no synthesized tile")
    return out, unc
