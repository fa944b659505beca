"""Write a lazy result into a Zarr v3 store block by block, resumably.

Each output block is computed and written with a region write
(:func:`geot2e.io.write_zarr_region`), then recorded in the store's done-ledger. A rerun
after an interruption skips the recorded blocks; the tiles of the remaining blocks are
recomputed with the same keyed noise, so the final store equals an uninterrupted run's.
All remaining blocks are computed in one dask computation, so tiles shared by
neighbouring blocks run once.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import DimensionError

__all__ = ["write_to_zarr"]


def _write_block(values, synthesized, dims, coords: dict, name, region: dict, key, store: str) -> str:
    from ..io import write_zarr_region

    block = xr.DataArray(values, dims=dims, coords=coords, name=name)
    if synthesized is not None:
        block = block.assign_coords(synthesized=(("y", "x"), np.asarray(synthesized, dtype=bool)))
    write_zarr_region(block, store, region=region, done_key=key)
    return key


def _remove_partial_writes(store: Path) -> None:
    """Delete the temporaries of chunk writes a killed run left behind (zarr writes each chunk
    to ``<chunk>.<uuid>.partial`` and renames it; never valid data)."""
    for f in store.rglob("*.partial"):
        try:
            f.unlink()
        except OSError:  # pragma: no cover - best effort
            pass


def write_to_zarr(result: xr.DataArray, store: str | os.PathLike, *, overwrite: bool = False,
                  scheduler=None) -> Path:
    """Compute ``result`` (dims (band, y, x) or (y, x), dask-backed) into ``store``.

    Parameters
    ----------
    result : xarray.DataArray
        A lazy result of the engine (e.g. ``geot2e.inpaint(dask_da, ...)``); its (y, x)
        chunks become the store's chunks and the unit of resumption.
    store : path
        Zarr store to create, or to resume when it exists on the same grid.
    overwrite : bool
        Start from scratch (delete an existing store and its ledger).
    scheduler : optional
        Passed to :func:`dask.compute` (default: the current scheduler or distributed client).

    Returns
    -------
    pathlib.Path
        The store.
    """
    import dask
    import dask.array as dsa

    from ..io import create_zarr_like, done_keys, tile_key

    if result.dims not in (("band", "y", "x"), ("y", "x")):
        raise DimensionError(f"write_to_zarr needs dims (band, y, x) or (y, x), got {result.dims}.")
    if not isinstance(result.data, dsa.Array):
        result = result.chunk({"y": 512, "x": 512})
    result = result.drop_vars([c for c in ("uncertainty",) if c in result.coords])
    data = result.data.rechunk({0: -1}) if result.ndim == 3 else result.data
    ych, xch = data.chunks[-2], data.chunks[-1]
    if len(set(ych[:-1])) > 1 or len(set(xch[:-1])) > 1:
        data = data.rechunk({data.ndim - 2: ych[0], data.ndim - 1: xch[0]})
        ych, xch = data.chunks[-2], data.chunks[-1]
    path = create_zarr_like(result, store, chunks=(ych[0], xch[0]), overwrite=overwrite, exist_ok=not overwrite)
    _remove_partial_writes(path)
    done = done_keys(path)
    synth = result.coords.get("synthesized")
    sdata = None
    if synth is not None:
        if isinstance(synth.data, dsa.Array):
            sdata = synth.data.rechunk((ych, xch))
        else:  # scattered once on a distributed cluster: the graph holds its key, not its pixels
            from dask.base import tokenize

            from .execute import lazy_array

            arr = np.asarray(synth.data, dtype=bool)
            sdata = lazy_array(arr, (ych, xch), name=f"geot2e-synthesized-{tokenize(arr)}")
    vblocks = data.to_delayed()
    sblocks = sdata.to_delayed(optimize_graph=False) if sdata is not None else None  # keep a scattered future
    ey, ex = np.cumsum((0,) + ych), np.cumsum((0,) + xch)
    write = dask.delayed(_write_block, pure=False)
    tasks = []
    for a in range(len(ych)):
        for b in range(len(xch)):
            key = tile_key((a, b))
            if key in done:
                continue
            ys, xs = slice(int(ey[a]), int(ey[a + 1])), slice(int(ex[b]), int(ex[b + 1]))
            coords = {"y": result["y"].values[ys], "x": result["x"].values[xs]}
            if "band" in result.coords:
                coords["band"] = result["band"].values
            vb = vblocks[(0, a, b)] if data.ndim == 3 else vblocks[a, b]
            sb = sblocks[a, b] if sblocks is not None else None
            tasks.append(write(vb, sb, result.dims, coords, result.name, {"y": ys, "x": xs}, key, str(path)))
    if tasks:
        dask.compute(*tasks, scheduler=scheduler)
    return path
