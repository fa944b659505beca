"""geot2e.io.to_cog: valid COGs, round trips, provenance, synthesized band, atomic writes."""
from __future__ import annotations

import os
from pathlib import Path

import dask
import dask.array as dsa
import numpy as np
import pytest
import rasterio
import xarray as xr

import geot2e.io as gio
from geot2e.errors import (
    DimensionError,
    GridMismatchError,
    OutputExistsError,
    OutputPathError,
    ParameterError,
)

from io_helpers import DATA_CROP, GW_SCENE, landsat_crop, requires_landsat  # noqa: F401,E402

pytestmark = requires_landsat


@pytest.fixture(scope="module")
def crop(tmp_path_factory) -> xr.DataArray:
    """512 x 512 real Landsat crop; its top-right corner holds nodata (0) pixels."""
    path = landsat_crop(tmp_path_factory.mktemp("crop") / "crop.tif", 0, 0, 512, 512)
    da = gio.open_raster(path).load()
    assert (da == 0).any() and (da > 0).any()
    return da


def _cog_ok(path: Path) -> None:
    from rio_cogeo.cogeo import cog_validate

    valid, errors, warnings = cog_validate(str(path), strict=True)
    assert valid, (errors, warnings)
    with rasterio.open(path) as src:
        assert src.profile["tiled"]
        assert src.overviews(1), "a COG should have overviews"
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def _only(dirpath: Path) -> list[str]:
    return sorted(os.listdir(dirpath))


# --------------------------------------------------------------------------- valid COG
def test_numpy_input_is_a_valid_cog_and_round_trips(crop, tmp_path):
    out = gio.to_cog(crop, tmp_path / "out.tif", blocksize=128)
    assert out == (tmp_path / "out.tif").absolute()
    _cog_ok(out)
    assert _only(tmp_path) == ["out.tif"]  # no temporaries left behind
    with rasterio.open(out) as src:
        assert (src.block_shapes[0]) == (128, 128)
        assert src.compression.value == "DEFLATE"
        assert src.overviews(1) == [2, 4]  # 512 -> 256 -> 128 (one tile)
    back = gio.open_raster(out)
    assert back.rio.crs == crop.rio.crs
    assert back.rio.transform() == crop.rio.transform()
    assert back.dtype == np.uint16
    assert back.rio.nodata == 0
    np.testing.assert_array_equal(back.values, crop.values)


def test_dask_input_small_chunks_writes_valid_cog_with_overviews(crop, tmp_path):
    lazy = crop.chunk({"band": 1, "y": 200, "x": 180})  # blocks not aligned with the tiles
    out = gio.to_cog(lazy, tmp_path / "lazy.tif", blocksize=128, compress="zstd")
    _cog_ok(out)
    with rasterio.open(out) as src:
        assert src.compression.value == "ZSTD"
    np.testing.assert_array_equal(gio.open_raster(out).values, crop.values)


def test_overview_options_and_no_compression(crop, tmp_path):
    two = gio.to_cog(
        crop, tmp_path / "two.tif", blocksize=32, overviews=2, resampling="nearest", compress=None
    )
    with rasterio.open(two) as src:
        assert src.overviews(1) == [2, 4]
        assert src.compression is None
        # nearest overviews take existing pixel values
        ovr = src.read(1, out_shape=(128, 128))
        assert np.isin(ovr, crop.values[0]).all()
    none = gio.to_cog(crop, tmp_path / "none.tif", blocksize=128, overviews="none")
    with rasterio.open(none) as src:
        assert src.overviews(1) == []


def test_two_dimensional_float_input_with_nan_nodata(crop, tmp_path):
    band = crop.isel(band=0).astype("float32")
    band = band.where(band != 0).rio.write_nodata(np.nan, encoded=False)
    out = gio.to_cog(band, tmp_path / "f.tif", blocksize=128)
    with rasterio.open(out) as src:
        assert src.count == 1 and src.dtypes[0] == "float32" and np.isnan(src.nodata)
    back = gio.open_raster(out).isel(band=0)
    np.testing.assert_array_equal(back.values, band.values)  # NaN == NaN for this function


def test_masked_read_is_written_back_in_original_dtype(tmp_path):
    import rioxarray

    path = landsat_crop(tmp_path / "c.tif", 0, 0, 200, 300)
    masked = rioxarray.open_rasterio(path, masked=True)
    assert masked.dtype.kind == "f"
    out = gio.to_cog(masked, tmp_path / "m.tif", blocksize=64)
    with rasterio.open(out) as src, rasterio.open(path) as ref:
        assert src.dtypes[0] == "uint16" and src.nodata == 0
        np.testing.assert_array_equal(src.read(), ref.read())


def test_bool_input_becomes_uint8(crop, tmp_path):
    mask = crop.isel(band=0) == 0
    out = gio.to_cog(mask, tmp_path / "mask.tif", blocksize=128, resampling="mode")
    with rasterio.open(out) as src:
        assert src.dtypes[0] == "uint8"
        np.testing.assert_array_equal(src.read(1), mask.values.astype("uint8"))


# --------------------------------------------------------------------------- metadata
def test_band_descriptions_tags_and_provenance(crop, tmp_path):
    named = crop.assign_coords(band=["blue", "green", "red"])
    named.attrs.update(gio.provenance_attrs(operation="inpaint", prompt="a river", guidance=3.0, seed=7))
    out = gio.to_cog(
        named, tmp_path / "p.tif", blocksize=128,
        tags={"SENSOR": "OLI", "cloud_cover": 12.5, "geot2e_steps": 30},
    )
    with rasterio.open(out) as src:
        assert src.descriptions == ("blue", "green", "red")  # from the band coordinate
        tags = src.tags()
        assert tags["SENSOR"] == "OLI" and tags["cloud_cover"] == "12.5"
        assert "GEOT2E_PROVENANCE" in tags
    prov = gio.read_provenance(out)
    assert prov["geot2e_prompt"] == "a river"
    assert prov["geot2e_guidance"] == 3.0 and prov["geot2e_seed"] == 7 and prov["geot2e_steps"] == 30
    assert prov["geot2e_operation"] == "inpaint" and prov["geot2e_version"]
    back = gio.open_raster(out)
    assert gio.read_provenance(back) == prov
    assert back.attrs["long_name"] == ("blue", "green", "red")
    # writing the reopened array again keeps provenance and descriptions
    again = gio.to_cog(back, tmp_path / "again.tif", blocksize=128)
    assert gio.read_provenance(again) == prov
    with rasterio.open(again) as src:
        assert src.descriptions == ("blue", "green", "red")
        assert src.tags()["SENSOR"] == "OLI"


def test_provenance_attrs_prefix_and_json():
    attrs = gio.provenance_attrs(model_id="m", gsd=np.float32(30.0), steps=np.int64(20), prompt=None)
    assert attrs["geot2e_model_id"] == "m"
    assert attrs["geot2e_gsd"] == 30.0 and type(attrs["geot2e_steps"]) is int
    assert "geot2e_prompt" not in attrs
    assert attrs["geot2e_created"].endswith("Z")
    with pytest.raises(ParameterError):
        gio.provenance_attrs(seed=object())


# --------------------------------------------------------------------------- synthesized
def test_synthesized_coordinate_becomes_last_band(crop, tmp_path):
    syn = xr.zeros_like(crop.isel(band=0, drop=True), dtype=bool)
    syn[100:220, 50:400] = True
    edited = crop.chunk({"y": 256, "x": 256}).assign_coords(synthesized=syn)
    out = gio.to_cog(edited, tmp_path / "s.tif", blocksize=128)
    _cog_ok(out)
    with rasterio.open(out) as src:
        assert src.count == 4
        assert src.descriptions[3] == "synthesized"
        assert src.tags()["GEOT2E_SYNTHESIZED_BAND"] == "4"
        assert src.tags(4)["GEOT2E_ROLE"] == "synthesized"
        np.testing.assert_array_equal(src.read(4), syn.values.astype("uint16"))
    back = gio.open_raster(out)
    assert back.sizes["band"] == 3
    np.testing.assert_array_equal(back["synthesized"].values, syn.values)
    np.testing.assert_array_equal(back.values, crop.values)


def test_synthesized_explicit_map_none_and_errors(crop, tmp_path):
    syn = np.zeros(crop.shape[1:], dtype=bool)
    syn[:10] = True
    out = gio.to_cog(crop, tmp_path / "e.tif", blocksize=128, synthesized=syn)
    with rasterio.open(out) as src:
        assert src.count == 4
    edited = crop.assign_coords(synthesized=(("y", "x"), syn))
    skip = gio.to_cog(edited, tmp_path / "n.tif", blocksize=128, synthesized="none")
    with rasterio.open(skip) as src:
        assert src.count == 3
    with pytest.raises(GridMismatchError):
        gio.to_cog(crop, tmp_path / "bad.tif", synthesized=syn[:-1])
    with pytest.raises(ParameterError):
        gio.to_cog(crop, tmp_path / "bad.tif", synthesized=syn, nodata=1)
    assert not (tmp_path / "bad.tif").exists()


# --------------------------------------------------------------------------- safety
def _exploding(crop: xr.DataArray, bad_block=(0, 1, 1)) -> xr.DataArray:
    """A dask copy of ``crop`` whose block ``bad_block`` raises when computed."""
    lazy = crop.chunk({"band": 3, "y": 128, "x": 128})

    def boom(block, block_id=None):
        if block_id == bad_block:
            raise RuntimeError("model crashed on this tile")
        return block

    return lazy.copy(data=lazy.data.map_blocks(boom, dtype=lazy.dtype))


def test_failure_mid_write_leaves_no_file_and_no_temporaries(crop, tmp_path):
    with pytest.raises(RuntimeError, match="model crashed"):
        gio.to_cog(_exploding(crop), tmp_path / "x.tif", blocksize=128)
    assert _only(tmp_path) == []


def test_failure_with_overwrite_keeps_the_previous_file(crop, tmp_path):
    dest = gio.to_cog(crop, tmp_path / "x.tif", blocksize=128)
    before = dest.read_bytes()
    with pytest.raises(RuntimeError):
        gio.to_cog(_exploding(crop, (0, 3, 3)), dest, blocksize=128, overwrite=True)
    assert dest.read_bytes() == before
    assert _only(tmp_path) == ["x.tif"]


def test_existing_file_needs_overwrite(crop, tmp_path):
    dest = tmp_path / "x.tif"
    dest.write_bytes(b"not a tiff")
    with pytest.raises(OutputExistsError):
        gio.to_cog(_exploding(crop), dest)  # raised before any block is computed
    assert dest.read_bytes() == b"not a tiff"
    gio.to_cog(crop, dest, blocksize=128, overwrite=True)
    _cog_ok(dest)


def test_missing_directory_is_an_output_path_error(crop, tmp_path):
    with pytest.raises(OutputPathError, match="does not exist"):
        gio.to_cog(_exploding(crop), tmp_path / "nope" / "x.tif")
    with pytest.raises(OutputPathError, match="directory"):
        gio.to_cog(crop, tmp_path)


def test_read_only_directory_is_an_output_path_error(crop, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # root ignores permissions: emulate a read-only mount
            import geot2e.io._paths as paths

            real = os.access
            monkeypatch.setattr(
                paths.os, "access",
                lambda p, mode, *a, **k: False if Path(p) == ro and mode & os.W_OK else real(p, mode, *a, **k),
            )
        with pytest.raises(OutputPathError, match="not writable"):
            gio.to_cog(_exploding(crop), ro / "x.tif")  # checked before computing
    finally:
        ro.chmod(0o755)
    assert _only(ro) == []


def test_bad_inputs_raise_before_computing(crop, tmp_path):
    bad = _exploding(crop)
    with pytest.raises(ParameterError):
        gio.to_cog(bad, tmp_path / "a.tif", blocksize=100)
    with pytest.raises(ParameterError):
        gio.to_cog(bad, tmp_path / "a.tif", compress="gzip")
    with pytest.raises(ParameterError):
        gio.to_cog(bad, tmp_path / "a.tif", nodata=-1)
    with pytest.raises(DimensionError):
        gio.to_cog(bad.expand_dims(time=2), tmp_path / "a.tif")
    assert _only(tmp_path) == []


def test_distributed_scheduler(crop, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ):
        out = gio.to_cog(crop.chunk({"y": 200, "x": 200}), tmp_path / "d.tif", blocksize=128)
    _cog_ok(out)
    np.testing.assert_array_equal(gio.open_raster(out).values, crop.values)


def test_threaded_scheduler_is_used_by_default(crop, tmp_path):
    with dask.config.set(scheduler="threads"):
        out = gio.to_cog(crop.chunk({"y": 128, "x": 128}), tmp_path / "t.tif", blocksize=128)
    np.testing.assert_array_equal(gio.open_raster(out).values, crop.values)
    assert isinstance(gio.open_raster(out, chunks=128).data, dsa.Array)


# --------------------------------------------------------------------------- what a GIS sees (issue 20)
RGBN = Path(__file__).resolve().parent / "data" / "rgbn_5m_crop.tif"


@pytest.mark.parametrize("nodata", [None, 0])
def test_uint8_rgb_flags_band_is_not_alpha_for_gdal(tmp_path, nodata):
    """A uint8 RGB image with its synthesized band: GDAL must not read the 0/1 flags as
    alpha (a GIS would show only the filled pixels); its dataset mask marks every valid pixel."""
    rgb = gio.open_raster(RGBN, bands=[1, 2, 3]).load()
    rgb = rgb.assign_coords(band=["red", "green", "blue"])
    if nodata is not None:
        rgb = rgb.rio.write_nodata(nodata)
        rgb[:, :4, :] = 0  # a strip of nodata pixels, which the mask must show
    syn = np.zeros(rgb.shape[1:], bool)
    syn[40:80, 100:160] = True
    out = gio.to_cog(rgb.assign_coords(synthesized=(("y", "x"), syn)), tmp_path / "rgb.tif", blocksize=128)
    _cog_ok(out)
    from rasterio.enums import ColorInterp, MaskFlags

    with rasterio.open(out) as src:
        assert src.count == 4
        assert src.colorinterp[:3] == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert src.colorinterp[3] != ColorInterp.alpha
        assert all(MaskFlags.alpha not in f for f in src.mask_flag_enums)
        dmask = src.dataset_mask()
        np.testing.assert_array_equal(src.read(4), syn.astype(np.uint8))
    valid = np.ones(syn.shape, bool) if nodata is None else (rgb.values != nodata).any(0)
    np.testing.assert_array_equal(dmask != 0, valid)  # original pixels are not transparent
    back = gio.open_raster(out)
    np.testing.assert_array_equal(back.values, rgb.values)
    np.testing.assert_array_equal(back["synthesized"].values, syn)


def test_band_colour_interpretation_follows_band_names(crop, tmp_path):
    from rasterio.enums import ColorInterp

    out = gio.to_cog(crop.isel(band=[2, 1, 0]).assign_coords(band=["blue", "green", "red"]), tmp_path / "bgr.tif")
    with rasterio.open(out) as src:
        assert src.colorinterp == (ColorInterp.blue, ColorInterp.green, ColorInterp.red)


def test_cog_round_trip_keeps_the_exact_geotransform(crop, tmp_path):
    """The source's geotransform is written bit for bit: read back, the coordinates align
    exactly with the array's (join="exact"), also for a crop and for a grid whose pixel size
    is not a round number (as geot2e.generate makes)."""
    from affine import Affine

    back = gio.open_raster(gio.to_cog(crop, tmp_path / "full.tif"))
    xr.align(back, crop, join="exact")
    part = crop.isel(y=slice(37, 301), x=slice(11, 250))
    back = gio.open_raster(gio.to_cog(part, tmp_path / "part.tif"))
    xr.align(back, part, join="exact")
    # the same pixels in a GeoTIFF whose pixel size is not a round number (10.000731 m), as
    # a resampled or generated raster has: rebuilt from coordinates, its origin moved
    t = Affine(10.000731, 0.0, 737145.3, 0.0, -10.000731, -2785695.7)
    profile = dict(driver="GTiff", width=crop.sizes["x"], height=crop.sizes["y"], count=3, dtype="uint16",
                   crs=crop.rio.crs, transform=t, nodata=0)
    with rasterio.open(tmp_path / "odd_src.tif", "w", **profile) as dst:
        dst.write(crop.values)
    odd = gio.open_raster(tmp_path / "odd_src.tif").load()
    back = gio.open_raster(gio.to_cog(odd, tmp_path / "odd.tif"))
    xr.align(back, odd, join="exact")
    assert (back - odd).shape == odd.shape  # arithmetic keeps every column
    np.testing.assert_array_equal((back - odd).values, 0)
    with rasterio.open(tmp_path / "odd.tif") as src:
        assert src.transform == t  # bit for bit


def test_stale_temporaries_of_a_killed_run_are_removed(crop, tmp_path):
    """A SIGKILLed to_cog cannot clean up; the next write to the same destination removes the
    temporaries whose process is gone, and leaves a live writer's alone."""
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = [tmp_path / f".out.tif.{gone}-0123456789ab.part.tif", tmp_path / f".out.tif.{gone}-0123456789ab.cog.tif",
             tmp_path / f".out.tif.{gone}-0123456789ab.part.tif.aux.xml"]
    live = tmp_path / f".out.tif.{os.getppid()}-abcdefabcdef.part.tif"  # the test runner's parent: alive
    for f in [*stale, live]:
        f.write_bytes(b"half a tiff")
    gio.to_cog(crop, tmp_path / "out.tif")
    assert sorted(os.listdir(tmp_path)) == sorted(["out.tif", live.name])
