"""The fixed tile grid of the engine, anchored at the raster's pixel (0, 0).

Cells of ``tile`` x ``tile`` pixels tile the raster (the last row/column of cells may be
smaller). Each cell is processed inside a *window* of ``tile + 2 * overlap`` pixels (the
halo gives the model context). Windows are shifted inwards at the raster's edges so that
they stay inside it (more real context, same size), and only rasters smaller than a
window are padded. Inside its window a cell runs the model on *tight windows*
(:meth:`TileGrid.cell_windows`): one per group of neighbouring holes, each the holes'
bounding box plus a context margin that scales with the hole (:func:`context_margin`),
aligned to the model's spatial multiple. Nothing here depends on dask chunks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["TileGrid", "context_margin", "CONTEXT", "MIN_CONTEXT"]

#: Context around a hole, as a share of its extent (the longer side of its bounding box): a
#: 100-px cloud is run with 50 px of clear ground on each side, one under 32 px with
#: MIN_CONTEXT, a 128-px or larger cloud with the cap (64 px at the default tile of 256). Chosen
#: by measurement (benchmarks/margin_quality.py, 10 held-out crops, mean of 4): 0.5 keeps the
#: fill within 0.07 dB of the fixed cap, 0.35 lost 0.17 dB.
CONTEXT = 0.5
#: The least context margin in pixels (unless the cap is smaller).
MIN_CONTEXT = 16


def context_margin(extent: int, overlap: int, tile: int) -> int:
    """Pixels of known ground shown around a hole of ``extent`` pixels: ``CONTEXT x extent``,
    at least ``MIN_CONTEXT``, at most ``max(overlap, tile // 4)`` (the margin every hole got
    before it scaled; ``overlap=0`` still gives clear ground around a cloud)."""
    cap = max(int(overlap), int(tile) // 4)
    return int(min(cap, max(MIN_CONTEXT, math.ceil(CONTEXT * int(extent)))))


def _ceil_to(n: int, f: int) -> int:
    return int(math.ceil(n / f) * f)


def _fit_span(lo: int, hi: int, size: int, w0: int, w1: int, step: int) -> tuple[int, int] | None:
    """A span of ``size`` pixels holding ``[lo, hi)``, as nearly centred on it as a start that
    is a multiple of ``step`` from ``w0`` allows, inside ``[w0, w1)``; the whole ``[w0, w1)``
    when ``size`` fills it; None when no such span exists."""
    if size >= w1 - w0:
        return w0, w1
    want = lo - (size - (hi - lo)) / 2 - w0
    starts = [s for s in range(0, w1 - w0 - size + 1, step) if s + w0 <= lo and s + w0 + size >= hi]
    if not starts:
        return None
    s = min(starts, key=lambda s: (abs(s - want), s))
    return w0 + s, w0 + s + size


def _tight_span(lo: int, hi: int, w0: int, w1: int, halo: int, multiple: int, step: int = 1) -> tuple[int, int]:
    """``[lo - halo, hi + halo)`` kept in ``[w0, w1)``, its size rounded up to ``multiple`` and
    its start a multiple of ``step`` from ``w0``, as nearly centred on ``[lo, hi)`` as that start
    allows (the halo on one side may then be up to ``step - 1`` pixels short: a window of the
    next multiple would cost far more); the whole ``[w0, w1)`` when that does not fit."""
    step = max(1, int(step))
    a, b = max(lo - halo, w0), min(hi + halo, w1)
    span = _fit_span(lo, hi, _ceil_to(b - a, max(1, int(multiple))), w0, w1, step)   # centred on the hole
    if span is None or span[0] >= a + step or span[1] <= b - step:   # a halo short by a step or more
        start = w0 + ((a - w0) // step) * step  # the aligned start at or before a: a span of this size exists
        span = _fit_span(a, b, _ceil_to(b - start, max(1, int(multiple))), w0, w1, step)
    return (w0, w1) if span is None else span


def _merge_boxes(boxes: np.ndarray, margins) -> np.ndarray:
    """Group index of each hole box (n, 4: y0, y1, x0, x1): holes whose joint context box (the
    box grown by ``margins(extent)``) costs no more pixels than their separate ones share a
    group (repeated until no two groups qualify)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    group = np.arange(len(boxes))
    while True:
        ids = np.unique(group)
        b = np.array([[boxes[group == g, 0].min(), boxes[group == g, 1].max(),
                       boxes[group == g, 2].min(), boxes[group == g, 3].max()] for g in ids])
        ext = np.maximum(b[:, 1] - b[:, 0], b[:, 3] - b[:, 2])
        mg = np.array([margins(e) for e in ext])
        c = b + np.stack([-mg, mg, -mg, mg], axis=1)
        area = (c[:, 1] - c[:, 0]) * (c[:, 3] - c[:, 2])
        joint = ((np.maximum(c[:, None, 1], c[None, :, 1]) - np.minimum(c[:, None, 0], c[None, :, 0]))
                 * (np.maximum(c[:, None, 3], c[None, :, 3]) - np.minimum(c[:, None, 2], c[None, :, 2])))
        link = joint <= area[:, None] + area[None, :]
        n, lab = connected_components(csr_matrix(link), directed=False)
        if n == len(ids):
            return np.searchsorted(ids, group)
        group = lab[np.searchsorted(ids, group)]


@dataclass(frozen=True)
class TileGrid:
    """A tile grid over a ``height`` x ``width`` raster.

    Parameters
    ----------
    height, width : int
        Raster size in pixels.
    tile : int
        Cell size in pixels (a multiple of ``factor``).
    overlap : int
        Halo width in pixels on each side of a cell (a multiple of ``factor``).
    factor : int
        The model's VAE factor: window sizes are multiples of it.
    """

    height: int
    width: int
    tile: int
    overlap: int
    factor: int = 1

    @property
    def ny(self) -> int:
        return max(1, math.ceil(self.height / self.tile))

    @property
    def nx(self) -> int:
        return max(1, math.ceil(self.width / self.tile))

    @property
    def window_shape(self) -> tuple[int, int]:
        """(rows, cols) of every window: the same for all cells of the grid."""
        full = self.tile + 2 * self.overlap
        return (min(full, _ceil_to(self.height, self.factor)), min(full, _ceil_to(self.width, self.factor)))

    def cell(self, i: int, j: int) -> tuple[int, int, int, int]:
        """Pixel bounds ``(y0, y1, x0, x1)`` of cell (i, j) in the raster."""
        t = self.tile
        return i * t, min((i + 1) * t, self.height), j * t, min((j + 1) * t, self.width)

    def _start(self, k: int, size: int, win: int) -> int:
        return int(min(max(k * self.tile - self.overlap, 0), max(size - win, 0)))

    def window(self, i: int, j: int) -> tuple[int, int, int, int]:
        """Window bounds ``(y0, y1, x0, x1)`` of cell (i, j); may extend past the raster's
        bottom/right edge only when the raster is smaller than a window (padding)."""
        wy, wx = self.window_shape
        y0 = self._start(i, self.height, wy)
        x0 = self._start(j, self.width, wx)
        return y0, y0 + wy, x0, x0 + wx

    def box_window(self, i: int, j: int, box: tuple[int, int, int, int], multiple: int) -> tuple[int, int, int, int]:
        """The window the model runs on for holes whose bounding box (global pixels) is ``box``:
        the box grown by :func:`context_margin` of its extent on each side, its size rounded up
        to ``multiple``, its offset from the cell's window a multiple of the VAE factor
        (``factor``), inside the cell's window; along an axis where that does not fit, the
        window's full span."""
        wy0, wy1, wx0, wx1 = self.window(i, j)
        y0, y1, x0, x1 = (int(v) for v in box)
        margin = context_margin(max(y1 - y0, x1 - x0), self.overlap, self.tile)
        f = max(1, int(self.factor))
        return (*_tight_span(y0, y1, wy0, wy1, margin, multiple, f), *_tight_span(x0, x1, wx0, wx1, margin, multiple, f))

    def grow(self, i: int, j: int, box: tuple[int, int, int, int], shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """``box`` (a window of cell (i, j)) grown to ``shape`` = (rows, cols) with more context, as
        nearly centred as a start aligned to ``factor`` allows, inside the cell's window (so that
        windows of similar size run as one batch)."""
        wy0, wy1, wx0, wx1 = self.window(i, j)
        f = max(1, int(self.factor))
        ys = _fit_span(box[0], box[1], int(shape[0]), wy0, wy1, f)
        xs = _fit_span(box[2], box[3], int(shape[1]), wx0, wx1, f)
        if ys is None or xs is None:
            raise ValueError(f"internal error: window {box} cannot grow to {shape} inside {self.window(i, j)}")
        return (*ys, *xs)

    def tight_window(self, i: int, j: int, cell_mask: np.ndarray, multiple: int) -> tuple[int, int, int, int]:
        """One window for all of cell (i, j)'s masked pixels: ``(y0, y1, x0, x1)``.

        The bounding box of the cell's masked pixels through :meth:`box_window` (a margin that
        scales with the box, :func:`context_margin`); a cell without masked pixels gets its
        window. :meth:`cell_windows` splits a cell's scattered holes into several such windows.

        Parameters
        ----------
        i, j : int
            Cell row and column.
        cell_mask : (h, w) bool array
            The mask over the cell's own pixels (``cell(i, j)``).
        multiple : int
            Sizes of the result are multiples of it (the model's spatial multiple: VAE factor x
            UNet downsampling); offsets from the window's origin are multiples of ``factor``.
        """
        cy0, _, cx0, _ = self.cell(i, j)
        cm = np.asarray(cell_mask, dtype=bool)
        rows, cols = np.flatnonzero(cm.any(axis=1)), np.flatnonzero(cm.any(axis=0))
        if rows.size == 0:
            return self.window(i, j)
        box = (cy0 + int(rows[0]), cy0 + int(rows[-1]) + 1, cx0 + int(cols[0]), cx0 + int(cols[-1]) + 1)
        return self.box_window(i, j, box, multiple)

    def joint_owner(self, box: tuple[int, int, int, int], cells) -> tuple[int, int] | None:
        """The cell that runs a hole crossing cell borders as one window, or None.

        ``box`` is the hole's bounding box (global pixels) and ``cells`` the cells holding its
        pixels. The hole is *joint* when it lies in two or more cells and strictly inside the
        window of each (touching a window's edge only where that edge is the raster's): every
        one of those cells then sees the whole hole and reaches the same verdict, whatever its
        own view of the mask; a cell that sees the hole cut by its window's edge knows it is not
        joint. The owner is the first of its cells in pass A (row-major), else in pass B.
        """
        cells = sorted({(int(a), int(b)) for a, b in cells}, key=lambda c: ((c[0] + c[1]) % 2, c))
        if len(cells) < 2:
            return None
        y0, y1, x0, x1 = (int(v) for v in box)
        for c in cells:
            wy0, wy1, wx0, wx1 = self.window(*c)
            if not ((y0 > wy0 or wy0 == 0) and (y1 < wy1 or wy1 >= self.height)
                    and (x0 > wx0 or wx0 == 0) and (x1 < wx1 or wx1 >= self.width)):
                return None
        return cells[0]

    def cell_windows(self, i: int, j: int, window_mask: np.ndarray, multiple: int, *, joint: bool = True):
        """The windows the model runs on for cell (i, j), and which masked pixel each writes.

        The cell's holes are the 8-connected groups of its masked pixels, with two exceptions
        for a hole that crosses cell borders: a *joint* hole (:meth:`joint_owner`) is run whole,
        once, by its owner cell (its pixels in the other cells included), and is no hole of the
        other cells; any other crossing hole is split at the cell's edges, each cell running
        its own part (pass B then sees pass A's part as known context). Neighbouring holes
        whose joint context box costs no more pixels than their separate ones share a window
        (:meth:`box_window` of their joint bounding box); when the separate windows together
        cost as much as one window for all of them, the cell runs on that one window.
        A pure function of the mask over the cell's window.

        Parameters
        ----------
        window_mask : (h, w) bool array
            The mask over the cell's window (:meth:`window`; False past the raster's edge).
        joint : False splits every hole at the cell's edges (no joint holes).

        Returns
        -------
        windows : list of (y0, y1, x0, x1)
            Global pixel bounds, in the order of their first hole (the cell's own holes
            row-major by their first pixel, then the joint holes it runs).
        owner : (h, w) int array over the cell's window
            Index into ``windows`` of the window that writes each masked pixel; -1 elsewhere
            (pixels of other cells, or of joint holes other cells run).
        """
        from scipy import ndimage

        wy0, wy1, wx0, wx1 = self.window(i, j)
        cy0, cy1, cx0, cx1 = self.cell(i, j)
        wm = np.asarray(window_mask, dtype=bool)
        if wm.shape != (wy1 - wy0, wx1 - wx0):
            raise ValueError(f"internal error: the mask of cell {(i, j)}'s window has shape {wm.shape}, "
                             f"not {(wy1 - wy0, wx1 - wx0)}")
        owner = np.full(wm.shape, -1, dtype=np.int32)
        in_cell = np.zeros(wm.shape, bool)
        in_cell[cy0 - wy0:cy1 - wy0, cx0 - wx0:cx1 - wx0] = True
        eight = np.ones((3, 3), bool)
        lab, _ = ndimage.label(wm, structure=eight)
        objs = ndimage.find_objects(lab)
        mine = wm & in_cell                       # the masked pixels this cell writes
        runs = []                                 # the joint holes it runs: (pixels, box)
        t = self.tile
        for c in np.unique(lab[mine]):
            sl = objs[c - 1]
            box = (sl[0].start + wy0, sl[0].stop + wy0, sl[1].start + wx0, sl[1].stop + wx0)
            if not joint or (box[0] >= cy0 and box[1] <= cy1 and box[2] >= cx0 and box[3] <= cx1):
                continue                          # inside the cell: an ordinary hole
            ys, xs = np.nonzero(lab[sl] == c)
            cells = set(zip(((ys + box[0]) // t).tolist(), ((xs + box[2]) // t).tolist()))
            run_by = self.joint_owner(box, cells)
            if run_by is None:
                continue
            pix = lab == c
            mine &= ~pix
            if run_by == (i, j):
                runs.append((pix, box))
        part, n = ndimage.label(mine, structure=eight)
        boxes = [[s[0].start + wy0, s[0].stop + wy0, s[1].start + wx0, s[1].stop + wx0]
                 for s in ndimage.find_objects(part)]
        boxes += [list(b) for _, b in runs]
        if not boxes:
            return [], owner
        boxes = np.array(boxes)
        group = _merge_boxes(boxes, lambda e: context_margin(e, self.overlap, self.tile))
        first = {}                                # groups are numbered by their first hole already;
        for g in group:                           # this keeps that order explicit
            first.setdefault(int(g), len(first))
        wins = [None] * len(first)
        for g, k in first.items():
            b = boxes[group == g]
            wins[k] = self.box_window(i, j, (b[:, 0].min(), b[:, 1].max(), b[:, 2].min(), b[:, 3].max()), multiple)
        allbox = (boxes[:, 0].min(), boxes[:, 1].max(), boxes[:, 2].min(), boxes[:, 3].max())
        one = self.box_window(i, j, allbox, multiple)
        if len(wins) > 1 and sum((w[1] - w[0]) * (w[3] - w[2]) for w in wins) >= (one[1] - one[0]) * (one[3] - one[2]):
            wins = [one]
            first = {g: 0 for g in first}
        if n:
            owner[mine] = np.array([first[int(group[k])] for k in range(n)], dtype=np.int32)[part[mine] - 1]
        for k, (pix, _) in enumerate(runs):
            owner[pix] = first[int(group[n + k])]
        return wins, owner

    def occupancy(self, mask: np.ndarray) -> np.ndarray:
        """(ny, nx) bool: which cells hold at least one True pixel of ``mask`` (H, W)."""
        m = np.asarray(mask, dtype=bool)
        t = self.tile
        pad = ((0, self.ny * t - self.height), (0, self.nx * t - self.width))
        m = np.pad(m, pad)
        return m.reshape(self.ny, t, self.nx, t).any(axis=(1, 3))

    def passes(self, occupancy: np.ndarray) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Cells to run in pass A ((i + j) even) and pass B ((i + j) odd), row-major."""
        cells = [(int(i), int(j)) for i, j in zip(*np.nonzero(occupancy))]
        return [c for c in cells if (c[0] + c[1]) % 2 == 0], [c for c in cells if (c[0] + c[1]) % 2 == 1]

    def cells_touching(self, y0: int, y1: int, x0: int, x1: int) -> list[tuple[int, int]]:
        """Cells that intersect the pixel region ``[y0, y1) x [x0, x1)`` (clipped to the raster)."""
        y1, x1 = min(y1, self.height), min(x1, self.width)
        y0, x0 = max(y0, 0), max(x0, 0)
        if y1 <= y0 or x1 <= x0:
            return []
        t = self.tile
        return [(i, j) for i in range(y0 // t, (y1 - 1) // t + 1) for j in range(x0 // t, (x1 - 1) // t + 1)]
