"""Multi-band rasters (issue 18): band roles from the raster or bands=, every band filled, the
input's band order, bit-identical unmasked pixels in every band, chunk-independent results.

Real data: a 64 x 64 six-band Sentinel-2 crop (tests/data/make_s2_multiband_crop.py) whose band
descriptions are the sensor's names (B02 ... B12); a tiny random model (fast, the pipeline's
properties do not depend on the weights)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import geot2e
from geot2e.errors import BandCountError, BandRoleError
from geot2e.geo.bands import band_roles, role_of
from geot2e.geo.spectral import fill_from_guide, harmonic_fill

ROOT = Path(__file__).resolve().parents[1]
CROP = ROOT / "tests" / "data" / "s2_chincoteague_6band_crop.tif"
FAST = dict(tile=64, overlap=16, steps=1, guidance=0.0, progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch

    from geot2e.models import Text2Earth, save_pretrained, tiny_config

    torch.manual_seed(0)
    return str(save_pretrained(Text2Earth(tiny_config()), tmp_path_factory.mktemp("m") / "tiny"))


@pytest.fixture(scope="module")
def s2():
    return geot2e.io.open_raster(CROP).load()


@pytest.fixture(scope="module")
def mask(s2):
    m = np.zeros(s2.shape[-2:], bool)
    m[14:40, 20:50] = True
    return m


def test_sensor_names_map_to_roles(s2):
    assert band_roles(s2) == ("blue", "green", "red", "nir", "swir1", "swir2")
    assert [role_of(n) for n in ("B5", "SR_B5", "B05", "B8A", "b08", "swir16", "B8")] == [
        "nir", "nir", "rededge1", "nir08", "nir", "swir1", "pan"]


def test_every_band_filled_in_the_input_order(s2, mask, tiny):
    order = [3, 0, 5, 2, 1, 4]  # nir, blue, swir2, red, green, swir1: not the model's order
    da = s2.isel(band=order)
    da.attrs["long_name"] = tuple(s2.attrs["long_name"][i] for i in order)
    out = geot2e.remove_clouds(da, mask, model=tiny, **FAST)
    assert out.attrs["long_name"] == da.attrs["long_name"]
    assert list(out.band.values) == list(da.band.values)
    assert out.rio.crs == da.rio.crs and out.rio.transform() == da.rio.transform() and out.dtype == da.dtype
    v, o = da.values, out.values
    assert np.array_equal(v[:, ~mask], o[:, ~mask])                 # bit-identical outside, every band
    assert (v[:, mask] != o[:, mask]).mean(axis=1).min() > 0.5      # every band filled, none copied
    assert (o[:, mask] != 0).all()                                  # never the nodata value
    assert out.attrs["geot2e_band_roles"] == ["nir", "blue", "swir2", "red", "green", "swir1"]
    # the model sees the same visible bands as for an RGB raster: the same red, green, blue
    rgb = geot2e.remove_clouds(s2.isel(band=[2, 1, 0]), mask, model=tiny, **FAST)
    np.testing.assert_array_equal(out.sel(band=[3, 2, 1]).values, rgb.values)


def test_bands_argument_names_the_bands_and_wins(s2, mask, tiny):
    da = s2.copy()
    da.attrs.pop("long_name")
    da = da.assign_coords(band=[1, 2, 3, 4, 5, 6])
    with pytest.raises(BandCountError, match="bands="):
        geot2e.remove_clouds(da, mask, model=tiny, **FAST)
    out = geot2e.remove_clouds(da, mask, bands=("blue", "green", "red", "nir", "swir16", "swir22"),
                               model=tiny, **FAST)
    assert np.array_equal(out.values[:, ~mask], da.values[:, ~mask])
    assert out.attrs["geot2e_band_roles"][-2:] == ["swir1", "swir2"]


def test_dask_result_equals_numpy_result(s2, mask, tiny):
    eager = geot2e.inpaint(s2, mask, "fields", model=tiny, **FAST)
    lazy = geot2e.inpaint(s2.chunk({"x": 24, "y": 40}), mask, "fields", model=tiny, **FAST)
    assert hasattr(lazy.data, "dask")
    np.testing.assert_array_equal(lazy.values, eager.values)


def test_outpaint_fills_every_band(s2, tiny):
    out = geot2e.outpaint(s2, right=16, model=tiny, **FAST)
    assert out.sizes["x"] == s2.sizes["x"] + 16
    assert np.array_equal(out.values[:, :, :64], s2.values)
    assert (out.values[:, :, 64:] != 0).all()


@pytest.mark.parametrize("bands, err, match", [
    (("blue", "green", "red", "nir"), BandCountError, "names 4 band"),
    (("blue", "green", "red", "nir", "swir1", "foo"), BandRoleError, r"\['foo'\].*known roles"),
    (("blue", "green", "red", "nir", "nir", "swir2"), BandRoleError, "more than one band"),
    (("blue", "green", "red", "nir", "swir1", "tirs1"), BandRoleError, "drop them"),
    (("blue", "green", "nir", "swir1", "swir2", "coastal"), BandCountError, "lacks red"),
])
def test_bad_band_names_are_typed_errors(s2, mask, tiny, bands, err, match):
    with pytest.raises(err, match=match):
        geot2e.remove_clouds(s2, mask, bands=bands, model=tiny, **FAST)


def test_head_recovers_a_band_the_visible_ones_explain():
    rng = np.random.default_rng(0)
    from scipy import ndimage

    rgb = np.stack([ndimage.gaussian_filter(rng.random((64, 64)), 1.5) for _ in range(3)])
    nir = 0.8 * rgb[1] - 0.5 * rgb[0] + 0.1
    known = np.ones((64, 64), bool)
    known[20:44, 16:40] = False
    filled = fill_from_guide(np.where(known, nir, 0)[None], known, rgb)[0]
    flat = harmonic_fill(np.where(known, nir, 0)[None], known)[0]
    err_head, err_flat = np.abs(filled - nir)[~known].mean(), np.abs(flat - nir)[~known].mean()
    assert err_head < 0.2 * err_flat
    assert np.array_equal(filled[known], nir[known])


def test_cli_bands_names_every_band(s2, tiny, tmp_path):
    from geot2e.cli import main

    src = tmp_path / "plain.tif"
    plain = s2.copy()
    plain.attrs.pop("long_name")
    plain.rio.to_raster(src)  # no band descriptions: the file does not say which band is which
    mask = tmp_path / "mask.tif"
    m = s2.isel(band=0, drop=True).copy(data=np.zeros(s2.shape[-2:], np.uint8))
    m[10:30, 10:30] = 1
    m.attrs = {}
    m.rio.to_raster(mask)
    out = tmp_path / "out.tif"
    fast = ["--model", tiny, "--tile", "64", "--overlap", "16", "--steps", "1", "--guidance", "0", "--no-progress"]
    assert main(["remove-clouds", str(src), str(out), "--mask", str(mask), *fast]) == 3  # 6 bands, no names
    assert not out.exists()
    assert main(["remove-clouds", str(src), str(out), "--mask", str(mask), "--bands", "blue", "green", "red", "nir",
                 "swir1", "swir2", *fast]) == 0
    res = geot2e.io.open_raster(out)
    assert res.sizes["band"] == 6
    assert np.array_equal(res.values[:, :10], s2.values[:, :10])
    assert res.attrs["geot2e_band_roles"] == ["blue", "green", "red", "nir", "swir1", "swir2"]


def test_example_05_runs_small(tiny, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_05", ROOT / "examples" / "05_multiband_cloud_removal.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--small", "--model", tiny, "--out", str(tmp_path)]) == 0
    da = geot2e.io.open_raster(tmp_path / "multiband_cloud_removal.tif")
    assert da.sizes["band"] == 6 and da.rio.crs == "EPSG:32618"
    src = geot2e.io.open_raster(CROP)
    keep = ~da.synthesized.values
    assert np.array_equal(da.values[:, keep], src.values[:, keep])
    assert (tmp_path / "ndvi_before_after_truth.png").is_file()
    assert "NDVI mean absolute error" in capsys.readouterr().out
