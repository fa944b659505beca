"""The ``.t2e`` accessor: geot2e on any rioxarray DataArray, in one dot.

Importing :mod:`geot2e` registers it (as rioxarray registers ``.rio``)::

    import geot2e, rioxarray
    da = rioxarray.open_rasterio("scene.tif")
    da.t2e.gsd()                                   # metres per pixel on the ground
    filled = da.t2e.remove_clouds("clouds.gpkg", steps=25)
    filled.t2e.provenance                          # model, hash, prompt, seed, GSD, ...
    filled.t2e.to_cog("filled.tif")
    da.t2e.compare(filled)                         # before / after / mask figure

Every method forwards to the public function of the same name (``geot2e.remove_clouds``,
``geot2e.inpaint``, ...), with the same keyword-only options; nothing heavy (torch, the
model) is imported until a method needs it.
"""
from __future__ import annotations

import os
from typing import Any

import xarray as xr

__all__ = ["Geot2eAccessor", "Provenance"]

_PREFIX = "geot2e_"


class Provenance(dict):
    """What produced a raster: the ``geot2e_*`` attrs, keys without the prefix.

    A plain :class:`dict` (``prov["model_id"]``, ``prov["seed"]``...) that prints as a
    short table, in a terminal and in Jupyter. Empty for rasters geot2e did not make.
    """

    _ORDER = ("operation", "model_id", "checkpoint_hash", "prompt", "guidance", "guidance_interval", "steps", "seed",
              "samples", "gsd", "tile", "overlap", "scheduler", "version", "created")

    def _rows(self) -> list[tuple[str, str]]:
        keys = [k for k in self._ORDER if k in self] + sorted(k for k in self if k not in self._ORDER)
        rows = []
        for k in keys:
            v = self[k]
            if k == "gsd" and isinstance(v, (int, float)):
                text = f"{v:.4g} m"
            elif isinstance(v, dict) or (isinstance(v, list) and v and isinstance(v[0], dict)):
                text = "{...}" if isinstance(v, dict) else f"[{len(v)} entries]"
            else:
                text = repr(v) if isinstance(v, str) else str(v)
            rows.append((k, text if len(text) <= 100 else text[:97] + "..."))
        return rows

    def __repr__(self) -> str:
        if not self:
            return "Provenance(empty: not produced by geot2e)"
        width = max(len(k) for k, _ in self._rows())
        return "Provenance\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in self._rows())

    def _repr_html_(self) -> str:
        from html import escape

        if not self:
            return "<i>Provenance: empty (not produced by geot2e)</i>"
        body = "".join(f"<tr><th style='text-align:left'>{escape(k)}</th><td style='text-align:left'>"
                       f"{escape(v)}</td></tr>" for k, v in self._rows())
        return f"<table><caption style='text-align:left'><b>geot2e provenance</b></caption>{body}</table>"


@xr.register_dataarray_accessor("t2e")
class Geot2eAccessor:
    """geot2e methods on a rioxarray DataArray (``da.t2e.*``).

    Parameters
    ----------
    da : xarray.DataArray
        A raster (band, y, x) or (y, x) with a CRS, numpy- or dask-backed.
    """

    def __init__(self, da: xr.DataArray):
        self._da = da

    # ---------------------------------------------------------------- geometry
    def gsd(self, *, per_axis: bool = False):
        """Ground sample distance in metres per pixel (see :func:`geot2e.gsd`).

        Parameters
        ----------
        per_axis : bool, default False
            Return ``(gx, gy)`` instead of their geometric mean.
        """
        from .geo import gsd

        return gsd(self._da, per_axis=per_axis)

    def geometry_mask(self, geoms, **kw) -> xr.DataArray:
        """Rasterize geometries (any CRS, or a vector file path) on this grid.

        Keyword options as in :func:`geot2e.geometry_mask` (``all_touched``,
        ``buffer_m``). Returns a bool (y, x) DataArray, True inside the geometries.
        """
        from .geo import geometry_mask, read_vector

        if isinstance(geoms, (str, os.PathLike)):
            geoms = read_vector(geoms)
        return geometry_mask(geoms, like=self._da, **kw)

    def cloud_mask(self, *, kind: str = "landsat_qa_pixel", **kw) -> xr.DataArray:
        """Decode this array as a quality band (see :func:`geot2e.cloud_mask`).

        Use on a Landsat ``QA_PIXEL`` or Sentinel-2 ``SCL`` raster, not on the image.
        """
        from .geo import cloud_mask

        return cloud_mask(self._da, kind=kind, **kw)

    # ---------------------------------------------------------------- generation
    def remove_clouds(self, mask, **opts) -> xr.DataArray:
        """Fill cloudy pixels (see :func:`geot2e.remove_clouds`).

        Parameters
        ----------
        mask : bool DataArray, geometries or vector file path
            True = cloud/shadow (a pixel to synthesize).
        **opts
            ``prompt``, ``model``, ``guidance``, ``steps``, ``seed``, ``samples``,
            ``tile``, ``overlap``, ``gsd``, ``device``, ``progress``, ...
        """
        from .api import remove_clouds

        return remove_clouds(self._da, mask, **opts)

    def inpaint(self, mask, prompt: str = "", **opts) -> xr.DataArray:
        """Synthesize the pixels under ``mask`` from ``prompt`` (see :func:`geot2e.inpaint`).

        ``prompt`` may name a column of the GeoDataFrame given as ``mask``: each polygon
        is then filled with its own prompt.
        """
        from .api import inpaint

        return inpaint(self._da, mask, prompt, **opts)

    def outpaint(self, **kw) -> xr.DataArray:
        """Extend the raster beyond its edges (see :func:`geot2e.outpaint`).

        Keywords: ``left``, ``right``, ``top``, ``bottom`` (pixels), ``prompt`` and the
        shared options.
        """
        from .api import outpaint

        return outpaint(self._da, **kw)

    def translate(self, task: str, **kw) -> xr.DataArray:
        """Pan-sharpen, super-resolve, NIR → RGB or dehaze (see :func:`geot2e.translate`).

        Keywords: ``control`` (the PAN band for ``"pansharpen"``), ``scale`` (2 or 4 for
        ``"super_resolution"``), ``prompt`` and the shared options.
        """
        from .api import translate

        return translate(self._da, task, **kw)

    # ---------------------------------------------------------------- output and display
    def to_cog(self, path: str | os.PathLike, **opts):
        """Write a Cloud-Optimized GeoTIFF (see :func:`geot2e.io.to_cog`); returns its path."""
        from .io import to_cog

        return to_cog(self._da, path, **opts)

    def compare(self, after: xr.DataArray, mask: Any = "auto", **kw):
        """Before (this array) / after figure (see :func:`geot2e.plot.compare`).

        ``mask="auto"`` uses ``after.synthesized`` when present.
        """
        from .plot import compare

        if isinstance(mask, str) and mask == "auto":
            mask = after.coords.get("synthesized")
        return compare(self._da, after, mask, **kw)

    def quicklook(self, **kw):
        """This raster as an RGB/greyscale figure (see :func:`geot2e.plot.quicklook`)."""
        from .plot import quicklook

        return quicklook(self._da, **kw)

    @property
    def provenance(self) -> Provenance:
        """What produced this raster (model id and checkpoint hash, prompt, guidance,
        steps, seed, GSD, package version...), as a :class:`Provenance` dict whose keys
        drop the ``geot2e_`` prefix. Also read back from COGs/Zarr opened with
        :func:`geot2e.io.open_raster`. Empty for rasters geot2e did not make.
        """
        from .io import read_provenance

        prov = read_provenance(self._da)
        return Provenance({k[len(_PREFIX):] if k.startswith(_PREFIX) else k: v for k, v in prov.items()})

    @property
    def synthesized(self) -> xr.DataArray:
        """Bool (y, x): pixels synthesized by geot2e (all False for an untouched raster)."""
        if "synthesized" in self._da.coords:
            return self._da.coords["synthesized"]
        from .geo import spatial_dims

        y, x = spatial_dims(self._da)
        template = self._da.isel({d: 0 for d in self._da.dims if d not in (y, x)}, drop=True)
        return xr.zeros_like(template, dtype=bool).rename("synthesized")
