"""geot2e.io Zarr layer: mosaics of many GeoTIFFs, empty stores, region writes, resume."""
from __future__ import annotations

import json
import os
from pathlib import Path

import dask.array as dsa
import numpy as np
import pytest
import rasterio
import rioxarray
import rioxarray.merge
import xarray as xr
from rasterio.enums import Resampling

import geot2e.io as gio
from geot2e.errors import (
    GridMismatchError,
    MissingCRSError,
    OutputExistsError,
    OutputPathError,
    ParameterError,
    ZarrStoreMismatchError,
)

from io_helpers import DATA_CROP, GW_SCENE, landsat_crop, requires_landsat  # noqa: F401,E402

pytestmark = requires_landsat


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    """Two overlapping crops; the second also written in EPSG:32721 (UTM 21 south: same
    zone, false northing 10 000 km, so its pixels land exactly on the first's grid) and
    in EPSG:32622 (the next zone: a real warp)."""
    d = tmp_path_factory.mktemp("crops")
    a = landsat_crop(d / "a.tif", 0, 0, 300, 280)
    b = landsat_crop(d / "b.tif", 200, 180, 312, 332)
    b_da = rioxarray.open_rasterio(b)
    b_da.rio.reproject("EPSG:32721", resampling=Resampling.nearest).rio.to_raster(d / "b_32721.tif")
    b_da.rio.reproject("EPSG:32622", resampling=Resampling.nearest).rio.to_raster(d / "b_32622.tif")
    return {"a": a, "b": b, "b_32721": d / "b_32721.tif", "b_32622": d / "b_32622.tif"}


@pytest.fixture()
def scene(crops) -> xr.DataArray:
    return gio.open_raster(crops["a"]).load()


# --------------------------------------------------------------------------- mosaics
def test_open_mosaic_is_lazy_and_equals_rioxarray_merge(crops):
    mosaic = gio.open_mosaic([crops["a"], crops["b"]], chunks=128)
    assert isinstance(mosaic.data, dsa.Array)
    assert mosaic.chunks[1][0] == 128 and mosaic.chunks[0] == (3,)
    expected = rioxarray.merge.merge_arrays(
        [rioxarray.open_rasterio(crops["a"]), rioxarray.open_rasterio(crops["b"])]
    )
    assert mosaic.shape == expected.shape == (3, 512, 512)
    assert mosaic.rio.crs == expected.rio.crs
    assert mosaic.rio.transform() == expected.rio.transform()
    assert mosaic.rio.nodata == 0
    np.testing.assert_array_equal(mosaic.values, expected.values)
    np.testing.assert_allclose(mosaic.x.values, expected.x.values)
    assert mosaic.attrs["long_name"] == ("red", "green", "blue")


def test_zarr_mosaic_with_a_reprojected_file_equals_rioxarray_merge(crops, tmp_path):
    store = gio.build_zarr_mosaic([crops["a"], crops["b_32721"]], tmp_path / "m.zarr", chunks=128)
    assert store == (tmp_path / "m.zarr").absolute()
    meta = json.loads((store / "data" / "zarr.json").read_text())
    assert meta["zarr_format"] == 3
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [3, 128, 128]
    expected = rioxarray.merge.merge_arrays(
        [rioxarray.open_rasterio(crops["a"]), rioxarray.open_rasterio(crops["b_32721"])]
    )
    got = gio.open_zarr(store)
    assert got.rio.crs.to_epsg() == 32621 and got.rio.nodata == 0 and got.dtype == np.uint16
    assert got.rio.transform() == expected.rio.transform()
    # rioxarray reprojects b on its own grid first (30.0000000000003 m pixels), which can
    # round its merged extent up by one empty (nodata) row/column: compare on the overlap
    h, w = got.shape[1:]
    assert expected.shape[1] in (h, h + 1) and expected.shape[2] in (w, w + 1)
    assert (expected.values[:, h:, :] == 0).all() and (expected.values[:, :, w:] == 0).all()
    expected = expected[:, :h, :w]
    np.testing.assert_array_equal(got.values, expected.values)
    # and both equal the crops themselves where each one is the first with data
    a = gio.open_raster(crops["a"]).values
    np.testing.assert_array_equal(got.values[:, :300, :280], a)
    b = gio.open_raster(crops["b"]).values
    np.testing.assert_array_equal(got.values[:, 300:, 180:], b[:, 100:, :])
    # the same store through open_raster
    via = gio.open_raster(store, chunks=None)
    np.testing.assert_array_equal(via.values, expected.values)


def test_mosaic_warps_a_file_in_another_zone(crops):
    mosaic = gio.open_mosaic([crops["a"], crops["b_32622"]], chunks=256, resampling="nearest")
    assert mosaic.rio.crs.to_epsg() == 32621
    assert mosaic.rio.resolution() == (30.0, -30.0)
    # the mosaic grid keeps the first file's pixels where they are
    assert mosaic.rio.transform().c == gio.open_raster(crops["a"]).rio.transform().c
    truth = gio.open_raster(crops["b"])
    on_grid = mosaic.sel(x=truth.x, y=truth.y, method="nearest", tolerance=1.0)
    only_b = np.s_[:, 100:, :]  # rows of b below a
    match = (on_grid.values[only_b] == truth.values[only_b]).mean()
    assert match > 0.95  # a nearest warp there and back moves few pixels


def test_mosaic_options_and_errors(crops, tmp_path):
    m = gio.open_mosaic([crops["a"]], crs="EPSG:32621", resolution=60, bands=[1], chunks=None)
    assert m.shape == (1, 150, 140) and isinstance(m.data, np.ndarray)
    assert m.attrs["long_name"] == "red"
    with rasterio.open(crops["a"]) as src:
        profile = src.profile | dict(count=1)
        data = src.read(1)
    with rasterio.open(tmp_path / "one.tif", "w", **profile) as dst:
        dst.write(data, 1)
    with pytest.raises(GridMismatchError, match="band counts"):
        gio.open_mosaic([crops["a"], tmp_path / "one.tif"])
    profile.pop("crs")
    with rasterio.open(tmp_path / "nocrs.tif", "w", **profile) as dst:
        dst.write(data, 1)
    with pytest.raises(MissingCRSError):
        gio.open_mosaic([tmp_path / "nocrs.tif"])
    with pytest.raises(OutputExistsError):
        gio.build_zarr_mosaic([crops["a"]], crops["a"].parent)


# --------------------------------------------------------------------------- stores
def test_create_zarr_like_writes_no_pixels(scene, tmp_path):
    def never(block):
        raise AssertionError("the template must not be computed")

    lazy = scene.chunk({"y": 100, "x": 100})
    lazy = lazy.copy(data=lazy.data.map_blocks(never, dtype=scene.dtype))
    lazy.attrs.update(gio.provenance_attrs(operation="inpaint", prompt="fields"))
    store = gio.create_zarr_like(lazy, tmp_path / "out.zarr", chunks=128)
    assert sorted(os.listdir(store / "data")) == ["zarr.json"]  # no chunk written
    empty = gio.open_zarr(store)
    assert empty.chunks[1][0] == 128
    assert empty.rio.crs == scene.rio.crs and empty.rio.transform() == scene.rio.transform()
    assert empty.rio.nodata == 0 and (empty.values == 0).all()  # unwritten = nodata
    assert gio.read_provenance(store)["geot2e_prompt"] == "fields"
    assert gio.read_provenance(empty)["geot2e_operation"] == "inpaint"
    assert gio.done_keys(store) == set()


def test_region_writes_ledger_and_resume(scene, tmp_path):
    syn = xr.zeros_like(scene.isel(band=0, drop=True), dtype=bool)
    syn[:40, :40] = True
    result = scene.assign_coords(synthesized=syn)
    store = gio.create_zarr_like(result, tmp_path / "r.zarr", chunks=128)
    tiles = [(i, j) for i in range(3) for j in range(3)]  # 300 x 280 -> 3 x 3 chunks

    def write(i, j):
        block = result.isel(y=slice(128 * i, 128 * (i + 1)), x=slice(128 * j, 128 * (j + 1)))
        gio.write_zarr_region(block, store, "auto", done_key=(i, j))

    for i, j in tiles[:4]:  # a first run stops after four tiles
        write(i, j)
    assert gio.done_keys(store) == {"0_0", "0_1", "0_2", "1_0"}
    partial = gio.open_zarr(store)
    np.testing.assert_array_equal(partial.values[:, :128], scene.values[:, :128])
    assert (partial.values[:, 256:] == 0).all()
    # resume: the same store is accepted, finished tiles are skipped
    again = gio.create_zarr_like(result, store, chunks=128, exist_ok=True)
    assert again == store and gio.done_keys(store) == {"0_0", "0_1", "0_2", "1_0"}
    for i, j in tiles:
        if gio.tile_key((i, j)) not in gio.done_keys(store):
            write(i, j)
    assert gio.done_keys(store) == {f"{i}_{j}" for i, j in tiles}
    final = gio.open_raster(store)
    np.testing.assert_array_equal(final.values, scene.values)
    np.testing.assert_array_equal(final["synthesized"].values, syn.values)


def test_failed_region_write_is_not_recorded_as_done(scene, tmp_path):
    store = gio.create_zarr_like(scene, tmp_path / "f.zarr", chunks=128)

    def crash(block):
        raise RuntimeError("killed while computing the tile")

    block = scene.isel(y=slice(0, 128), x=slice(0, 128)).chunk()
    block = block.copy(data=block.data.map_blocks(crash, dtype=block.dtype))
    with pytest.raises(RuntimeError):
        gio.write_zarr_region(block, store, {"y": slice(0, 128), "x": slice(0, 128)}, done_key=(0, 0))
    assert gio.done_keys(store) == set()


def test_region_errors(scene, tmp_path):
    store = gio.create_zarr_like(scene, tmp_path / "e.zarr", chunks=128)
    block = scene.isel(y=slice(0, 128), x=slice(0, 128))
    with pytest.raises(ParameterError, match="aligned"):
        gio.write_zarr_region(scene.isel(y=slice(10, 138), x=slice(0, 128)), store)
    gio.write_zarr_region(
        scene.isel(y=slice(10, 138), x=slice(0, 128)), store, check_alignment=False
    )
    with pytest.raises(GridMismatchError):  # right shape, wrong place
        gio.write_zarr_region(block, store, {"y": slice(128, 256), "x": slice(0, 128)})
    with pytest.raises(GridMismatchError):
        gio.write_zarr_region(block, store, {"y": slice(0, 100), "x": slice(0, 128)})
    with pytest.raises(ZarrStoreMismatchError):
        gio.write_zarr_region(block.astype("float32"), store)
    with pytest.raises(ParameterError):
        gio.mark_done(store, "../escape")


def test_store_mismatch_and_overwrite(scene, tmp_path):
    store = gio.create_zarr_like(scene, tmp_path / "s.zarr", chunks=128)
    gio.check_zarr_matches(store, scene)
    gio.mark_done(store, "0_0")
    with pytest.raises(OutputExistsError):
        gio.create_zarr_like(scene, store, chunks=128)
    others = {
        "crs": scene.rio.write_crs("EPSG:32721"),
        "grid": scene.isel(x=slice(1, None)),
        "shift": scene.assign_coords(x=scene.x + 30),
        "bands": scene.isel(band=[0, 1]),
        "band names": scene.assign_coords(band=[3, 2, 1]),
        "dtype": scene.astype("float32"),
    }
    for what, other in others.items():
        with pytest.raises(ZarrStoreMismatchError):
            gio.check_zarr_matches(store, other)
        with pytest.raises(ZarrStoreMismatchError):
            gio.create_zarr_like(other, store, chunks=128, exist_ok=True)
    replaced = gio.create_zarr_like(others["dtype"], store, chunks=128, overwrite=True)
    assert gio.done_keys(replaced) == set()  # the old ledger went with the old store
    gio.check_zarr_matches(replaced, others["dtype"])
    notastore = tmp_path / "photos"
    notastore.mkdir()
    (notastore / "keep.jpg").write_bytes(b"x")
    with pytest.raises(OutputPathError):
        gio.create_zarr_like(scene, notastore, chunks=128, overwrite=True)
    assert (notastore / "keep.jpg").exists()
    with pytest.raises(OutputPathError):
        gio.create_zarr_like(scene, tmp_path / "missing" / "s.zarr", chunks=128)


def test_ledger_keys_and_zarr_tools_accept_the_ledger(scene, tmp_path):
    import warnings

    import zarr

    store = gio.create_zarr_like(scene, tmp_path / "l.zarr", chunks=128)
    gio.mark_done(store, (2, 10))
    gio.mark_done(store, "tile-7")
    gio.mark_done(store, (2, 10))  # idempotent
    assert gio.done_keys(store) == {"2_10", "tile-7"}
    assert gio.tile_key((2, 10)) == "2_10" and gio.tile_key(5) == "5"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xr.open_zarr(store, consolidated=False).load()
        list(zarr.open_group(store, mode="r").members())
    with pytest.raises(OutputPathError):
        gio.mark_done(tmp_path, (0, 0))  # not a store


# --------------------------------------------------------------------------- other readers (issue 20)
def test_store_opens_in_plain_xarray_and_rioxarray(scene, tmp_path):
    """Without geot2e: xr.open_zarr(decode_coords="all") + rioxarray give the CRS, the exact
    transform and nodata, and the stored dtype (uint16 stays uint16: no float with NaN)."""
    syn = xr.zeros_like(scene.isel(band=0, drop=True), dtype=bool)
    syn[10:50, 20:90] = True
    store = gio.create_zarr_like(scene.assign_coords(synthesized=syn), tmp_path / "plain.zarr", chunks=128)
    gio.write_zarr_region(scene.assign_coords(synthesized=syn), store, {"y": slice(None), "x": slice(None)})
    ds = xr.open_zarr(store, decode_coords="all", consolidated=False)
    da = ds["data"]
    assert da.dtype == np.uint16
    assert da.rio.crs == scene.rio.crs
    assert da.rio.transform() == scene.rio.transform()
    assert da.rio.nodata == 0
    xr.align(da, scene, join="exact")
    np.testing.assert_array_equal(da.values, scene.values)
    np.testing.assert_array_equal(ds["synthesized"].values, syn.values)
    # and geot2e's own reader gives the same
    back = gio.open_zarr(store)
    assert back.dtype == np.uint16 and back.rio.nodata == 0 and back.rio.crs == scene.rio.crs
    xr.align(back, scene, join="exact")


def test_zarr_round_trip_of_a_non_round_grid_aligns_exactly(scene, tmp_path):
    from affine import Affine

    t = Affine(10.000731, 0.0, 737145.3, 0.0, -10.000731, -2785695.7)
    profile = dict(driver="GTiff", width=scene.sizes["x"], height=scene.sizes["y"], count=3, dtype="uint16",
                   crs=scene.rio.crs, transform=t, nodata=0)
    with rasterio.open(tmp_path / "odd.tif", "w", **profile) as dst:
        dst.write(scene.values)
    odd = gio.open_raster(tmp_path / "odd.tif").load()
    store = gio.create_zarr_like(odd, tmp_path / "odd.zarr", chunks=128)
    gio.write_zarr_region(odd, store, {"y": slice(None), "x": slice(None)})
    for back in (gio.open_zarr(store), xr.open_zarr(store, decode_coords="all", consolidated=False)["data"]):
        xr.align(back, odd, join="exact")
        assert back.rio.transform() == t
    # and on to a COG: still the source's grid, bit for bit
    cog = gio.open_raster(gio.to_cog(gio.open_zarr(store), tmp_path / "odd_cog.tif"))
    xr.align(cog, odd, join="exact")


def test_gdal_zarr_driver_reads_the_store_or_says_why_not(scene, tmp_path):
    """GDAL's own Zarr driver: read the store where the installed GDAL supports Zarr v3's
    final codecs; otherwise skip, naming the GDAL version."""
    store = gio.create_zarr_like(scene, tmp_path / "g.zarr", chunks=128)
    gio.write_zarr_region(scene, store, {"y": slice(None), "x": slice(None)})
    try:
        with rasterio.open(f'ZARR:"{store}":/data') as src:
            values = src.read()
    except rasterio.errors.RasterioIOError as e:
        if "Unsupported codec" in str(e):
            pytest.skip(f"GDAL {rasterio.__gdal_version__} does not read Zarr v3 final-spec codecs ({e}); "
                        "GDAL >= 3.11 does")
        raise
    np.testing.assert_array_equal(values, scene.values)


def test_unfinished_store_warns_when_opened_and_is_refused_as_input(scene, tmp_path):
    """A store whose ledger lists only some blocks (a killed job) reads as nodata where blocks are
    missing: opening it warns, process_zarr refuses it, and both say how to resume."""
    import warnings

    import geot2e.api
    from geot2e.errors import IncompleteStoreError, IncompleteStoreWarning

    store = gio.create_zarr_like(scene, tmp_path / "half.zarr", chunks=128)  # 3 x 3 blocks
    for i, j in [(0, 0), (0, 1), (0, 2), (1, 0)]:
        block = scene.isel(y=slice(128 * i, 128 * (i + 1)), x=slice(128 * j, 128 * (j + 1)))
        gio.write_zarr_region(block, store, "auto", done_key=(i, j))
    from geot2e.io.zarr_store import store_progress

    assert store_progress(store) == (4, 9)
    for opener in (gio.open_zarr, gio.open_raster):
        with pytest.warns(IncompleteStoreWarning, match=r"4 of 9 blocks.*Resume"):
            opener(store)
    mask = np.zeros(scene.shape[1:], bool)
    mask[:10, :10] = True
    with pytest.raises(IncompleteStoreError, match=r"4 of 9 blocks.*process_zarr"):
        geot2e.api.process_zarr(store, tmp_path / "out.zarr", mask, "x")
    assert not (tmp_path / "out.zarr").exists()
    for i, j in [(1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]:  # the resumed job finishes it
        block = scene.isel(y=slice(128 * i, 128 * (i + 1)), x=slice(128 * j, 128 * (j + 1)))
        gio.write_zarr_region(block, store, "auto", done_key=(i, j))
    with warnings.catch_warnings():
        warnings.simplefilter("error", IncompleteStoreWarning)
        np.testing.assert_array_equal(gio.open_raster(store).values, scene.values)


def test_io_works_in_a_fresh_process_that_never_imported_rioxarray(scene, tmp_path):
    """geot2e imports the raster stack lazily: geot2e.io must register the .rio accessor itself
    (a process_zarr job script importing only geot2e.io and geot2e.api failed with
    "'DataArray' object has no attribute 'rio'")."""
    import subprocess
    import sys

    store = gio.create_zarr_like(scene, tmp_path / "fresh.zarr", chunks=128)
    gio.write_zarr_region(scene, store, {"y": slice(None), "x": slice(None)})
    code = (f"import sys, geot2e.io as gio\nassert 'rioxarray' not in sys.modules\n"
            f"da = gio.open_zarr({str(store)!r})\nprint(da.rio.crs)\n"
            f"gio.to_cog(da, {str(tmp_path / 'fresh.tif')!r})\n")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "32621" in p.stdout and (tmp_path / "fresh.tif").exists()
