"""Tight windows: a cell runs the model on its masked pixels' box plus the halo, not its whole window.

With ``FAST`` (tile 64, overlap 16) every window is 96 x 96 pixels and the tiny model's
spatial multiple is 8 (VAE factor 4 x one UNet downsampling), so a small cloud costs a
small model call, and the results stay a pure function of the mask and the pixels.
"""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from engine_helpers import FAST, InpaintSpy, one_torch_thread, tiny_model, tiny_model_path  # noqa: F401
from geot2e.api import inpaint
from geot2e.engine import TileGrid
from geot2e.engine.tiles import spatial_multiple

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WINDOW = FAST["tile"] + 2 * FAST["overlap"]


@pytest.fixture(scope="module")
def crop(landsat_da):
    """192 x 192 uint16 crop (3 x 3 cells) away from the scene's nodata edge."""
    return landsat_da.isel(y=slice(200, 392), x=slice(100, 292))


def _mask(da, *boxes):
    m = xr.zeros_like(da.isel(band=0, drop=True), dtype=bool)
    for y0, y1, x0, x1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


def test_spatial_multiple_of_the_tiny_model(tiny_model):
    assert spatial_multiple(tiny_model) == 8


def test_small_cloud_runs_on_a_window_smaller_than_the_cell_window(crop, tiny_model, monkeypatch):
    spy = InpaintSpy(tiny_model)
    monkeypatch.setattr(tiny_model, "inpaint", spy)
    mask = _mask(crop, (80, 90, 70, 100))  # inside cell (1, 1) (rows/cols 64-128), window 48-144
    inpaint(crop, mask, model=tiny_model, **FAST)
    assert len(spy.calls) == 1
    # context margin: half the cloud's 30-px extent, at least 16 px (geot2e.engine.grid.context_margin);
    # rows 80-90 + 16 = 64-106 (42 px) -> 48 rows (a multiple of 8), centred at a start that is a
    # multiple of the VAE factor 4 from the window origin 48: 60-108; cols 70-100 + 16 = 54-116 -> 52-116
    assert spy.calls[0]["shape"] == (1, 3, 48, 64)
    # the model sees the cloud as unknown and the rest of the tight window as known
    model_mask = spy.calls[0]["masks"][0, 0].numpy() > 0.5
    np.testing.assert_array_equal(model_mask, mask.values[60:108, 52:116])


def test_pixels_outside_the_mask_are_bit_identical(crop, tiny_model):
    mask = _mask(crop, (80, 90, 70, 100), (5, 12, 150, 160))
    out = inpaint(crop, mask, model=tiny_model, **FAST)
    m = mask.values
    np.testing.assert_array_equal(out.values[:, ~m], crop.values[:, ~m])
    assert (out.values[:, m] != crop.values[:, m]).any()  # the clouds were synthesized
    np.testing.assert_array_equal(out["synthesized"].values, m)


@pytest.fixture(scope="module")
def clouds(crop):
    """Small clouds across cell borders (pass A and pass B neighbours), at the raster edge
    (shifted windows) and one cloud filling a whole cell."""
    return _mask(crop, (50, 75, 55, 80), (100, 110, 0, 20), (180, 192, 170, 192), (0, 64, 128, 192))


@pytest.fixture(scope="module")
def reference(crop, clouds, tiny_model_path):
    return inpaint(crop, clouds, "a lake", model=tiny_model_path, **FAST)


@pytest.mark.parametrize("chunks", [{"y": 64, "x": 64}, {"y": 48, "x": 80}])
def test_numpy_and_dask_chunkings_are_bit_identical(crop, clouds, reference, tiny_model_path, chunks):
    out = inpaint(crop.chunk(chunks), clouds, "a lake", model=tiny_model_path, **FAST)
    got = out.compute(scheduler="threads")
    assert np.array_equal(got.values, reference.values)
    m = clouds.values
    np.testing.assert_array_equal(got.values[:, ~m], crop.values[:, ~m])


def test_cell_covered_by_the_mask_uses_its_full_window(crop, tiny_model, monkeypatch):
    spy = InpaintSpy(tiny_model)
    monkeypatch.setattr(tiny_model, "inpaint", spy)
    inpaint(crop, _mask(crop, (64, 128, 64, 128)), model=tiny_model, **FAST)  # exactly cell (1, 1)
    assert [c["shape"] for c in spy.calls] == [(1, 3, WINDOW, WINDOW)]


@pytest.mark.parametrize("seed", range(6))
def test_tight_window_holds_the_masked_box_and_halo_inside_the_window(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(40, 200, size=2)
    tile, overlap, mult = int(rng.choice([16, 32, 64])), int(rng.choice([0, 8, 16])), int(rng.choice([4, 8, 16]))
    grid = TileGrid(int(h), int(w), tile, overlap, 4)
    for i in range(grid.ny):
        for j in range(grid.nx):
            cy0, cy1, cx0, cx1 = grid.cell(i, j)
            cm = np.zeros((cy1 - cy0, cx1 - cx0), bool)
            y, x = rng.integers(0, cm.shape[0]), rng.integers(0, cm.shape[1])
            cm[y:y + rng.integers(1, 20), x:x + rng.integers(1, 20)] = True
            wy0, wy1, wx0, wx1 = grid.window(i, j)
            y0, y1, x0, x1 = grid.tight_window(i, j, cm, mult)
            assert wy0 <= y0 < y1 <= wy1 and wx0 <= x0 < x1 <= wx1
            rows, cols = np.flatnonzero(cm.any(1)) + cy0, np.flatnonzero(cm.any(0)) + cx0
            # the halo around the box, short by less than the VAE factor (4) on a side at most (a
            # centred window of the next size multiple would cost a whole multiple more)
            assert y0 < max(rows[0] - overlap, wy0) + 4 and y1 > min(rows[-1] + 1 + overlap, wy1) - 4
            assert x0 < max(cols[0] - overlap, wx0) + 4 and x1 > min(cols[-1] + 1 + overlap, wx1) - 4
            assert y0 <= rows[0] and y1 > rows[-1] and x0 <= cols[0] and x1 > cols[-1]   # the box itself, whole
            for a0, a1, b0, b1 in ((y0, y1, wy0, wy1), (x0, x1, wx0, wx1)):
                # either the window's full span, or a multiple of `mult` at a VAE-aligned offset
                assert (a0, a1) == (b0, b1) or ((a1 - a0) % mult == 0 and (a0 - b0) % 4 == 0)
    assert grid.tight_window(0, 0, np.zeros((1, 1), bool), mult) == grid.window(0, 0)


def test_overlap_zero_still_shows_context_around_a_cloud():
    """With overlap=0 the tight box keeps a context margin around the cloud (half its extent,
    at least MIN_CONTEXT = 16 px, at most tile // 4; clipped to the cell's window), so the model
    still sees clear ground next to it."""
    from geot2e.engine.grid import MIN_CONTEXT

    grid = TileGrid(128, 128, 128, 0, 4)
    cm = np.zeros((128, 128), bool)
    cm[60:70, 50:58] = True
    y0, y1, x0, x1 = grid.tight_window(0, 0, cm, 16)
    c = MIN_CONTEXT
    assert y0 <= 60 - c and y1 >= 70 + c and x0 <= 50 - c and x1 >= 58 + c
    assert (y1 - y0) < 128 or (x1 - x0) < 128        # still smaller than the whole window


def test_isolated_clouds_of_both_passes_share_one_call(crop, tiny_model, monkeypatch):
    """A pass-B window that touches no pass-A result has no context to wait for: scattered small
    clouds in cells of both checkerboard colours run as one batch, and the result keeps every
    unmasked pixel and is the same whatever the chunking."""
    spy = InpaintSpy(tiny_model)
    monkeypatch.setattr(tiny_model, "inpaint", spy)
    # cell (1, 1) is pass A, cell (0, 1) pass B; their windows are ~50 px apart
    mask = _mask(crop, (84, 94, 84, 94), (8, 16, 90, 100))
    out = inpaint(crop, mask, model=tiny_model, **FAST)
    assert len(spy.calls) == 1 and spy.calls[0]["shape"][0] == 2
    np.testing.assert_array_equal(out.values[:, ~mask.values], crop.values[:, ~mask.values])
    lazy = inpaint(crop.chunk({"y": 80, "x": 48}), mask, model=tiny_model, **FAST)
    np.testing.assert_array_equal(lazy.values, out.values)


def test_a_window_joins_a_batch_only_when_that_costs_less_than_its_own_call(tiny_model, monkeypatch):
    """schedule(): the pixels a window adds to a batch (all members grow to the batch's shape)
    must cost less than a model call of its own (CALL_PIXELS), and no batch exceeds one cell
    window's pixels."""
    import geot2e.engine.grid
    from geot2e.engine.execute import CALL_PIXELS, plan, schedule

    monkeypatch.setattr(geot2e.engine.grid, "CONTEXT", 0.35)    # the window sizes below: 48, 176, 224 px
    from geot2e.engine.tiles import Job, ModelRef
    from geot2e.geo import Radiometry

    grid = TileGrid(768, 768, 256, 32, tiny_model.vae_factor)
    job = Job(grid=grid, model=ModelRef(tiny_model, "cpu"), scaling=Radiometry.fit(np.zeros((3, 2, 2))), nodata=0,
              dtype=np.dtype("uint16"))

    def batches(*boxes):
        m = np.zeros((768, 768), bool)
        for y0, y1, x0, x1 in boxes:
            m[y0:y1, x0:x1] = True
        a, b = schedule(job, tiny_model, m, plan(grid, m))
        assert b == []                                   # isolated clouds: all in pass A
        return [[it[3] for it in batch] for batch in a]

    small = (60, 70, 60, 70)                             # cell (0, 0): a 10-px cloud, a ~48-px window
    for big, together in (((380, 480, 380, 480), True),  # cell (1, 1): a ~176-px window
                          ((360, 490, 360, 490), False)):  # a ~224-px window: growing the small one costs more
        got = batches(small, big)
        assert (len(got) == 1) == together, (big, got)
        if together:
            (y0, y1, x0, x1), (v0, v1, u0, u1) = got[0]
            assert (y1 - y0, x1 - x0) == (v1 - v0, u1 - u0)   # the small window grew to the batch's shape
        else:
            (a,), (b,) = got                             # largest first
            assert (a[1] - a[0]) * (a[3] - a[2]) - (b[1] - b[0]) * (b[3] - b[2]) > CALL_PIXELS
        assert all(len(bt) * (bt[0][1] - bt[0][0]) * (bt[0][3] - bt[0][2]) <= 320 * 320 for bt in got)


@pytest.mark.parametrize("seed", range(4))
def test_the_consecutive_batches_are_the_cheapest_split(seed):
    """Both batchings cover every window once and stay within the call budget, and the split
    into consecutive runs is the cheapest of all such splits (a call's fixed cost plus the
    pixels run), which the engine takes where it beats the greedy batches."""
    from geot2e.engine.execute import _cheapest_runs, _cost, _greedy_groups

    rng = np.random.default_rng(seed)
    items = []
    for k in range(int(rng.integers(1, 16))):
        h, w = (int(v) * 16 for v in rng.integers(2, 11, size=2))
        items.append((0, 0, k, (0, h, 0, w)))
    items.sort(key=lambda it: (-(it[3][1] * it[3][3]), it[:3]))
    budget = 320 * 320
    greedy, runs = _greedy_groups(items, budget), _cheapest_runs(items, budget)
    for groups in (greedy, runs):
        assert sorted(it[2] for g in groups for it in g) == list(range(len(items)))
        assert all(len(g) == 1 or len(g) * max(i[3][1] for i in g) * max(i[3][3] for i in g) <= budget
                   for g in groups)
    # the cheapest of all splits into consecutive runs (every set of cut points, within budget)
    import itertools

    n, best = len(items), None
    for cuts in itertools.product((0, 1), repeat=n - 1):
        edges = [0] + [k + 1 for k, c in enumerate(cuts) if c] + [n]
        groups = [items[a:b] for a, b in zip(edges, edges[1:])]
        if all(len(g) == 1 or len(g) * max(i[3][1] for i in g) * max(i[3][3] for i in g) <= budget for g in groups):
            best = _cost(groups) if best is None else min(best, _cost(groups))
    assert _cost(runs) == best


def _owners(grid: TileGrid, mask: np.ndarray, multiple: int = 8) -> tuple[np.ndarray, list]:
    """How many windows write each pixel, over every cell's cell_windows; and the windows."""
    count = np.zeros(mask.shape, int)
    wins = []
    for i in range(grid.ny):
        for j in range(grid.nx):
            wy0, wy1, wx0, wx1 = grid.window(i, j)
            wm = np.zeros((wy1 - wy0, wx1 - wx0), bool)
            sub = mask[wy0:wy1, wx0:wx1]
            wm[:sub.shape[0], :sub.shape[1]] = sub
            w, owner = grid.cell_windows(i, j, wm, multiple)
            for k, box in enumerate(w):
                ys, xs = np.nonzero(owner == k)
                ys, xs = ys + wy0, xs + wx0
                assert ys.size and (box[0] <= ys).all() and (ys < box[1]).all() and (box[2] <= xs).all() \
                    and (xs < box[3]).all(), "a window writes a pixel outside itself"
                np.add.at(count, (ys, xs), 1)
                wins.append(((i, j), box, (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)))
    return count, wins


@pytest.mark.parametrize("seed", range(8))
def test_every_masked_pixel_is_written_by_exactly_one_window(seed):
    """Joint holes or not, the cells' windows together write each masked pixel once and no
    other pixel (random blobs on grids with shifted edge windows)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(100, 260, size=2))
    grid = TileGrid(h, w, 64, int(rng.choice([8, 16, 32])), 4)
    mask = ndimage.binary_dilation(rng.random((h, w)) < 0.002, iterations=int(rng.integers(2, 12)))
    count, _ = _owners(grid, mask)
    np.testing.assert_array_equal(count, mask.astype(int))


def test_a_cloud_across_cell_borders_runs_once_in_one_window():
    """A cloud that crosses the corner of four cells and fits each of their windows runs whole in
    the window of its pass-A owner (the first cell); the other cells run nothing for it."""
    grid = TileGrid(192, 192, 64, 16, 4)
    mask = np.zeros((192, 192), bool)
    mask[50:75, 55:80] = True                     # cells (0, 0), (0, 1), (1, 0), (1, 1)
    assert grid.joint_owner((50, 75, 55, 80), {(0, 0), (0, 1), (1, 0), (1, 1)}) == (0, 0)
    count, wins = _owners(grid, mask)
    np.testing.assert_array_equal(count, mask.astype(int))
    assert [(c, written) for c, _, written in wins] == [((0, 0), (50, 75, 55, 80))]
    # the same cloud reaching the edge of cell (1, 1)'s window (rows 48-144) is split at the cell edges
    mask[46:50, 55:80] = True
    assert grid.joint_owner((46, 75, 55, 80), {(0, 0), (0, 1), (1, 0), (1, 1)}) is None
    count, wins = _owners(grid, mask)
    np.testing.assert_array_equal(count, mask.astype(int))
    assert sorted(c for c, _, _ in wins) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_a_cloud_across_a_cell_border_costs_one_call_and_keeps_chunk_invariance(crop, tiny_model, monkeypatch):
    """One cloud across the border of a pass-A and a pass-B cell: one model call (it used to be
    two windows in two passes), every unmasked pixel kept, the same result in any chunking, and
    the progress bar counts both cells."""
    spy = InpaintSpy(tiny_model)
    monkeypatch.setattr(tiny_model, "inpaint", spy)
    mask = _mask(crop, (80, 100, 115, 140))       # cells (1, 1) [A] and (1, 2) [B]
    out = inpaint(crop, mask, model=tiny_model, **FAST)
    assert len(spy.calls) == 1 and spy.calls[0]["shape"][0] == 1
    np.testing.assert_array_equal(out.values[:, ~mask.values], crop.values[:, ~mask.values])
    assert (out.values[:, mask.values] != crop.values[:, mask.values]).any()
    lazy = inpaint(crop.chunk({"y": 48, "x": 80}), mask, model=tiny_model, **FAST)
    np.testing.assert_array_equal(lazy.values, out.values)


def test_progress_counts_cells_whose_holes_run_elsewhere(crop, tiny_model):
    from geot2e.engine.execute import run_eager
    from geot2e.engine.tiles import Job, ModelRef
    from geot2e.geo import Radiometry

    v = crop.values
    m = _mask(crop, (80, 100, 115, 140)).values
    grid = TileGrid(v.shape[1], v.shape[2], FAST["tile"], FAST["overlap"], tiny_model.vae_factor)
    job = Job(grid=grid, model=ModelRef(tiny_model, "cpu"), scaling=Radiometry.fit(v, nodata=0), nodata=0,
              dtype=v.dtype, steps=2, gsd=30.0)
    ticks = []
    out, _ = run_eager(job, v, m, progress=ticks.append)
    assert sum(ticks) == 2                        # cells (1, 1) and (1, 2), one of them ran nothing
    np.testing.assert_array_equal(out[:, ~m], v[:, ~m])


def test_schedule_from_a_dask_mask_matches_numpy_across_mask_blocks(tiny_model):
    """The windows are planned from the mask over each cell's window; a dask mask is read in
    2048-px blocks, and a cloud across a block edge (also a cell edge) is planned the same as
    from the numpy mask: one joint window."""
    import dask.array as dsa

    from geot2e.engine.execute import plan, schedule
    from geot2e.engine.tiles import Job, ModelRef

    h = w = 2176
    mask = np.zeros((h, w), bool)
    yy, xx = np.mgrid[:h, :w]
    mask |= (yy - 2050) ** 2 + (xx - 1040) ** 2 < 12 ** 2     # across row 2048 (cells (31, 16), (32, 16))
    mask[100:120, 2030:2070] = True                         # across column 2048 (cells (1, 31), (1, 32))
    grid = TileGrid(h, w, 64, 32, tiny_model.vae_factor)
    job = Job(grid=grid, model=ModelRef(tiny_model, "cpu"), scaling=None, nodata=0, dtype=np.uint16)
    cells = plan(grid, mask)
    eager = schedule(job, tiny_model, mask, cells)
    lazy = schedule(job, tiny_model, dsa.from_array(mask, chunks=(700, 900)), cells)
    assert eager == lazy
    items = [it for batches in eager for b in batches for it in b]
    assert len(items) == 2                        # each cloud once, whole
    ys, xs = np.nonzero(mask[:1024])
    rect = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
    ys, xs = np.nonzero(mask[1024:])
    circle = (1024 + int(ys.min()), 1024 + int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
    assert {it[4] for it in items} == {circle, rect}


def test_a_raster_inside_one_window_fully_masked_runs_as_one_call(crop, tiny_model, monkeypatch):
    """A hole that covers a raster no larger than one window is joint (its window edges are the
    raster's): one model call instead of four cells in two passes."""
    spy = InpaintSpy(tiny_model)
    monkeypatch.setattr(tiny_model, "inpaint", spy)
    from geot2e.geo import Radiometry

    small = crop.isel(y=slice(0, WINDOW), x=slice(0, WINDOW))
    out = inpaint(small, _mask(small, (0, WINDOW, 0, WINDOW)), model=tiny_model,
                  radiometry=Radiometry.fit(small.values, nodata=0), **FAST)
    assert [c["shape"] for c in spy.calls] == [(1, 3, WINDOW, WINDOW)]
    assert bool(out["synthesized"].all())
