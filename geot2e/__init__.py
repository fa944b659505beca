"""geot2e — Text2Earth-style generative editing of georeferenced rasters.

Cloud removal, inpainting, outpainting, text-to-image generation and image-to-image
translation (pan-sharpening, super-resolution, NIR → RGB, dehazing) on rioxarray
DataArrays (numpy or dask), at the right ground sample distance, tile by tile, with
outputs a GIS opens as they are (DataArrays, Zarr, Cloud-Optimized GeoTIFFs).

>>> import geot2e, rioxarray
>>> da = rioxarray.open_rasterio("scene.tif")                      # doctest: +SKIP
>>> filled = geot2e.remove_clouds(da, "clouds.gpkg")               # doctest: +SKIP
>>> geot2e.io.to_cog(filled, "filled.tif")                         # doctest: +SKIP

Heavy parts (torch, the model) are imported on first use, so ``import geot2e`` is quick,
and the geospatial layers are imported only when used, so the torch-only layers
(``geot2e.models``, ``geot2e.train`` on a tile pack) import on a machine without the
raster stack (a GPU box with torch alone).
"""
from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from . import errors

try:  # registers the ``da.t2e`` accessor where xarray and rioxarray are installed
    from . import accessor as _accessor  # noqa: F401
except ImportError:  # pragma: no cover - torch-only machine: the raster functions fail when called
    pass

__all__ = [
    "__version__",
    "gsd",
    "geometry_mask",
    "cloud_mask",
    "load_model",
    "remove_clouds",
    "inpaint",
    "outpaint",
    "generate",
    "translate",
    "io",
    "errors",
    "plot",
]

_LAZY = {
    "gsd": ("geot2e.geo", "gsd"),
    "geometry_mask": ("geot2e.geo", "geometry_mask"),
    "cloud_mask": ("geot2e.geo", "cloud_mask"),
    "load_model": ("geot2e.models", "load_model"),
    "remove_clouds": ("geot2e.api", "remove_clouds"),
    "inpaint": ("geot2e.api", "inpaint"),
    "outpaint": ("geot2e.api", "outpaint"),
    "generate": ("geot2e.api", "generate"),
    "translate": ("geot2e.api", "translate"),
    "io": ("geot2e.io", None),
    "plot": ("geot2e.plot", None),
    "models": ("geot2e.models", None),
    "train": ("geot2e.train", None),
    "eval": ("geot2e.eval", None),
    "engine": ("geot2e.engine", None),
    "geo": ("geot2e.geo", None),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        mod, attr = _LAZY[name]
        m = importlib.import_module(mod)
        value = m if attr is None else getattr(m, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'geot2e' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
