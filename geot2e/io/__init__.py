"""Raster input/output for geot2e: open rasters and mosaics, write COG and Zarr.

No torch here: this layer only knows rasterio/GDAL, rioxarray, dask and Zarr.
"""
from geot2e.io.cog import to_cog
from geot2e.io.ledger import done_keys, mark_done, tile_key
from geot2e.io.mosaic import build_zarr_mosaic, open_mosaic
from geot2e.io.provenance import provenance_attrs
from geot2e.io.raster import open_raster, read_provenance
from geot2e.io.zarr_store import check_zarr_matches, create_zarr_like, open_zarr, write_zarr_region

__all__ = [
    "open_raster",
    "open_mosaic",
    "build_zarr_mosaic",
    "to_cog",
    "create_zarr_like",
    "write_zarr_region",
    "open_zarr",
    "check_zarr_matches",
    "mark_done",
    "done_keys",
    "tile_key",
    "provenance_attrs",
    "read_provenance",
]
