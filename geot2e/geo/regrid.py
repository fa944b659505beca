"""Put a mask made on one grid onto another grid (a 20 m Sentinel-2 SCL mask for a 10 m image).

Quality bands often come on a coarser grid than the image they describe: Sentinel-2's
scene classification (SCL) is 20 m for 10 m bands, a Landsat QA band may be cropped or
reprojected differently from the bands. Decode the quality band on its own grid first
(:func:`geot2e.cloud_mask`; bit fields and classes must not be interpolated), then put the
boolean mask on the image's grid with :func:`mask_onto_grid`:

- onto a grid as fine or finer: nearest neighbour (each image pixel takes the mask pixel it
  falls in; a 20 m cloud pixel covers its four 10 m pixels);
- onto a coarser grid: an image pixel is masked when *any* mask pixel in it is (GDAL's
  ``max`` resampling), so no cloud is lost.

The CRSs may differ (the mask is reprojected, the image never is). A mask already on the
image's grid comes back unchanged.
"""
from __future__ import annotations

import xarray as xr

from ..errors import GridMismatchError, MissingCRSError
from .grid import assert_same_grid, get_nodata, spatial_dims
from .gsd import gsd

__all__ = ["mask_onto_grid"]


def _pixel_area(da: xr.DataArray) -> float:
    t = da.rio.transform()
    return abs(t.a * t.e - t.b * t.d)


def mask_onto_grid(mask: xr.DataArray, like: xr.DataArray, *, name: str = "mask") -> xr.DataArray:
    """``mask`` as a bool (y, x) DataArray on ``like``'s pixel grid.

    Parameters
    ----------
    mask : xarray.DataArray
        (y, x) or (1, y, x) mask with a CRS and a transform (rioxarray); nonzero or True =
        masked. NaN and the mask's nodata value count as not masked. Numpy- or dask-backed (a reprojected dask mask is
        computed: masks are small next to the image).
    like : xarray.DataArray
        The raster whose grid the mask goes onto (any leading dims).
    name : str, optional
        What the mask is, for error messages (e.g. ``"SCL cloud mask"``).

    Returns
    -------
    xarray.DataArray
        bool (y, x) with ``like``'s y/x coordinates, CRS and transform.

    Raises
    ------
    MissingCRSError
        The mask is on another grid and has no CRS (it cannot be placed).
    GridMismatchError
        ``mask`` is not a single (y, x) layer.
    """
    from rasterio.enums import Resampling

    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask.isel({mask.dims[0]: 0}, drop=True)
    if mask.ndim != 2:
        raise GridMismatchError(f"the {name} must be one (y, x) layer, got dims {mask.dims}; "
                                "decode a quality band into one mask first (geot2e.cloud_mask).")
    y, x = spatial_dims(like)
    template = like.isel({d: 0 for d in like.dims if d not in (y, x)}, drop=True)
    values = (mask.fillna(0) != 0) if mask.dtype.kind == "f" else (mask != 0)
    nodata = get_nodata(mask)
    if nodata is not None and nodata == nodata and nodata != 0:   # e.g. 255 filled in by a reprojection
        values = values & (mask != nodata)
    try:
        assert_same_grid(mask, template)
        return values
    except GridMismatchError:
        pass
    if mask.rio.crs is None:
        raise MissingCRSError(f"the {name} is not on the raster's grid and has no CRS, so it cannot be "
                              "placed on it; write its CRS with `mask.rio.write_crs(...)` or give a mask "
                              "on the raster's grid.")
    if template.rio.crs is None:
        raise MissingCRSError(f"the raster has no CRS, so the {name} (on another grid) cannot be placed on "
                              "it; write the raster's CRS with `da.rio.write_crs(...)`.")
    # nodata 0: pixels outside the mask's footprint come back 0 (not masked), whatever the resampling
    m = values.astype("uint8").rio.write_crs(mask.rio.crs).rio.write_nodata(0, encoded=False)
    if mask.rio.crs == template.rio.crs:
        onto_coarser = _pixel_area(mask) < _pixel_area(template) * (1 - 1e-9)
    else:  # compare ground pixel sizes
        onto_coarser = gsd(mask) < gsd(template) * (1 - 1e-6)
    resampling = Resampling.max if onto_coarser else Resampling.nearest
    out = m.rio.reproject_match(template, resampling=resampling)
    out = (out.fillna(0) != 0) if out.dtype.kind == "f" else (out != 0)
    out = out.assign_coords({y: template[y].values, x: template[x].values})
    out.attrs = {}
    return out.rio.write_crs(template.rio.crs).rio.write_transform(template.rio.transform())


