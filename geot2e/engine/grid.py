"""The fixed tile grid of the engine, anchored at the raster's pixel (0, 0).

Cells of ``tile`` x ``tile`` pixels tile the raster (the last row/column of cells may be
smaller). Each cell is processed inside a *window* of ``tile + 2 * overlap`` pixels (the
halo gives the model context). Windows are shifted inwards at the raster's edges so that
they stay inside it (more real context, same size), and only rasters smaller than a
window are padded. Inside its window a cell may run on a smaller *tight window*
(:meth:`TileGrid.tight_window`): the bounding box of the cell's masked pixels plus the
halo, aligned to the model's spatial multiple. Nothing here depends on dask chunks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["TileGrid"]


def _ceil_to(n: int, f: int) -> int:
    return int(math.ceil(n / f) * f)


def _tight_span(lo: int, hi: int, w0: int, w1: int, halo: int, multiple: int) -> tuple[int, int]:
    """``[lo - halo, hi + halo)`` aligned outwards to ``multiple`` from ``w0`` and kept in
    ``[w0, w1)``; the whole ``[w0, w1)`` when that does not fit."""
    n, m = w1 - w0, max(1, int(multiple))
    a, b = max(lo - halo - w0, 0), min(hi + halo - w0, n)
    s, e = (a // m) * m, _ceil_to(b, m)
    if e > n:  # shift the span back inside the window, keeping its size a multiple
        e = n
        s = n - _ceil_to(n - s, m)
    if s < 0 or e - s >= n:
        return w0, w1
    return w0 + s, w0 + e


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

    def tight_window(self, i: int, j: int, cell_mask: np.ndarray, multiple: int) -> tuple[int, int, int, int]:
        """The part of cell (i, j)'s window the model needs: ``(y0, y1, x0, x1)``.

        The bounding box of the cell's masked pixels, grown on each side by the context
        margin ``max(overlap, tile // 4)`` (so that ``overlap=0`` still shows the model the
        clear ground around a cloud, as a full-window run did),
        aligned outwards to multiples of ``multiple`` pixels (counted from the window's
        origin) and kept inside the window. Along an axis where the aligned span would not
        fit, the window's full span is used; a cell without masked pixels gets its window.

        Parameters
        ----------
        i, j : int
            Cell row and column.
        cell_mask : (h, w) bool array
            The mask over the cell's own pixels (``cell(i, j)``).
        multiple : int
            Sizes and offsets of the result (relative to the window) are multiples of it
            (the model's spatial multiple: VAE factor x UNet downsampling).
        """
        wy0, wy1, wx0, wx1 = self.window(i, j)
        cy0, _, cx0, _ = self.cell(i, j)
        cm = np.asarray(cell_mask, dtype=bool)
        rows, cols = np.flatnonzero(cm.any(axis=1)), np.flatnonzero(cm.any(axis=0))
        if rows.size == 0:
            return wy0, wy1, wx0, wx1
        margin = max(self.overlap, self.tile // 4)
        y0, y1 = _tight_span(cy0 + int(rows[0]), cy0 + int(rows[-1]) + 1, wy0, wy1, margin, multiple)
        x0, x1 = _tight_span(cx0 + int(cols[0]), cx0 + int(cols[-1]) + 1, wx0, wx1, margin, multiple)
        return y0, y1, x0, x1

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
