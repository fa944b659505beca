"""Seams: gradients across tile borders inside synthesized areas vs inside tiles.

The tiny model has random weights, so the model itself cannot make tiles agree; what
makes them agree is the engine: pass-B cells receive the pass-A pixels in their halo as
known context, and the model's ``harmonize`` step pulls each fill towards its known
surroundings. The control shows the metric does detect seams: independent,
non-overlapping tiles without context (the naive tiling) exceed the bound on the same
scene with the same model and settings.
"""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from engine_helpers import one_torch_thread, seam_ratio, tiny_model, tiny_model_path  # noqa: F401
from geot2e.api import inpaint
from geot2e.engine import Job, ModelRef, TileGrid, assemble, run_cell
from geot2e.geo import Radiometry

TILE, OVERLAP = 32, 8
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def case(landsat_da):
    da = landsat_da.isel(y=slice(100, 100 + 5 * TILE), x=slice(100, 100 + 5 * TILE))
    mask = xr.zeros_like(da.isel(band=0, drop=True), dtype=bool)
    mask[TILE // 2:-TILE // 2, TILE // 2:-TILE // 2] = True  # 4 x 4 cells, 24 inner borders
    return da, mask


def test_checkerboard_has_no_seams_and_naive_tiling_does(case, tiny_model):
    da, mask = case
    m = mask.values
    natural = seam_ratio(da.values, m, TILE)
    assert 0.8 < natural < 1.25  # the real image has no grid structure at this tile size
    out = inpaint(da, mask, model=tiny_model, tile=TILE, overlap=OVERLAP, steps=2, progress=False)
    ours = seam_ratio(out.values, m, TILE)
    # control: every cell run independently on its whole cell, no halo, no pass-A context
    # (tight=False: with overlap 0 a tight window would drop the cell's own known pixels too)
    v = da.values
    rad = Radiometry.fit(v, valid=~m, nodata=0)
    grid = TileGrid(v.shape[1], v.shape[2], TILE, 0, tiny_model.vae_factor)
    job = Job(grid=grid, model=ModelRef(tiny_model, "cpu"), scaling=rad, nodata=0, dtype=v.dtype, steps=2,
              gsd=30.0, tight=False)
    occ = grid.occupancy(m)
    cells = [(int(i), int(j)) for i, j in zip(*np.nonzero(occ))]
    res = [run_cell(job, i, j, [v], [(0, 0)], [m]) for i, j in cells]
    naive, _ = assemble(job, v, (0, 0), m, res, [grid.cell(*c) for c in cells])
    theirs = seam_ratio(naive, m, TILE)
    assert ours <= 1.25, f"seam ratio {ours:.3f} (naive tiling: {theirs:.3f})"
    assert theirs > 1.25, f"control failed: naive tiling ratio {theirs:.3f} shows no seam"
    assert ours < theirs
