"""Tiled execution: a fixed tile grid, a two-pass checkerboard, counter-based noise, and
eager (numpy) or lazy (dask) execution, plus Zarr-to-Zarr processing with resume.

See ``docs/engine.md`` for the design and measured figures.
"""
from .execute import plan, run_eager, run_lazy
from .grid import TileGrid
from .noise import noise_seed, tile_noise
from .raster import Options, raster_dims, synthesize
from .tiles import Job, ModelRef, assemble, run_cell

__all__ = ["TileGrid", "Options", "Job", "ModelRef", "synthesize", "plan", "run_eager", "run_lazy",
           "run_cell", "assemble", "noise_seed", "tile_noise", "raster_dims"]
