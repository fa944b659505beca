"""Raster input/output for geot2e: open rasters and mosaics, write COG and Zarr.

No torch here: this layer only knows rasterio/GDAL, rioxarray, dask and Zarr.
"""
from geot2e.io.cog import to_cog
from geot2e.io.provenance import provenance_attrs, read_provenance
from geot2e.io.raster import open_raster

__all__ = [
    "open_raster",
    "to_cog",
    "provenance_attrs",
    "read_provenance",
]
