"""Tile grid, noise keys and block pasting: the chunk-independent skeleton of the engine."""
from __future__ import annotations

import numpy as np
import torch
import pytest

from geot2e.engine import TileGrid, noise_seed, tile_noise
from geot2e.engine.execute import _blocks_in, _offsets, context_cells
from geot2e.engine.tiles import invalid_pixels, paste


@pytest.mark.parametrize("h,w", [(512, 512), (200, 130), (70, 300), (40, 40)])
def test_cells_tile_the_raster_and_sit_inside_fixed_size_windows(h, w):
    g = TileGrid(h, w, tile=64, overlap=16, factor=4)
    cover = np.zeros((h, w), int)
    wy, wx = g.window_shape
    assert wy % 4 == 0 and wx % 4 == 0
    for i in range(g.ny):
        for j in range(g.nx):
            y0, y1, x0, x1 = g.cell(i, j)
            cover[y0:y1, x0:x1] += 1
            a0, a1, b0, b1 = g.window(i, j)
            assert (a1 - a0, b1 - b0) == (wy, wx)
            assert a0 <= y0 and y1 <= a1 and b0 <= x0 and x1 <= b1
            assert a0 >= 0 and b0 >= 0
            # windows stay inside the raster unless the raster is smaller than a window
            if h >= 96:
                assert a1 <= h
            if w >= 96:
                assert b1 <= w
    assert (cover == 1).all()


def test_interior_window_has_the_halo_on_every_side():
    g = TileGrid(512, 512, tile=64, overlap=16, factor=4)
    assert g.cell(2, 3) == (128, 192, 192, 256)
    assert g.window(2, 3) == (112, 208, 176, 272)
    assert g.window(0, 0) == (0, 96, 0, 96)  # shifted inwards at the edge
    assert g.window(7, 7) == (416, 512, 416, 512)


def test_occupancy_and_checkerboard_passes():
    g = TileGrid(200, 130, tile=64, overlap=16, factor=4)
    m = np.zeros((200, 130), bool)
    m[70, 70] = True       # cell (1, 1): pass A
    m[199, 129] = True     # cell (3, 2): pass B (partial edge cell)
    m[10, 100] = True      # cell (0, 1): pass B
    occ = g.occupancy(m)
    assert occ.shape == (4, 3) and occ.sum() == 3
    a, b = g.passes(occ)
    assert a == [(1, 1)] and b == [(0, 1), (3, 2)]
    # B cells see the A cells inside their windows, nothing else
    assert context_cells(g, 0, 1, set(a)) == [(1, 1)]
    # the edge cell's window is shifted inwards (rows 104-200, cols 34-130): it reaches (1, 1)
    assert g.window(3, 2) == (104, 200, 34, 130)
    assert context_cells(g, 3, 2, set(a)) == [(1, 1)]
    assert context_cells(g, 0, 1, set()) == []


def test_cells_touching_region():
    g = TileGrid(256, 256, tile=64, overlap=16)
    assert g.cells_touching(0, 64, 0, 64) == [(0, 0)]
    assert g.cells_touching(60, 70, 0, 10) == [(0, 0), (1, 0)]
    assert g.cells_touching(300, 400, 0, 10) == []


def test_noise_is_keyed_not_ordered():
    a = tile_noise((4, 8, 8), 0, 0, 3, 5, 0)
    tile_noise((4, 8, 8), 0, 0, 1, 1, 0)  # drawing other tiles in between changes nothing
    b = tile_noise((4, 8, 8), 0, 0, 3, 5, 0)
    assert np.array_equal(a.numpy(), b.numpy())
    keys = {noise_seed(s, r, i, j, k) for s in (0, 1) for r in (0, 1) for i in range(4) for j in range(4)
            for k in range(3)}
    assert len(keys) == 2 * 2 * 4 * 4 * 3
    assert noise_seed(0, 1, 2) == noise_seed(0, 1, 2)


def test_samples_come_in_antithetic_pairs():
    """Sample 2k + 1 of a tile starts from the negated noise of sample 2k (so the mean of K
    cancels the pair's odd-order errors); pairs and tiles are otherwise independent draws."""
    from geot2e.engine.noise import sample_noise

    z = [sample_noise((4, 8, 8), 0, 0, 3, 5, sample=k) for k in range(4)]
    assert torch.equal(z[0], tile_noise((4, 8, 8), 0, 0, 3, 5, 0))       # one sample: as before
    assert torch.equal(z[1], -z[0]) and torch.equal(z[3], -z[2])
    assert abs(float((z[0] * z[2]).mean())) < 0.2                          # pairs independent
    assert not torch.equal(sample_noise((4, 8, 8), 0, 0, 3, 6, sample=1), z[1])


def test_paste_from_any_block_layout_gives_the_same_window():
    rng = np.random.default_rng(0)
    full = rng.integers(0, 1000, (3, 100, 90)).astype(np.uint16)
    region = (20, 116, 30, 126)  # extends past the bottom and right edge
    ref = paste([full], [(0, 0)], region, 0)
    for cy, cx in ((32, 32), (50, 17), (100, 90)):
        ey, ex = _offsets(tuple(np.diff(np.r_[0:100:cy, 100]))), _offsets(tuple(np.diff(np.r_[0:90:cx, 90])))
        blocks, offs = [], []
        for a in _blocks_in(ey, region[0], min(region[1], 100)):
            for b in _blocks_in(ex, region[2], min(region[3], 90)):
                blocks.append(full[:, ey[a]:ey[a + 1], ex[b]:ex[b + 1]])
                offs.append((int(ey[a]), int(ex[b])))
        assert np.array_equal(paste(blocks, offs, region, 0), ref)
    assert (ref[:, 80:, :] == 0).all() and np.array_equal(ref[:, :80, :60], full[:, 20:100, 30:90])


def test_invalid_pixels_any_band_nodata_or_nan():
    b = np.ones((3, 4, 4), np.float32)
    b[1, 0, 0] = np.nan
    b[2, 1, 1] = 0
    b[0, 2, 2] = np.inf
    bad = invalid_pixels(b, 0)
    assert bad[0, 0] and bad[1, 1] and bad[2, 2] and bad.sum() == 3
    assert invalid_pixels(b.astype(np.uint16), None).sum() == 0
