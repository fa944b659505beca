"""The fixed tile grid of the engine, anchored at the raster's pixel (0, 0).

Cells of ``tile`` x ``tile`` pixels tile the raster (the last row/column of cells may be
smaller). Each cell is processed inside a *window* of ``tile + 2 * overlap`` pixels (the
halo gives the model context). Windows are shifted inwards at the raster's edges so that
they stay inside it (more real context, same size), and only rasters smaller than a
window are padded. Nothing here depends on dask chunks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["TileGrid"]


def _ceil_to(n: int, f: int) -> int:
    return int(math.ceil(n / f) * f)


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
