"""The uncertainty companion of a ``samples=K`` result, written next to the result.

With ``samples=K`` (K > 1) the public functions return the per-pixel mean of K samples and
their standard deviation as an ``uncertainty`` coordinate (same dims as the data, in the
input's units, 0 outside the mask). A COG has no room for it, so it goes to a companion file
next to the result: ``filled.tif`` → ``filled.uncertainty.tif`` (``.zarr`` → ``.uncertainty.zarr``),
float32, on the same grid, with the result's ``geot2e_*`` provenance. The command line writes
the same file.

>>> filled = geot2e.remove_clouds(da, mask, samples=4)                 # doctest: +SKIP
>>> geot2e.io.to_cog(filled, "filled.tif")                             # doctest: +SKIP
>>> geot2e.io.uncertainty.write_uncertainty(filled, "filled.tif")      # doctest: +SKIP
PosixPath('filled.uncertainty.tif')
"""
from __future__ import annotations

import os
from pathlib import Path

import xarray as xr

from ..errors import ParameterError

__all__ = ["companion_path", "uncertainty_of", "write_uncertainty"]


def companion_path(path: str | os.PathLike, label: str = "uncertainty") -> Path:
    """``name.tif`` → ``name.<label>.tif``; ``name.zarr`` → ``name.<label>.zarr``."""
    p = Path(path)
    if p.suffix.lower() == ".zarr":
        return p.with_name(f"{p.stem}.{label}.zarr")
    return p.with_name(f"{p.stem}.{label}{p.suffix or '.tif'}")


def uncertainty_of(da: xr.DataArray) -> xr.DataArray:
    """The ``uncertainty`` coordinate of a ``samples=K`` result as a float32 raster on its grid.

    Raises
    ------
    ParameterError
        ``da`` has no ``uncertainty`` coordinate (it was made with ``samples=1``).
    """
    if "uncertainty" not in da.coords:
        raise ParameterError("this result has no 'uncertainty' coordinate: only samples=K with K > 1 "
                             "gives one (the per-pixel spread of the K samples).")
    unc = da.coords["uncertainty"]
    u = unc.variable.to_base_variable()
    out = xr.DataArray(u, coords={k: v for k, v in da.coords.items()
                                  if k not in ("uncertainty", "synthesized") and set(v.dims) <= set(u.dims)},
                       name="uncertainty").astype("float32")
    out.attrs = {k: v for k, v in da.attrs.items() if k.startswith("geot2e_")}
    out.attrs["long_name"] = unc.attrs.get("long_name", "per-pixel standard deviation of the samples")
    out = out.rio.write_crs(da.rio.crs).rio.write_transform(da.rio.transform())
    return out.rio.write_nodata(None, encoded=False)


def write_uncertainty(da: xr.DataArray, path: str | os.PathLike, *, overwrite: bool = False,
                      compress: str | None = "deflate", blocksize: int = 512) -> Path:
    """Write the uncertainty of a ``samples=K`` result next to ``path`` (the result's own file).

    Parameters
    ----------
    da : xarray.DataArray
        A result of ``remove_clouds`` / ``inpaint`` / ``outpaint`` / ``generate`` with
        ``samples`` > 1 (numpy- or dask-backed).
    path : str or os.PathLike
        Where the result itself is (or will be) written; the companion goes to
        :func:`companion_path` of it: a COG, or a Zarr v3 store for ``.zarr``.
    overwrite : bool, default False
        Replace an existing companion.
    compress, blocksize
        COG options, as in :func:`geot2e.io.to_cog` (``blocksize`` is also the Zarr chunk).

    Returns
    -------
    pathlib.Path
        The companion's path.

    Raises
    ------
    ParameterError
        No ``uncertainty`` coordinate (``samples=1``).
    OutputExistsError
        The companion exists and ``overwrite`` is False.
    """
    u = uncertainty_of(da)
    cpath = companion_path(path)
    if cpath.suffix.lower() == ".zarr":
        from .zarr_store import create_zarr_like, write_zarr_region

        store = create_zarr_like(u, cpath, chunks=blocksize, overwrite=overwrite)
        write_zarr_region(u, store, "auto")
        return Path(store)
    from .cog import to_cog

    return to_cog(u, cpath, overwrite=overwrite, compress=compress, blocksize=blocksize, synthesized="none")
