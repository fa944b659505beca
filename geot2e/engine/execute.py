"""Run the two-pass checkerboard over a (C, H, W) array: eagerly (numpy) or as a dask graph.

Pass A runs the masked cells with ``(i + j)`` even, pass B the masked cells with
``(i + j)`` odd, each B cell taking the synthesized pixels of the A cells inside its
window as known context. Cells without masked pixels never run. Output blocks copy the
input and paste the synthesized pixels of the cells they intersect.

Both paths call :func:`~geot2e.engine.tiles.run_cell` with the same windows and the same
batch (one cell, ``samples`` images), so they give bit-identical results.
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from .grid import TileGrid
from .tiles import Job, assemble, run_cell

__all__ = ["plan", "run_eager", "run_lazy", "context_cells"]


def _is_dask(a) -> bool:
    try:
        import dask.array as dsa
    except ImportError:  # pragma: no cover
        return False
    return isinstance(a, dsa.Array)


def occupancy(grid: TileGrid, mask) -> np.ndarray:
    """(ny, nx) bool table of the cells holding masked pixels (computes a dask mask's
    tile-level summary, a small eager step)."""
    if not _is_dask(mask):
        return grid.occupancy(np.asarray(mask, dtype=bool))
    import dask.array as dsa

    t = grid.tile
    m = mask.astype(bool)
    pad = ((0, grid.ny * t - grid.height), (0, grid.nx * t - grid.width))
    if any(p[1] for p in pad):
        m = dsa.pad(m, pad, mode="constant", constant_values=False)
    step = max(1, 2048 // t) * t
    m = m.rechunk((step, step))
    return np.asarray(dsa.coarsen(np.any, m, {0: t, 1: t}).compute(), dtype=bool)


def plan(grid: TileGrid, mask) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Cells of pass A and pass B (only cells holding masked pixels)."""
    return grid.passes(occupancy(grid, mask))


def context_cells(grid: TileGrid, i: int, j: int, done: set) -> list[tuple[int, int]]:
    """Already-run cells (``done``) whose pixels fall inside the window of cell (i, j)."""
    return [c for c in grid.cells_touching(*grid.window(i, j)) if c in done and c != (i, j)]


def run_eager(job: Job, data: np.ndarray, mask: np.ndarray, *,
              cells: tuple[list, list] | None = None, progress: Callable[[int], None] | None = None):
    """Run on numpy arrays ``data`` (C, H, W) and ``mask`` (H, W); returns ``(out, uncertainty)``."""
    grid = job.grid
    mask = np.asarray(mask, dtype=bool)
    pass_a, pass_b = cells if cells is not None else plan(grid, mask)
    results: dict[tuple[int, int], np.ndarray] = {}
    for c in pass_a:
        results[c] = run_cell(job, *c, [data], [(0, 0)], [mask])
        if progress:
            progress(1)
    done_a = set(pass_a)
    for c in pass_b:
        ctx = context_cells(grid, *c, done_a)
        results[c] = run_cell(job, *c, [data], [(0, 0)], [mask], [results[k] for k in ctx],
                              [grid.cell(*k) for k in ctx])
        if progress:
            progress(1)
    keys = list(results)
    return assemble(job, data, (0, 0), mask, [results[k] for k in keys], [grid.cell(*k) for k in keys])


def _offsets(chunks: tuple[int, ...]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(chunks)]).astype(int)


def _blocks_in(edges: np.ndarray, lo: int, hi: int) -> range:
    """Indices of the chunks (with boundaries ``edges``) that intersect ``[lo, hi)``."""
    first = int(np.searchsorted(edges, lo, side="right") - 1)
    last = int(np.searchsorted(edges, hi, side="left"))
    return range(max(first, 0), min(last, len(edges) - 1))


def run_lazy(job: Job, data, mask, *, name: str, cells: tuple[list, list] | None = None):
    """Build the dask graph for ``data`` (C, H, W) dask array and ``mask`` (H, W).

    Returns ``(out, uncertainty)`` dask arrays on ``data``'s (y, x) chunks (all bands in
    one chunk); ``uncertainty`` is None when ``job.samples == 1``. The graph holds
    :class:`~geot2e.engine.tiles.Job` (a model *reference*, no weights).
    """
    import dask.array as dsa
    from dask import delayed

    grid = job.grid
    data = data.rechunk({0: -1})
    if _is_dask(mask):
        mask = mask.astype(bool).rechunk(data.chunks[1:])
    else:
        mask = dsa.from_array(np.asarray(mask, dtype=bool), chunks=data.chunks[1:], name=f"{name}-mask")
    pass_a, pass_b = cells if cells is not None else plan(grid, mask)
    ey, ex = _offsets(data.chunks[1]), _offsets(data.chunks[2])
    dblocks = data.to_delayed()[0]
    mblocks = mask.to_delayed()

    def pieces(y0, y1, x0, x1):
        idx = [(a, b) for a in _blocks_in(ey, y0, min(y1, grid.height))
               for b in _blocks_in(ex, x0, min(x1, grid.width))]
        return ([dblocks[a, b] for a, b in idx], [(int(ey[a]), int(ex[b])) for a, b in idx],
                [mblocks[a, b] for a, b in idx])

    run = delayed(functools.partial(run_cell, job), pure=False, name=f"{name}-run")
    results: dict = {}
    for c in pass_a:
        bl, off, ml = pieces(*grid.window(*c))
        results[c] = run(*c, bl, off, ml, dask_key_name=f"{name}-cellA-{c[0]}-{c[1]}")
    done_a = set(pass_a)
    for c in pass_b:
        bl, off, ml = pieces(*grid.window(*c))
        ctx = context_cells(grid, *c, done_a)
        results[c] = run(*c, bl, off, ml, [results[k] for k in ctx], [grid.cell(*k) for k in ctx],
                         dask_key_name=f"{name}-cellB-{c[0]}-{c[1]}")
    asm = delayed(functools.partial(assemble, job), pure=False, nout=2, name=f"{name}-asm")
    nb = data.shape[0]
    out_rows, unc_rows = [], []
    for a in range(len(ey) - 1):
        out_row, unc_row = [], []
        for b in range(len(ex) - 1):
            y0, y1, x0, x1 = int(ey[a]), int(ey[a + 1]), int(ex[b]), int(ex[b + 1])
            shape = (nb, y1 - y0, x1 - x0)
            touching = [k for k in grid.cells_touching(y0, y1, x0, x1) if k in results]
            if not touching:
                out_row.append(data.blocks[:, a, b])
                unc_row.append(dsa.zeros(shape, dtype=np.float32, chunks=shape))
                continue
            o, u = asm(dblocks[a, b], (y0, x0), mblocks[a, b], [results[k] for k in touching],
                       [grid.cell(*k) for k in touching], dask_key_name=f"{name}-block-{a}-{b}")
            out_row.append(dsa.from_delayed(o, shape=shape, dtype=data.dtype,
                                            meta=np.empty((0, 0, 0), data.dtype)))
            if job.samples > 1:
                unc_row.append(dsa.from_delayed(u, shape=shape, dtype=np.float32,
                                                meta=np.empty((0, 0, 0), np.float32)))
        out_rows.append(out_row)
        unc_rows.append(unc_row)
    out = dsa.block(out_rows)
    unc = dsa.block(unc_rows) if job.samples > 1 else None
    return out, unc
