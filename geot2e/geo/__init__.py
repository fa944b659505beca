"""Pure geospatial layer: GSD, masks from vectors and QA bands, grids, radiometry.

Nothing here imports torch; everything works on rioxarray DataArrays (numpy- or
dask-backed) and plain arrays.
"""
from geot2e.geo.grid import (
    assert_same_grid,
    get_nodata,
    grid_coords,
    nodata_mask,
    spatial_dims,
    valid_mask,
)
from geot2e.geo.gsd import ground_jacobian, gsd, gsd_from_transform, gsd_rows
from geot2e.geo.masks import dilate_mask, geometry_mask, prompt_map, read_vector
from geot2e.geo.qa import cloud_mask
from geot2e.geo.radiometry import Radiometry
from geot2e.geo.regrid import mask_onto_grid

__all__ = [
    "gsd",
    "gsd_from_transform",
    "gsd_rows",
    "ground_jacobian",
    "geometry_mask",
    "prompt_map",
    "read_vector",
    "dilate_mask",
    "cloud_mask",
    "mask_onto_grid",
    "Radiometry",
    "spatial_dims",
    "get_nodata",
    "grid_coords",
    "nodata_mask",
    "valid_mask",
    "assert_same_grid",
]
