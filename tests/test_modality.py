"""Cross-modal generation: the modality registry, models that generate NIR / PAN / CIR through
the RGB VAE (a channel map), modality adapters trained by ``geot2e train`` and the public
functions with ``modality=`` on real crops (NIR of the 5 m RGBN raster, Sentinel-2's bands)."""
from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

import geot2e
from geot2e import cli
from geot2e.errors import BandCountError, CheckpointError, ParameterError
from geot2e.geo.refine import refine, refinement_of
from geot2e.models import Text2Earth, checkpoint_hash, from_pretrained, load_model, save_pretrained, tiny_config
from geot2e.models.checkpoint import available_modalities
from geot2e.models.modality import MODALITIES, Modality, get_modality, register_modality

pytestmark = pytest.mark.filterwarnings("ignore::geot2e.errors.PromptTruncatedWarning",
                                        "ignore::geot2e.errors.GSDRangeWarning")
FAST = dict(steps=2, guidance=0.0, tile=32, overlap=8, progress=False)


# ----------------------------------------------------------------------------- registry
def test_registry_names_bands_and_channels():
    assert get_modality("nir").bands == ("nir",) and get_modality("nir").channels == (0, 0, 0)
    assert get_modality("cir").bands == ("nir", "red", "green")
    assert not get_modality("rgb").adapter and get_modality("pan").folder == "modality/pan"
    with pytest.raises(ParameterError, match="unknown modality 'sar'.*register_modality"):
        get_modality("sar")


def test_a_user_registers_sar_without_touching_the_package():
    sar = Modality("sar_test", bands=("vv", "vh"), channels=(0, 1, 0), value_range=(-30.0, 5.0),
                   description="C-band backscatter, dB")
    try:
        register_modality(sar)
        assert get_modality("sar_test") is sar
        with pytest.raises(ParameterError, match="already registered"):
            register_modality(sar)
    finally:
        MODALITIES.pop("sar_test", None)
    with pytest.raises(ParameterError, match="using every band"):
        Modality("bad", bands=("vv", "vh"), channels=(0, 0, 0))
    with pytest.raises(ParameterError, match="each once"):
        Modality("bad", bands=("nir", "nir"), channels=(0, 1, 0))
    with pytest.raises(ParameterError, match="low < high"):
        Modality("bad", bands=("nir",), channels=(0, 0, 0), value_range=(1.0, 0.0))


def test_a_composite_names_registered_parts_and_their_bands():
    rgbn = get_modality("rgbn")
    assert rgbn.composite and rgbn.parts == ("rgb", "nir") and rgbn.bands == ("red", "green", "blue", "nir")
    assert not get_modality("nir").composite
    with pytest.raises(ParameterError, match="two or more registered parts"):
        Modality("bad", bands=("red",), channels=(), adapter=False, parts=("rgb",))
    with pytest.raises(ParameterError, match="two or more registered parts"):
        Modality("bad", bands=("red",), channels=(0, 0, 0), adapter=False, parts=("rgb", "nir"))
    with pytest.raises(ParameterError, match="parts' bands in order"):
        register_modality(Modality("bad", bands=("nir", "red", "green", "blue"), channels=(), adapter=False,
                                   parts=("rgb", "nir")))
    with pytest.raises(ParameterError, match="must be registered"):
        register_modality(Modality("bad", bands=("red", "green", "blue", "x"), channels=(), adapter=False,
                                   parts=("rgb", "no_such_part")))
    assert "bad" not in MODALITIES


# ----------------------------------------------------------------------------- channel map
def test_one_band_model_runs_through_a_three_channel_vae(tmp_path):
    cfg = tiny_config()
    cfg.bands, cfg.band_names, cfg.channels = 1, ["nir"], [0, 0, 0]
    torch.manual_seed(0)
    m = Text2Earth(cfg).eval()
    assert m.vae.encoder.conv_in.in_channels == 3 and m.bands == 1
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    z = m.encode_images(x)
    with torch.no_grad():
        raw = m.vae.decode(z / cfg.vae.scaling_factor).sample
        np.testing.assert_allclose(m.decode_latents(z).numpy(), raw.mean(1, keepdim=True).numpy(), atol=1e-6)
        torch.testing.assert_close(z, m.vae.encode(x.expand(-1, 3, -1, -1)).latent_dist.mean * cfg.vae.scaling_factor)
    save_pretrained(m, tmp_path / "nir_model")
    back = from_pretrained(tmp_path / "nir_model")
    assert back.config.channels == [0, 0, 0] and back.config.band_names == ["nir"]
    two = tiny_config()
    two.bands, two.band_names, two.channels = 2, ["vv", "vh"], [0, 0, 0]     # vh feeds no channel
    with pytest.raises(CheckpointError, match="using every band"):
        two.validate()


# ----------------------------------------------------------------------------- trained adapters
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, data_dir):
    """A tiny base model folder with a NIR adapter trained by `geot2e train` (modality: nir) on
    the 5 m RGBN crop's NIR band, exported into it; the same weights copied as 'pan' and 'cir'
    (the channel map comes from the registry, so the engine paths are the real ones)."""
    from geot2e.train import run_training

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("modality")
    base = root / "model"
    save_pretrained(Text2Earth(tiny_config()), base)
    cfg = {"out_dir": str(root / "run"), "base_model": str(base), "export": str(base), "modality": "nir",
           "tile": 32, "gsd_max": 40.0,
           "sources": [{"path": str(data_dir / "rgbn_5m_crop.tif"), "bands": [4]}],
           "lora": {"rank": 2, "alpha": 2},
           "denoiser": {"steps": 2, "batch_size": 2, "lr": 1e-3, "warmup": 1, "bf16": False, "save_every": 2}}
    p = root / "nir.yaml"
    p.write_text(yaml.safe_dump(cfg))
    run_training(p, progress=False)
    for name in ("pan", "cir"):
        shutil.copytree(base / "modality" / "nir", base / "modality" / name)
    return base


def test_training_exports_the_adapter_beside_the_untouched_base(model_dir):
    meta = json.loads((model_dir / "modality" / "nir" / "geot2e_lora.json").read_text())
    assert meta["kind"] == "modality" and meta["modality"] == "nir" and meta["channels"] == [0, 0, 0]
    assert meta["base_checkpoint_hash"] == checkpoint_hash(model_dir)
    data = json.loads((model_dir.parent / "run" / "data.json").read_text())
    assert data[0]["shape"][0] == 1            # the source's NIR band only
    for record in ("train_config.json", "manifest.json", "code_version.json"):
        assert (model_dir.parent / "run" / record).is_file(), record
    assert available_modalities(model_dir) == ["cir", "nir", "pan", "rgb", "rgbn"]   # rgbn: rgb + nir
    base = from_pretrained(model_dir)
    assert base.config.band_names == ["red", "green", "blue"] and base.config.channels is None


def test_load_model_merges_the_adapter_and_keeps_the_base_cached_apart(model_dir):
    nir = load_model(model_dir, device="cpu", modality="nir")
    rgb = load_model(model_dir, device="cpu")
    assert nir.config.band_names == ["nir"] and nir.bands == 1 and nir.modality == "nir"
    assert nir.model_id.endswith("+nir") and nir.checkpoint_hash.startswith(rgb.checkpoint_hash + "+")
    assert rgb.bands == 3 and rgb.config.channels is None
    assert load_model(model_dir, device="cpu", modality="rgb") is rgb
    # the adapter changed the UNet
    w = dict(nir.unet.named_parameters())["conv_in.weight"]
    assert torch.equal(w, dict(rgb.unet.named_parameters())["conv_in.weight"])   # not a LoRA target
    diff = [n for n, p in nir.unet.named_parameters() if not torch.equal(p, dict(rgb.unet.named_parameters())[n])]
    assert diff
    from geot2e.engine.tiles import ModelRef

    ref = pickle.loads(pickle.dumps(ModelRef(nir, "cpu")))
    assert ref.get().modality == "nir" and ref.get().bands == 1


@pytest.fixture(scope="module")
def nir_da(data_dir):
    from geot2e.io import open_raster

    da = open_raster(data_dir / "rgbn_5m_crop.tif").isel(band=[3], y=slice(0, 64), x=slice(0, 64))
    return da.assign_attrs(long_name=("nir",))


def test_inpaint_a_nir_band_keeps_everything_outside_the_mask(model_dir, nir_da):
    mask = np.zeros((64, 64), bool)
    mask[20:44, 16:40] = True
    before = nir_da.copy(deep=True)
    out = geot2e.inpaint(nir_da, mask, "vegetation", model=str(model_dir), modality="nir", **FAST)
    xr.testing.assert_identical(nir_da, before)                      # input untouched
    assert out.shape == nir_da.shape and out.dtype == nir_da.dtype
    np.testing.assert_array_equal(out.values[:, ~mask], nir_da.values[:, ~mask])
    assert not np.array_equal(out.values[:, mask], nir_da.values[:, mask])
    assert out.rio.crs == nir_da.rio.crs and out.rio.transform() == nir_da.rio.transform()
    assert out.attrs["geot2e_model_id"].endswith("+nir") and bool(out.synthesized.values[mask].all())
    lazy = geot2e.inpaint(nir_da.chunk({"y": 32, "x": 32}), mask, "vegetation", model=str(model_dir),
                          modality="nir", **FAST)
    np.testing.assert_array_equal(lazy.compute().values, out.values)  # chunk invariance


def test_remove_clouds_and_outpaint_take_the_modality(model_dir, nir_da):
    mask = np.zeros((64, 64), bool)
    mask[8:20, 8:20] = True
    rc = geot2e.remove_clouds(nir_da, mask, model=str(model_dir), modality="nir", progress=False, steps=2, tile=32,
                              overlap=8)
    assert rc.attrs["geot2e_model_id"].endswith("+nir")              # not the few-step student
    grown = geot2e.outpaint(nir_da, right=16, model=str(model_dir), modality="nir", **FAST)
    assert grown.shape == (1, 64, 80)
    np.testing.assert_array_equal(grown.values[:, :, :64], nir_da.values)


def test_generate_pan_on_the_exact_refinement_of_an_rgb_grid(model_dir, landsat_da):
    rgb = landsat_da.isel(y=slice(0, 32), x=slice(0, 32))
    pan = geot2e.generate("water", like=refine(rgb, 2), model=str(model_dir), modality="pan", **FAST)
    assert refinement_of(rgb, pan)[0] == 2 and pan.shape == (1, 64, 64)
    assert pan.attrs["long_name"] == ("pan",) and pan.dtype == np.float32
    assert 0.0 <= float(pan.min()) and float(pan.max()) <= 1.0        # the modality's value range


def test_generate_cir_takes_its_bands_from_a_multiband_template(model_dir, data_dir):
    from geot2e.io import open_raster

    s2 = open_raster(data_dir / "s2_chincoteague_6band_crop.tif").isel(y=slice(0, 32), x=slice(0, 32))
    out = geot2e.generate("mostly green vegetation", like=s2, model=str(model_dir), modality="cir", **FAST)
    assert out.attrs["long_name"] == ("B08", "B04", "B03") and out.dtype == s2.dtype
    assert out.rio.transform() == s2.rio.transform()


def test_generate_rgbn_is_the_rgb_model_and_the_nir_adapter_from_one_noise(model_dir, landsat_da):
    grid = dict(bounds=(500000.0, 4000000.0, 500320.0, 4000320.0), crs="EPSG:32617", gsd=10.0, seed=3)
    out = geot2e.generate("vegetation", model=str(model_dir), modality="rgbn", **grid, **FAST)
    rgb = geot2e.generate("vegetation", model=str(model_dir), **grid, **FAST)
    nir = geot2e.generate("vegetation", model=str(model_dir), modality="nir", **grid, **FAST)
    assert out.shape == (4, *rgb.shape[1:]) and out.attrs["long_name"] == ("red", "green", "blue", "nir")
    np.testing.assert_array_equal(out.values[:3], rgb.values)       # each part exactly as generated alone,
    np.testing.assert_array_equal(out.values[3:], nir.values)       # from the same keyed noise
    assert out.rio.transform() == rgb.rio.transform() and out.rio.crs == rgb.rio.crs
    assert out.attrs["geot2e_modality"] == "rgbn" and list(out.band.values) == [1, 2, 3, 4]
    assert out.attrs["geot2e_checkpoint_hash"] == f"{rgb.attrs['geot2e_checkpoint_hash']}; " \
                                                  f"{nir.attrs['geot2e_checkpoint_hash']}"   # provenance of both
    assert len(out.attrs["geot2e_radiometry"]["lo"]) == 4
    # a template in another band order, with its dtype: the result follows it band for band
    like = (out.isel(band=[3, 0, 2, 1]) * 10000).astype("uint16").assign_attrs(long_name=("nir", "red", "blue", "green"))
    like = like.rio.write_crs("EPSG:32617")
    same = geot2e.generate("vegetation", like=like, model=str(model_dir), modality="rgbn", seed=3, **FAST)
    assert same.dtype == np.uint16 and same.attrs["long_name"] == ("nir", "red", "blue", "green")
    assert list(same.band.values) == [4, 1, 3, 2]
    np.testing.assert_array_equal(same.x.values, like.x.values)
    np.testing.assert_array_equal(same.y.values, like.y.values)
    np.testing.assert_array_equal(same.values[0], geot2e.generate("vegetation", like=like.isel(band=[0]).assign_attrs(
        long_name=("nir",)), model=str(model_dir), modality="nir", seed=3, **FAST).values[0])
    with pytest.raises(BandCountError, match="makes bands red, green, blue, nir"):
        geot2e.generate("x", like=landsat_da.isel(y=slice(0, 32), x=slice(0, 32)), model=str(model_dir),
                        modality="rgbn", **FAST)


def test_a_composite_is_generated_not_loaded_or_filled(model_dir, data_dir):
    rgbn = geot2e.io.open_raster(data_dir / "rgbn_5m_crop.tif").isel(y=slice(0, 32), x=slice(0, 32))
    mask = np.zeros((32, 32), bool)
    mask[8:16, 8:16] = True
    with pytest.raises(ParameterError, match="composite of 'rgb' and 'nir'.*modality='nir'"):
        load_model(model_dir, device="cpu", modality="rgbn")
    for fn in (geot2e.inpaint, geot2e.remove_clouds):
        with pytest.raises(ParameterError, match="leave modality unset: every band is filled"):
            fn(rgbn, mask, model=str(model_dir), modality="rgbn", progress=False, steps=1, tile=32, overlap=8)
    with pytest.raises(ParameterError, match="not a loaded model"):
        geot2e.generate("x", shape=(32, 32), bounds=(0, 0, 320, 320), crs="EPSG:32617",
                        model=load_model(model_dir, device="cpu"), modality="rgbn", **FAST)


def test_modality_errors_are_typed_and_write_nothing(model_dir, landsat_da, nir_da, tmp_path, data_dir):
    mask = np.zeros((64, 64), bool)
    mask[10:20, 10:20] = True
    rgb = landsat_da.isel(y=slice(0, 64), x=slice(0, 64))
    with pytest.raises(BandCountError, match="modality 'nir' fills nir alone"):
        geot2e.inpaint(rgb, mask, model=str(model_dir), modality="nir", **FAST)
    rgbn = geot2e.io.open_raster(data_dir / "rgbn_5m_crop.tif").isel(y=slice(0, 64), x=slice(0, 64))
    with pytest.raises(BandCountError, match="fills nir alone"):                   # no spectral head from NIR
        geot2e.inpaint(rgbn, mask, model=str(model_dir), modality="nir", bands=("red", "green", "blue", "nir"), **FAST)
    with pytest.raises(ParameterError, match="few-step student is the RGB"):
        geot2e.inpaint(nir_da, mask, model=str(model_dir), modality="nir", few_step=True, **FAST)
    with pytest.raises(ParameterError, match="unknown modality"):
        geot2e.inpaint(nir_da, mask, model=str(model_dir), modality="sar", **FAST)
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare, ignore=shutil.ignore_patterns("modality"))
    with pytest.raises(CheckpointError, match="no 'nir' adapter.*configs/modality_nir.yaml"):
        geot2e.inpaint(nir_da, mask, model=str(bare), modality="nir", **FAST)
    loaded = load_model(bare, device="cpu")
    with pytest.raises(ParameterError, match="load_model"):
        geot2e.inpaint(nir_da, mask, model=loaded, modality="nir", **FAST)
    out = tmp_path / "out.tif"
    src = tmp_path / "nir.tif"
    nir_da.rio.to_raster(src)
    code = cli.main(["inpaint", str(src), str(out), "--mask", str(_mask_tif(nir_da, mask, tmp_path)),
                            "--model", str(bare), "--modality", "nir", "--steps", "1", "--tile", "32",
                            "--overlap", "8", "--no-progress"])
    assert code != 0 and not out.exists()


def _mask_tif(like, mask, tmp_path):
    p = tmp_path / "mask.tif"
    xr.DataArray(mask.astype("uint8")[None], dims=("band", "y", "x"), coords={"y": like.y, "x": like.x}) \
        .rio.write_crs(like.rio.crs).rio.write_transform(like.rio.transform()).rio.to_raster(p)
    return p


def test_cli_generates_a_modality_cog(model_dir, landsat_da, tmp_path):
    import rasterio

    like = tmp_path / "like.tif"
    landsat_da.isel(y=slice(0, 32), x=slice(0, 32)).rio.to_raster(like)
    out = tmp_path / "nir.tif"
    code = cli.main(["generate", str(out), "--prompt", "water", "--like", str(like), "--model", str(model_dir),
                            "--modality", "nir", "--steps", "1", "--tile", "32", "--overlap", "8", "--no-progress"])
    assert code == 0
    with rasterio.open(out) as f:
        assert f.count >= 1 and f.descriptions[0] == "nir"


def test_a_one_band_modality_trains_and_loads_its_own_detail_network(tmp_path, data_dir):
    """A modality config's detail: section: a one-channel pixel-detail network, trained on the
    band's VAE round trips (--stage detail alone needs no adapter run), exported beside the
    adapter; load_model(modality=...) attaches it, re-exporting the adapter keeps it."""
    from geot2e.models.detail import has_detail_net
    from geot2e.train import run_training

    torch.manual_seed(0)
    base = tmp_path / "model"
    save_pretrained(Text2Earth(tiny_config()), base)
    stage = {"steps": 2, "batch_size": 2, "lr": 1e-3, "warmup": 1, "bf16": False, "save_every": 2}
    cfg = {"out_dir": str(tmp_path / "run"), "base_model": str(base), "export": str(base), "modality": "nir",
           "tile": 32, "gsd_max": 40.0, "sources": [{"path": str(data_dir / "rgbn_5m_crop.tif"), "bands": [4]}],
           "lora": {"rank": 2, "alpha": 2}, "denoiser": stage, "detail": {**stage, "tile_sizes": [32]}}
    p = tmp_path / "nir.yaml"
    p.write_text(yaml.safe_dump(cfg))
    run_training(p, progress=False, stages=["detail"])              # the network alone: no adapter yet
    folder = base / "modality" / "nir"
    assert has_detail_net(folder) and not (folder / "adapter_model.safetensors").exists()
    assert json.loads((folder / "detail" / "geot2e_detail.json").read_text())["channels"] == 1
    assert not has_detail_net(base)                                  # the RGB model's stays as it was
    run_training(p, progress=False)                                  # the adapter; the network is finished
    assert has_detail_net(folder) and (folder / "adapter_model.safetensors").is_file()
    nir = load_model(base, device="cpu", modality="nir")
    assert nir.detail_net is not None and nir.detail_net.channels == 1
    meta = json.loads((folder / "detail" / "geot2e_detail.json").read_text())
    assert nir.detail_net.temperature == meta["temperature"] and meta["calibration"]   # calibrated with the adapter
    plain = load_model(base, device="cpu", modality="nir", detail=False)
    assert plain.detail_net is None and nir.checkpoint_hash != plain.checkpoint_hash
    grid = dict(bounds=(500000.0, 4000000.0, 500320.0, 4000320.0), crs="EPSG:32617", gsd=10.0, seed=1)
    a = geot2e.generate("vegetation", model=nir, **grid, **FAST)
    b = geot2e.generate("vegetation", model=plain, **grid, **FAST)
    assert a.shape == b.shape and a.shape[0] == 1 and not np.array_equal(a.values, b.values)
    assert load_model(base, device="cpu").detail_net is None


def test_the_text_to_image_grain_level_is_the_smallest_that_keeps_the_texture():
    from geot2e.models.detail import DETAIL_TEMPERATURE, DetailNet, calibrate_temperature, detail_temperature

    g = torch.Generator().manual_seed(0)
    real = torch.randn(8, 1, 32, 32, generator=g)
    res = calibrate_temperature(torch.zeros_like(real), real.clone(), real)   # the grain is the texture itself
    assert res["temperature"] == 0.7 and abs(res["texture"][0.7] - 0.7) < 1e-6 and res["texture"][0.6] < 0.7
    smooth = calibrate_temperature(torch.zeros_like(real), 0.5 * real, real)  # half the spread: twice the level
    assert smooth["temperature"] == 1.4
    net = DetailNet(channels=1)
    assert detail_temperature(net) == DETAIL_TEMPERATURE
    net.temperature = 1.3
    assert detail_temperature(net) == 1.3


def test_a_modality_config_needs_a_lora_section(tmp_path, data_dir):
    from geot2e.train import run_training

    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"out_dir": str(tmp_path / "run"), "modality": "nir",
                                 "sources": [{"path": str(data_dir / "rgbn_5m_crop.tif"), "bands": [4]}],
                                 "denoiser": {"steps": 1}}))
    with pytest.raises(ParameterError, match="add a 'lora:' section"):
        run_training(p, progress=False)


def test_a_new_modality_is_a_config_away(tmp_path, data_dir):
    """The path SAR would take (no SAR pixels exist here): a two-band modality defined in the training
    config, trained on two bands of a raster, then found by its name from the adapter's metadata in a
    process that never registered it. The bands are optical stand-ins: this checks the plumbing only."""
    from geot2e.train import run_training

    torch.manual_seed(0)
    base = tmp_path / "model"
    save_pretrained(Text2Earth(tiny_config()), base)
    spec = {"name": "two_band_test", "bands": ["b_one", "b_two"], "channels": [0, 1, 0], "value_range": [-25.0, 5.0]}
    cfg = {"out_dir": str(tmp_path / "run"), "base_model": str(base), "export": str(base), "modality": spec,
           "tile": 32, "gsd_max": 40.0, "sources": [{"path": str(data_dir / "rgbn_5m_crop.tif"), "bands": [3, 4]}],
           "lora": {"rank": 2, "alpha": 2},
           "denoiser": {"steps": 1, "batch_size": 2, "lr": 1e-3, "warmup": 1, "bf16": False, "save_every": 1}}
    p = tmp_path / "two.yaml"
    p.write_text(yaml.safe_dump(cfg))
    try:
        run_training(p, progress=False)
        MODALITIES.pop("two_band_test")                       # a fresh process knows only the built-in ones
        rgb = geot2e.io.open_raster(data_dir / "rgbn_5m_crop.tif").isel(y=slice(0, 32), x=slice(0, 32))
        out = geot2e.generate("", like=rgb, model=str(base), modality="two_band_test", **FAST)
        assert out.shape == (2, 32, 32) and out.attrs["long_name"] == ("b_one", "b_two")
        assert -25.0 <= float(out.min()) and float(out.max()) <= 5.0      # the modality's value range
    finally:
        MODALITIES.pop("two_band_test", None)


def test_the_default_rgbn_separates_vegetation_from_water_by_ndvi():
    """The shipped model and its nir adapter: text → red, green, blue, NIR whose NDVI says what the
    prompt says (real vegetation is positive, water negative), drawn in one layout."""
    grid = dict(bounds=(500000.0, 4000000.0, 500640.0, 4000640.0), crs="EPSG:32617", gsd=10.0, progress=False,
                threads=1)
    ndvi, layout = {}, {}
    for key, prompt in (("vegetation", "satellite image, mostly green vegetation"),
                        ("water", "satellite image, mostly water")):
        out = geot2e.generate(prompt, modality="rgbn", seed=5, **grid).values.astype(np.float64)
        red, nir = out[0], out[3]
        ndvi[key] = float(np.mean((nir - red) / np.maximum(nir + red, 1e-6)))
        from scipy import ndimage

        grad = [np.hypot(ndimage.sobel(b, 0), ndimage.sobel(b, 1)).ravel() for b in (nir, out[:3].mean(0))]
        layout[key] = float(np.corrcoef(*grad)[0, 1])
    assert ndvi["vegetation"] > 0.15 and ndvi["water"] < -0.15, ndvi
    assert layout["vegetation"] > 0.3, layout        # NIR edges where the visible edges are (real tiles: 0.58)
