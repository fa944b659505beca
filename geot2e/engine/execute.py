"""Run the two-pass checkerboard over a (C, H, W) array: eagerly (numpy) or as a dask graph.

Pass A runs the masked cells with ``(i + j)`` even, pass B the masked cells with
``(i + j)`` odd, each B cell taking the synthesized pixels of the A cells inside its
window as known context. Cells without masked pixels never run. Output blocks copy the
input and paste the synthesized pixels of the cells they intersect.

Each cell runs on one or more tight windows (:meth:`~geot2e.engine.grid.TileGrid.cell_windows`);
windows of one pass from nearby cells share a model call when that costs less than separate
calls (:func:`schedule`), and a pass-B window that touches no pass-A result (an isolated cloud)
runs with pass A, since it has no context to wait for. The batches are a pure function of the
mask, and both paths call :func:`~geot2e.engine.tiles.run_batch` with the same batches, so they
give bit-identical results (CPU kernels can differ in the last bit between batch compositions,
never between runs of one).
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from .grid import TileGrid
from .tiles import Job, assemble, cell_items, paste, run_batch

__all__ = ["plan", "schedule", "run_eager", "run_lazy", "context_cells", "CALL_PIXELS", "REGION"]

#: The fixed cost of one model call, in window pixels: a window joins a batch (growing, with
#: the smaller members, to the batch's shape, i.e. more real context) when the pixels that adds
#: cost less than a call of its own. Measured on the default model, one CPU thread, bf16: a UNet
#: pass costs about 28 ms + 13 µs per latent pixel (16 window pixels), i.e. 28 ms is ~34 000
#: window pixels (``benchmarks/bench_engine.py --only unet_cost``). On more threads or a GPU the
#: per-pixel cost falls and the fixed cost stays, so this is the cautious end.
CALL_PIXELS = 32768
#: Batches gather windows from squares of REGION x REGION cells, so a task reads nearby blocks.
REGION = 8


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


def _cell_items(job: Job, model, mask, cells: list) -> dict:
    """``{cell: [(i, j, k, box, bounds), ...]}``: the windows of each cell, from the mask over
    its window, numpy or dask (a dask mask is read in tile-aligned pieces, like
    :func:`occupancy`, each with the windows of its cells)."""
    grid = job.grid
    if not _is_dask(mask):
        m = np.asarray(mask, dtype=bool)
        return {c: cell_items(job, model, *c, paste([m], [(0, 0)], grid.window(*c), False)) for c in cells}
    import dask

    t = grid.tile
    step = max(1, 2048 // t) * t
    m = mask.astype(bool).rechunk((step, step))
    ey, ex = _offsets(m.chunks[0]), _offsets(m.chunks[1])
    want = set(cells)
    tasks = []
    for a in range(len(ey) - 1):
        for b in range(len(ex) - 1):
            mine = [c for c in cells if ey[a] <= grid.cell(*c)[0] < ey[a + 1] and ex[b] <= grid.cell(*c)[2] < ex[b + 1]]
            if mine:
                wins = [grid.window(*c) for c in mine]     # the region the cells' windows cover
                y0, x0 = max(0, min(w[0] for w in wins)), max(0, min(w[2] for w in wins))
                y1, x1 = min(grid.height, max(w[1] for w in wins)), min(grid.width, max(w[3] for w in wins))
                tasks.append(dask.delayed(_block_items)(job, model, m[y0:y1, x0:x1], (y0, x0), mine))
    out = {}
    for part in dask.compute(*tasks):
        out.update(part)
    if set(out) != want:  # pragma: no cover - every cell lies in one block
        raise RuntimeError("internal error: a running cell was not found in the mask's blocks")
    return out


def _block_items(job, model, block, offset, cells):
    grid = job.grid
    return {c: cell_items(job, model, *c, paste([np.asarray(block)], [offset], grid.window(*c), False)) for c in cells}


def schedule(job: Job, model, mask, cells: tuple[list, list]) -> tuple[list, list]:
    """The model calls of pass A and pass B: lists of batches, each a list of ``(i, j, k, box,
    bounds)`` items (:func:`~geot2e.engine.tiles.cell_items`) whose boxes have one shape. A pure function of the mask (never of chunks or workers).

    A pass-B window that touches no pass-A window's written pixels (their bounds)
    has no context to wait for: it runs in pass A (scattered small clouds then cost two or three
    calls, not one or two per cell). Windows of one pass, from one square of :data:`REGION` x
    :data:`REGION` cells, are taken largest first; a batch takes the next window when the pixels
    it adds (every member grows to the batch's rows x cols, :meth:`~geot2e.engine.grid.TileGrid.grow`)
    cost less than a call of its own (:data:`CALL_PIXELS`) and the batch holds at most ``samples``
    x the cell window's pixels (the size of one full-window call); where it costs less
    (:data:`CALL_PIXELS` per call plus the pixels run), the cheapest split of the windows, largest
    first, into consecutive batches within that size (:func:`_cheapest_runs`) is taken instead.
    ``job.batch=False``: one window per call, passes as the checkerboard has them.
    """
    grid = job.grid
    items = _cell_items(job, model, mask, list(cells[0]) + list(cells[1]))
    pass_a = [it for c in cells[0] for it in items[c]]
    pass_b = [it for c in cells[1] for it in items[c]]
    if job.batch:
        written = [it[4] for it in pass_a]
        free = [it for it in pass_b if not any(_touches(bd, it[3]) for bd in written)]
        pass_a, pass_b = pass_a + free, [it for it in pass_b if it not in free]
    budget = grid.window_shape[0] * grid.window_shape[1]
    out = []
    for pass_items in (pass_a, pass_b):
        regions: dict = {}
        for it in pass_items:
            regions.setdefault((it[0] // REGION, it[1] // REGION), []).append(it)
        batches = []
        for key in sorted(regions):
            todo = sorted(regions[key], key=lambda it: (-_area(it[3]), it[:3]))
            groups = _greedy_groups(todo, budget) if job.batch else [[it] for it in todo]
            if job.batch:
                best = _cheapest_runs(todo, budget)
                if _cost(best) < _cost(groups):
                    groups = best
            for batch in groups:
                shape = _shape(batch)
                batch = sorted(batch, key=lambda it: it[:3])
                batches.append([(i, j, k, box if (box[1] - box[0], box[3] - box[2]) == shape
                                 else grid.grow(i, j, box, shape), wb) for i, j, k, box, wb in batch])
        out.append(batches)
    return out[0], out[1]


def _shape(batch) -> tuple[int, int]:
    """(rows, cols) every member of a batch grows to: the largest of each."""
    return max(it[3][1] - it[3][0] for it in batch), max(it[3][3] - it[3][2] for it in batch)


def _cost(groups) -> int:
    """The batches' cost in window pixels: :data:`CALL_PIXELS` per call plus the pixels run."""
    return sum(CALL_PIXELS + len(b) * _shape(b)[0] * _shape(b)[1] for b in groups)


def _greedy_groups(todo: list, budget: int) -> list:
    """Batches taken largest window first, each taking the next window whenever the pixels it
    adds cost less than a call of its own and the batch stays within ``budget`` pixels."""
    groups, todo = [], list(todo)
    while todo:
        batch = [todo.pop(0)]
        h, w = _shape(batch)
        rest = []
        for it in todo:
            th, tw = max(h, it[3][1] - it[3][0]), max(w, it[3][3] - it[3][2])
            n = len(batch)
            if (n + 1) * th * tw <= budget and (n + 1) * th * tw - n * h * w - _area(it[3]) <= CALL_PIXELS:
                batch.append(it)
                h, w = th, tw
            else:
                rest.append(it)
        todo = rest
        groups.append(batch)
    return groups


def _cheapest_runs(todo: list, budget: int) -> list:
    """The cheapest split (:func:`_cost`) of ``todo`` (largest window first) into consecutive
    runs, each within ``budget`` pixels: a shortest path over the cut points."""
    n = len(todo)
    best, cut = [0] + [None] * n, [0] * (n + 1)
    for k in range(1, n + 1):
        h = w = 0
        for j in range(k - 1, -1, -1):
            h, w = max(h, todo[j][3][1] - todo[j][3][0]), max(w, todo[j][3][3] - todo[j][3][2])
            if (k - j) * h * w > budget and k - j > 1:
                break
            c = best[j] + CALL_PIXELS + (k - j) * h * w
            if best[k] is None or c < best[k]:
                best[k], cut[k] = c, j
    groups, k = [], n
    while k > 0:
        groups.append(todo[cut[k]:k])
        k = cut[k]
    return groups[::-1]


def _area(box) -> int:
    return (box[1] - box[0]) * (box[3] - box[2])


def _touches(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def _context(done: tuple[list, list], batch) -> tuple[list, list]:
    """The pass-A results (values, bounds) that fall inside any window of ``batch``."""
    keep = [n for n, bd in enumerate(done[1]) if any(_touches(bd, it[3]) for it in batch)]
    return [done[0][n] for n in keep], [done[1][n] for n in keep]


def run_eager(job: Job, data: np.ndarray, mask: np.ndarray, *,
              cells: tuple[list, list] | None = None, progress: Callable[[int], None] | None = None):
    """Run on numpy arrays ``data`` (C, H, W) and ``mask`` (H, W); returns ``(out, uncertainty)``.
    ``progress(1)`` is called as each cell's last window finishes."""
    grid = job.grid
    mask = np.asarray(mask, dtype=bool)
    cells = cells if cells is not None else plan(grid, mask)
    batches_a, batches_b = schedule(job, job.model.get(), mask, cells)
    left: dict = {}
    for batch in batches_a + batches_b:
        for i, j, *_ in batch:
            left[i, j] = left.get((i, j), 0) + 1
    if progress:                   # cells whose holes all run in another cell's window (joint holes)
        for c in list(cells[0]) + list(cells[1]):
            if c not in left:
                progress(1)
    done_a: tuple[list, list] = ([], [])
    values, bounds = [], []
    for npass, batches in enumerate((batches_a, batches_b)):
        for batch in batches:
            ctx = _context(done_a, batch) if npass else ((), ())
            n = len(batch)
            values.extend(run_batch(job, batch, [[data]] * n, [[(0, 0)]] * n, [[mask]] * n, *ctx))
            bounds.extend(it[4] for it in batch)
            for i, j, *_ in batch:
                left[i, j] -= 1
                if progress and not left[i, j]:
                    progress(1)
        if npass == 0:
            done_a = (list(values), list(bounds))
    return assemble(job, data, (0, 0), mask, values, bounds)


def lazy_array(arr: np.ndarray, chunks, *, name: str):
    """A dask array of the in-memory ``arr``. With a ``dask.distributed`` client running, the
    array is scattered to the cluster once and the graph holds a reference to it (its key),
    not its pixels; otherwise (threads, processes) the blocks are slices of ``arr`` as usual."""
    import dask.array as dsa

    client = _client()
    if client is None:
        return dsa.from_array(arr, chunks=chunks, name=name)
    from dask import delayed

    future = client.scatter(arr, broadcast=False, hash=True)
    whole = delayed(future)
    edges = [_offsets(c) for c in dsa.core.normalize_chunks(chunks, arr.shape)]
    rows = []
    for a in range(len(edges[0]) - 1):
        row = []
        for b in range(len(edges[1]) - 1):
            sl = (slice(int(edges[0][a]), int(edges[0][a + 1])), slice(int(edges[1][b]), int(edges[1][b + 1])))
            shape = (sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
            row.append(dsa.from_delayed(delayed(_take)(whole, sl, dask_key_name=f"{name}-{a}-{b}"), shape=shape,
                                        dtype=arr.dtype, meta=np.empty((0, 0), arr.dtype)))
        rows.append(row)
    return dsa.block(rows)


def _take(arr, sl):
    return np.asarray(arr[sl])


def _client():
    """The running ``dask.distributed`` client, if dask's scheduler is one (else None)."""
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover
        return None
    import dask

    try:
        client = default_client()
    except ValueError:
        return None
    sched = dask.config.get("scheduler", None)
    return client if sched in (None, "dask.distributed", "distributed") else None


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
    mask_src = mask if _is_dask(mask) else np.asarray(mask, dtype=bool)
    pass_a, pass_b = cells if cells is not None else plan(grid, mask_src)
    if _is_dask(mask):
        mask = mask.astype(bool).rechunk(data.chunks[1:])
    else:
        mask = lazy_array(mask_src, data.chunks[1:], name=f"{name}-mask")
    ey, ex = _offsets(data.chunks[1]), _offsets(data.chunks[2])
    dblocks = data.to_delayed()[0]
    mblocks = mask.to_delayed(optimize_graph=False)  # optimizing drops the scattered future's reference

    def pieces(y0, y1, x0, x1):
        idx = [(a, b) for a in _blocks_in(ey, y0, min(y1, grid.height))
               for b in _blocks_in(ex, x0, min(x1, grid.width))]
        return ([dblocks[a, b] for a, b in idx], [(int(ey[a]), int(ex[b])) for a, b in idx],
                [mblocks[a, b] for a, b in idx])

    batches_a, batches_b = schedule(job, job.model.get(), mask_src, (pass_a, pass_b))
    values, bounds, done_a = [], [], ((), ())
    for npass, batches in enumerate((batches_a, batches_b)):
        for nb, batch in enumerate(batches):
            ps = [pieces(*grid.window(i, j)) for i, j, *_ in batch]
            ctx = _context(done_a, batch) if npass else ((), ())
            run = delayed(functools.partial(run_batch, job), pure=False, nout=len(batch), name=f"{name}-run")
            out = run(batch, [p[0] for p in ps], [p[1] for p in ps], [p[2] for p in ps], *ctx,
                      dask_key_name=f"{name}-batch{'AB'[npass]}-{nb}")
            values.extend(out[n] for n in range(len(batch)))
            bounds.extend(it[4] for it in batch)
        if npass == 0:
            done_a = (list(values), list(bounds))
    asm = delayed(functools.partial(assemble, job), pure=False, nout=2, name=f"{name}-asm")
    nb = data.shape[0]
    out_rows, unc_rows = [], []
    for a in range(len(ey) - 1):
        out_row, unc_row = [], []
        for b in range(len(ex) - 1):
            y0, y1, x0, x1 = int(ey[a]), int(ey[a + 1]), int(ex[b]), int(ex[b + 1])
            shape = (nb, y1 - y0, x1 - x0)
            touching = [n for n, bd in enumerate(bounds) if _touches(bd, (y0, y1, x0, x1))]
            if not touching:
                out_row.append(data.blocks[:, a, b])
                unc_row.append(dsa.zeros(shape, dtype=np.float32, chunks=shape))
                continue
            o, u = asm(dblocks[a, b], (y0, x0), mblocks[a, b], [values[n] for n in touching],
                       [bounds[n] for n in touching], dask_key_name=f"{name}-block-{a}-{b}")
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
