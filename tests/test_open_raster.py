"""geot2e.io.open_raster: GeoTIFF, COG, VRT and Zarr stores as rioxarray DataArrays."""
from __future__ import annotations

from pathlib import Path

import dask.array as dsa
import numpy as np
import pytest
import rasterio

import geot2e.io as gio
from geot2e.errors import OutputPathError, ParameterError

from io_helpers import DATA_CROP, GW_SCENE, landsat_crop, requires_landsat  # noqa: F401,E402

pytestmark = requires_landsat


@pytest.fixture(scope="module")
def tif(tmp_path_factory) -> Path:
    return landsat_crop(tmp_path_factory.mktemp("open") / "crop.tif", 0, 0, 256, 320)


def test_geotiff_keeps_dtype_crs_and_nodata(tif):
    da = gio.open_raster(tif)
    assert da.dims == ("band", "y", "x") and da.shape == (3, 256, 320)
    assert not isinstance(da.data, dsa.Array)
    assert da.dtype == np.uint16  # not masked, not scaled
    assert da.rio.crs.to_epsg() == 32621 and da.rio.resolution() == (30.0, -30.0)
    assert da.rio.nodata == 0
    assert da.attrs["long_name"] == ("red", "green", "blue")
    with rasterio.open(tif) as src:
        np.testing.assert_array_equal(da.values, src.read())
        assert da.rio.transform() == src.transform


@pytest.mark.parametrize("chunks", [128, "auto", {"y": 100, "x": 64}])
def test_chunks_give_dask(tif, chunks):
    da = gio.open_raster(tif, chunks=chunks)
    assert isinstance(da.data, dsa.Array)
    np.testing.assert_array_equal(da.values, gio.open_raster(tif).values)


def test_nodata_is_recorded_not_applied(tmp_path, tif):
    with rasterio.open(tif) as src:
        profile = src.profile | dict(nodata=None)
        data = src.read()
    with rasterio.open(tmp_path / "nonodata.tif", "w", **profile) as dst:
        dst.write(data)
    raw = gio.open_raster(tmp_path / "nonodata.tif")
    assert raw.rio.nodata is None
    da = gio.open_raster(tmp_path / "nonodata.tif", nodata=0)
    assert da.rio.nodata == 0 and da.dtype == np.uint16
    np.testing.assert_array_equal(da.values, data)


def test_band_selection_by_number_and_name(tif):
    full = gio.open_raster(tif)
    by_number = gio.open_raster(tif, bands=[3, 1])
    np.testing.assert_array_equal(by_number.values, full.values[[2, 0]])
    assert list(by_number.band.values) == [3, 1]
    assert by_number.attrs["long_name"] == ("blue", "red")
    by_name = gio.open_raster(tif, bands="green", chunks=64)
    np.testing.assert_array_equal(by_name.values, full.values[[1]])
    with pytest.raises(ParameterError):
        gio.open_raster(tif, bands=[4])
    with pytest.raises(ParameterError):
        gio.open_raster(tif, bands="nir")


def test_vrt(tmp_path, tif):
    with rasterio.open(tif) as src:
        w, h, t = src.width, src.height, src.transform
        crs = src.crs.to_wkt()
    bands = "".join(
        f"""<VRTRasterBand dataType="UInt16" band="{i}"><NoDataValue>0</NoDataValue>
  <SimpleSource><SourceFilename relativeToVRT="0">{tif}</SourceFilename>
  <SourceBand>{i}</SourceBand><SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>
  <DstRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/></SimpleSource></VRTRasterBand>"""
        for i in (1, 2, 3)
    )
    vrt = tmp_path / "crop.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>{crs}</SRS>'
        f"<GeoTransform>{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, {t.e}</GeoTransform>{bands}</VRTDataset>"
    )
    da = gio.open_raster(vrt, chunks=128)
    assert da.rio.crs.to_epsg() == 32621 and da.rio.nodata == 0 and da.dtype == np.uint16
    np.testing.assert_array_equal(da.values, gio.open_raster(tif).values)


def test_cog_written_by_geot2e_comes_back_as_written(tmp_path, tif):
    da = gio.open_raster(tif)
    synthesized = np.zeros(da.shape[1:], dtype=bool)
    synthesized[50:80, 10:200] = True
    edited = da.assign_coords(synthesized=(("y", "x"), synthesized))
    edited.attrs.update(gio.provenance_attrs(operation="remove_clouds", seed=3))
    cog = gio.to_cog(edited, tmp_path / "edited.tif", blocksize=64)
    back = gio.open_raster(cog, bands=["red", "blue"])
    assert back.sizes["band"] == 2 and back.attrs["long_name"] == ("red", "blue")
    np.testing.assert_array_equal(back["synthesized"].values, synthesized)
    assert back.attrs["geot2e_operation"] == "remove_clouds" and back.attrs["geot2e_seed"] == 3
    assert "GEOT2E_PROVENANCE" not in back.attrs and "GEOT2E_SYNTHESIZED_BAND" not in back.attrs


def test_zarr_store(tmp_path, tif):
    da = gio.open_raster(tif)
    store = gio.create_zarr_like(da, tmp_path / "s.zarr", chunks=128)
    gio.write_zarr_region(da, store, {"y": slice(None), "x": slice(None)})
    lazy = gio.open_raster(store)
    assert not isinstance(lazy.data, dsa.Array)
    chunked = gio.open_raster(store, chunks={"y": 256, "x": 256}, bands=[2])
    assert isinstance(chunked.data, dsa.Array) and chunked.chunks[1][0] == 256
    for got, want in ((lazy, da), (chunked, da.isel(band=[1]))):
        assert got.rio.crs == da.rio.crs and got.rio.transform() == da.rio.transform()
        assert got.rio.nodata == 0 and got.dtype == np.uint16
        np.testing.assert_array_equal(got.values, want.values)


def test_missing_path_and_bad_chunks(tmp_path, tif):
    with pytest.raises(OutputPathError):
        gio.open_raster(tmp_path / "nope.tif")
    with pytest.raises(OutputPathError):
        gio.open_raster(tmp_path / "nope.zarr")
    with pytest.raises(ParameterError):
        gio.open_raster(tif, chunks="big")
