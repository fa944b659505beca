"""geot2e.translate: grids as geospatial facts (integer refinements, typed errors), the four
tasks on real crops with the shipped translation ControlNet, the engine's guarantees (chunk
invariance, K samples, provenance, input untouched), the CLI's COG, and the control stage of
`geot2e train` that trains and exports the ControlNet."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rioxarray  # noqa: F401
import torch
import xarray as xr
from affine import Affine

import geot2e
from geot2e.errors import BandCountError, CheckpointError, GridMismatchError, ParameterError
from geot2e.geo.refine import align_to_refinement, refine, refinement_of
from geot2e.models.control import (CONTROL_DIR, NIR_LINEAR, STRENGTH, TASKS, back_project, control_image,
                                   has_controlnet)
from geot2e.train.control import degrade
from engine_helpers import tiny_train_config

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
FAST = dict(steps=2, tile=64, overlap=16, progress=False, threads=1)


def _open(name: str) -> xr.DataArray:
    da = rioxarray.open_rasterio(DATA / name)
    return da.assign_coords(band=list(da.attrs["long_name"])) if isinstance(da.attrs.get("long_name"), tuple) else da


def _on(da: xr.DataArray, t: Affine) -> xr.DataArray:
    """``da``'s values on the grid of transform ``t`` (coordinates and transform)."""
    h, w = da.shape[-2:]
    out = da.assign_coords(x=t.c + t.a * (np.arange(w) + 0.5), y=t.f + t.e * (np.arange(h) + 0.5))
    return out.rio.write_transform(t)


@pytest.fixture(scope="module")
def rgb():
    return _open("landsat_224078_rgb_crop.tif").isel(x=slice(100, 148), y=slice(200, 248)).load()


@pytest.fixture(scope="module")
def pensacola():
    return _open("pensacola_rgb_crop.tif").load(), _open("pensacola_pan_crop.tif").load()


# ----------------------------------------------------------------------------- grids
def test_refine_divides_the_pixel_size_exactly_and_keeps_bounds_and_crs(rgb):
    fine = refine(rgb, 4)
    t, f = rgb.rio.transform(), fine.rio.transform()
    assert (f.a, f.e, f.c, f.f) == (t.a / 4, t.e / 4, t.c, t.f)
    assert fine.rio.bounds() == rgb.rio.bounds() and fine.rio.crs == rgb.rio.crs
    assert fine.shape == (3, 192, 192)
    assert np.array_equal(fine.values[:, ::4, ::4], rgb.values)      # each value replicated
    lazy = refine(rgb.chunk({"x": 16, "y": 16}), 2)
    assert hasattr(lazy.data, "dask") and np.array_equal(lazy.values, refine(rgb, 2).values)


def test_refinement_checks_ratio_offset_crs_and_overlap(pensacola):
    ms, pan = pensacola
    with pytest.raises(GridMismatchError, match="half a PAN pixel"):    # Landsat's real PAN grid
        refinement_of(ms, pan)
    aligned = align_to_refinement(pan, ms)
    s, mpart, ppart = refinement_of(ms, aligned)
    assert s == 2 and ppart.shape[-2:] == (2 * mpart.shape[-2], 2 * mpart.shape[-1])
    assert ppart.rio.bounds() == mpart.rio.bounds()
    # aligned by half a PAN pixel: the PAN's pattern is kept (correlation with the original)
    orig = pan.rio.reproject_match(aligned).values[0].astype(float)
    assert np.corrcoef(orig[4:-4, 4:-4].ravel(), aligned.values[0][4:-4, 4:-4].ravel().astype(float))[0, 1] > 0.95
    odd = _on(aligned, aligned.rio.transform() * Affine.scale(1.5))
    with pytest.raises(GridMismatchError, match="integer"):
        refinement_of(ms, odd)
    far = _on(aligned, Affine.translation(1.5e6, 0) * aligned.rio.transform())   # whole pixels away
    with pytest.raises(GridMismatchError, match="overlap"):
        refinement_of(ms, far)
    with pytest.raises(GridMismatchError, match="CRS"):
        refinement_of(ms, aligned.rio.write_crs("EPSG:32617"))


# ----------------------------------------------------------------------------- model layer
def test_back_projection_makes_the_coarse_image_the_input():
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1
    guide = coarse.repeat_interleave(4, -2).repeat_interleave(4, -1)
    x = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1                  # unrelated detail
    before = (torch.nn.functional.avg_pool2d(x, 4) - coarse).abs().mean()
    after = (torch.nn.functional.avg_pool2d(back_project(x, guide, 4), 4) - coarse).abs().mean()
    assert after < 0.1 * before


def test_training_pairs_degrade_real_tiles_as_the_inputs_look():
    da = _open("rgbn_5m_crop.tif").values[:, :64, :64].astype(np.float32)
    x = torch.from_numpy(da / 127.5 - 1)[None].repeat(2, 1, 1, 1)
    rng = np.random.default_rng(0)
    tgt, guide, aux, s = degrade("super_resolution", x, rng)
    assert s in (2, 4) and torch.allclose(torch.nn.functional.avg_pool2d(guide, s),
                                          torch.nn.functional.avg_pool2d(tgt, s), atol=1e-5)
    tgt, guide, aux, s = degrade("nir_to_rgb", x, rng)
    assert guide is None and torch.equal(aux, x[:, 3:4]) and torch.equal(tgt, x[:, :3])
    tgt, guide, aux, s = degrade("dehaze", x, rng)
    assert guide.shape == tgt.shape and guide.abs().max() <= 1 and tgt.abs().max() <= 1
    cond = control_image("pansharpen", *degrade("pansharpen", x, rng)[1:])
    assert cond.shape[1] == 9 and torch.all(cond[:, 4 + TASKS.index("pansharpen")] == 1)


# ----------------------------------------------------------------------------- the shipped model
@pytest.fixture(scope="module")
def model():
    if not has_controlnet(ROOT / "geot2e" / "weights" / "default"):
        pytest.fail("the default model ships its translation ControlNet (geot2e/weights/default/translate)")
    return geot2e.load_model("default", device="cpu", translate=True)


def test_super_resolution_grid_units_and_back_projection(model, rgb):
    before = rgb.copy(deep=True)
    out = geot2e.translate(rgb, "super_resolution", scale=2, model=model, **FAST)
    assert rgb.identical(before)                                         # input never modified
    t, f = rgb.rio.transform(), out.rio.transform()
    assert (f.a, f.e, f.c, f.f) == (t.a / 2, t.e / 2, t.c, t.f) and out.rio.crs == rgb.rio.crs
    assert out.shape == (3, 96, 96) and out.dtype == rgb.dtype and list(out.band.values) == ["red", "green", "blue"]
    assert out.attrs["geot2e_operation"] == "translate" and out.attrs["geot2e_task"] == "super_resolution"
    assert out.attrs["geot2e_scale"] == 2 and abs(out.attrs["geot2e_gsd"] - 15.0) < 0.1
    assert out.attrs["geot2e_strength"] == STRENGTH["super_resolution"]
    # the result averaged back to the input's pixels is the input (back-projection)
    back = out.values.astype(float).reshape(3, 48, 2, 48, 2).mean((2, 4))
    span = np.percentile(rgb.values, 99, axis=(1, 2)) - np.percentile(rgb.values, 1, axis=(1, 2))
    assert np.abs(back - rgb.values).mean(axis=(1, 2)).max() < 0.01 * span.min()


def test_chunked_input_gives_the_same_pixels_and_k_samples_an_uncertainty(model, rgb):
    # a sampled task (dehazing is a deterministic inversion: its K samples agree, test_haze.py)
    kw = dict(model=model, samples=2, strength=1.0, **FAST)
    eager = geot2e.translate(rgb, "super_resolution", scale=2, **kw)
    lazy = geot2e.translate(rgb.chunk({"x": 24, "y": 24}), "super_resolution", scale=2, **kw)
    assert hasattr(lazy.data, "dask")
    assert np.array_equal(eager.values, lazy.values)
    assert eager.coords["uncertainty"].shape == eager.shape and float(eager.coords["uncertainty"].max()) > 0
    assert eager.rio.transform() == lazy.rio.transform()


def test_pansharpen_on_the_real_landsat_pan_lands_on_the_pan_grid(model, pensacola):
    ms, pan = pensacola
    ms = ms.isel(x=slice(0, 40), y=slice(80, 120))
    with pytest.raises(GridMismatchError):
        geot2e.translate(ms, "pansharpen", control=pan, model=model, **FAST)
    aligned = align_to_refinement(pan, ms)
    out = geot2e.translate(ms, "pansharpen", control=aligned, model=model, **FAST)
    assert out.rio.transform() == aligned.rio.transform() and out.shape == (3, 80, 80)
    assert out.attrs["geot2e_scale"] == 2
    with pytest.raises(ParameterError, match="scale"):
        geot2e.translate(ms, "pansharpen", control=aligned, scale=4, model=model, **FAST)


def test_pansharpening_carries_the_pan_detail_and_keeps_the_ms_image(model, pensacola):
    """Detail finer than the 30 m pixels comes from the real 15 m PAN band (the model alone
    blurred it away: its fill kept 0.54 of the truth's texture), and the result averaged back
    to 30 m is the multispectral image, across tiles."""
    from geot2e.eval.translation import _coarsen, bicubic

    ms, pan = pensacola
    ms = ms.isel(x=slice(0, 40), y=slice(80, 120))
    aligned = align_to_refinement(pan, ms)
    out = geot2e.translate(ms, "pansharpen", control=aligned, model=model, **FAST)
    v = out.values.astype(np.float64)
    p = aligned.values.astype(np.float64).reshape(1, *v.shape[-2:])

    def fine(a):
        return (a - bicubic(_coarsen(a, 2), 2))[0, 8:-8, 8:-8]

    r = np.corrcoef(fine(v.mean(0, keepdims=True)).ravel(), fine(p).ravel())[0, 1]
    assert r > 0.9, r
    coarse = _coarsen(v, 2)
    err = np.abs(coarse - ms.values.astype(np.float64))[:, 4:-4, 4:-4]
    assert np.median(err) < 0.01 * float(np.ptp(ms.values)), np.median(err)


def test_hpf_baseline_keeps_the_coarse_image_and_beats_bicubic(rgb):
    """The high-pass-injection baseline: averaged back to the coarse grid it is the coarse
    image, and with a PAN that is the truth's intensity it is closer to the truth than bicubic."""
    from geot2e.eval.translation import _coarsen, bicubic, hpf

    truth = rgb.values.astype(np.float64)
    coarse = _coarsen(truth, 2)
    fused = hpf(coarse, truth.mean(0), 2)
    assert np.abs(_coarsen(fused, 2) - coarse)[:, 2:-2, 2:-2].max() < 0.02 * np.ptp(truth)

    def rmse(a):
        return float(np.sqrt(((a - truth)[:, 4:-4, 4:-4] ** 2).mean()))

    assert rmse(fused) < 0.8 * rmse(bicubic(coarse, 2))


def test_nir_linear_fit_recovers_a_known_map():
    """fit_nir_linear is least squares of each band on NIR over the tiles it draws."""
    from geot2e.train.control import fit_nir_linear

    a, b = np.array([0.3, -0.2, 0.5]), np.array([-0.4, 0.1, 0.0])

    class Tiles:
        def batch(self, rng, n, size=None):
            nir = rng.uniform(-1, 1, (n, 1, 8, 8))
            rgb = a[None, :, None, None] * nir + b[None, :, None, None] + rng.normal(0, 0.01, (n, 3, 8, 8))
            return {"image": torch.as_tensor(np.concatenate([rgb, nir], 1), dtype=torch.float32)}

    lin = fit_nir_linear(Tiles(), tiles=64)
    np.testing.assert_allclose(lin["a"], a, atol=2e-3)
    np.testing.assert_allclose(lin["b"], b, atol=2e-3)


def test_nir_to_rgb_starts_from_the_linear_map_when_the_controlnet_has_one(model):
    """With the map in its meta, nir_to_rgb starts half-way (STRENGTH) from the map's colours;
    without one (an older ControlNet) from pure noise, and provenance says which."""
    from geot2e.models.control import nir_linear

    assert nir_linear(model) is not None                                 # the shipped ControlNet has it
    nir = _open("s2_chincoteague_6band_crop.tif").load()              # its NIR band found by name
    out = geot2e.translate(nir, "nir_to_rgb", model=model, **FAST)
    assert out.attrs["geot2e_strength"] == STRENGTH["nir_to_rgb"] < 1
    meta = model.controlnet_meta
    try:
        model.controlnet_meta = {k: v for k, v in meta.items() if k != NIR_LINEAR}
        old = geot2e.translate(nir, "nir_to_rgb", model=model, **FAST)
        assert old.attrs["geot2e_strength"] == 1.0
        assert not np.array_equal(old.values, out.values)
    finally:
        model.controlnet_meta = meta


def test_nir_to_rgb_carries_the_nir_bands_detail(model, monkeypatch):
    """The result's detail finer than 4 pixels is the linear map's of the NIR band, band by
    band (the streets and field edges a NIR band shows; the model alone lost them), while the
    coarser colours stay the model's."""
    import geot2e.models.control as C
    from geot2e.eval.translation import _coarsen, bicubic

    nir = _open("s2_chincoteague_6band_crop.tif").load()               # B02 B03 B04 B08 B11 B12
    n = nir.values[3:4].astype(np.float64)

    def fine(a):
        return (a - bicubic(_coarsen(a, 4), 4))[:, 8:-8, 8:-8]

    def corr(out):
        v = out.values.astype(np.float64)
        return [np.corrcoef(fine(v[i:i + 1]).ravel(), fine(n).ravel())[0, 1] for i in range(3)]

    out = geot2e.translate(nir, "nir_to_rgb", model=model, **FAST)
    assert min(corr(out)) > 0.9, corr(out)
    monkeypatch.setattr(C, "NIR_DETAIL", 0)
    own = geot2e.translate(nir, "nir_to_rgb", model=model, **FAST)
    assert max(corr(own)) < 0.8, corr(own)
    lo = np.abs(_coarsen(out.values.astype(np.float64), 8) - _coarsen(own.values.astype(np.float64), 8))
    assert np.median(lo) < 0.05 * float(np.ptp(own.values)), np.median(lo)


def test_a_model_reference_reloads_the_controlnet_on_a_worker(model):
    import pickle

    from geot2e.engine.tiles import ModelRef

    ref = pickle.loads(pickle.dumps(ModelRef(model, "cpu")))      # what a dask.distributed worker gets
    assert ref.translate and ref._model is None
    assert ref.get().controlnet is not None


def test_nir_to_rgb_picks_the_nir_band_by_its_name(model):
    s2 = _open("s2_chincoteague_6band_crop.tif").load()                # B02 B03 B04 B08 B11 B12
    out = geot2e.translate(s2, "nir_to_rgb", model=model, **FAST)
    assert out.shape == (3, 64, 64) and out.rio.transform() == s2.rio.transform()
    with pytest.raises(BandCountError, match="nir"):
        geot2e.translate(s2.isel(band=[0, 1]), "nir_to_rgb", model=model, **FAST)


def test_bad_requests_are_typed_errors(model, rgb, tmp_path):
    with pytest.raises(ParameterError, match="unknown translation task"):
        geot2e.translate(rgb, "colorize", model=model)
    with pytest.raises(ParameterError, match="scale"):
        geot2e.translate(rgb, "super_resolution", model=model)
    with pytest.raises(ParameterError, match="scale"):
        geot2e.translate(rgb, "super_resolution", scale=3, model=model)
    with pytest.raises(ParameterError, match="control"):
        geot2e.translate(rgb, "dehaze", control=rgb, model=model)
    with pytest.raises(ParameterError, match="PAN"):
        geot2e.translate(rgb, "pansharpen", model=model)
    with pytest.raises(ParameterError, match="strength"):
        geot2e.translate(rgb, "dehaze", strength=0, model=model)
    plain = geot2e.load_model("default", device="cpu")
    with pytest.raises(ParameterError, match="ControlNet"):
        geot2e.translate(rgb, "dehaze", model=plain, **FAST)
    bare = tmp_path / "bare"
    import shutil

    shutil.copytree(ROOT / "geot2e" / "weights" / "default", bare, ignore=shutil.ignore_patterns(CONTROL_DIR))
    with pytest.raises(CheckpointError, match="control stage"):
        geot2e.translate(rgb, "dehaze", model=str(bare), **FAST)


def test_accessor_and_cli_write_a_valid_cog(model, rgb, tmp_path, capsys):
    via = rgb.t2e.translate("super_resolution", scale=2, model=model, **FAST)
    assert via.shape == (3, 96, 96)
    src = tmp_path / "in.tif"
    rgb.rio.to_raster(src)
    out = tmp_path / "sr.tif"
    from geot2e.cli import main

    rc = main(["translate", "super_resolution", str(src), str(out), "--scale", "2", "--steps", "2", "--tile", "64",
               "--overlap", "16", "--no-progress", "--threads", "1"])
    assert rc == 0 and "GSD 15" in capsys.readouterr().out
    from rio_cogeo.cogeo import cog_validate

    valid, errors, _ = cog_validate(out, quiet=True)
    assert valid, errors
    got = geot2e.io.open_raster(out)
    assert got.rio.transform() == via.rio.transform() and got.rio.crs == rgb.rio.crs
    prov = geot2e.io.read_provenance(out)
    assert prov["geot2e_operation"] == "translate" and prov["geot2e_task"] == "super_resolution"
    assert main(["translate", "super_resolution", str(src), str(tmp_path / "x.tif")]) != 0   # no --scale
    assert not (tmp_path / "x.tif").exists()


# ----------------------------------------------------------------------------- the training stage
def _config(tmp_path: Path) -> Path:
    return tiny_train_config(tmp_path, stages=("vae", "denoiser", "decoder"),
                             control={"steps": 3, "batch_size": 4, "lr": 0.001, "warmup": 1, "ema_decay": 0.9,
                                      "save_every": 2, "log_every": 1, "tile_sizes": [32]})


def test_control_stage_trains_and_exports_a_controlnet_beside_the_model(tmp_path):
    from geot2e.models.checkpoint import checkpoint_hash
    from geot2e.models.control import controlnet_info
    from geot2e.train import run_training

    cfg = _config(tmp_path)
    run_training(cfg, progress=False)
    state = json.loads((tmp_path / "run" / "control" / "state.json").read_text())
    assert state["step"] == 3 and all(np.isfinite(r["loss"]) for r in state["log"] if "loss" in r)
    for folder in (tmp_path / "exported", tmp_path / "run" / "final"):
        assert has_controlnet(folder)
        info = controlnet_info(folder)
        assert set(info["tasks"]) == set(TASKS)                       # the RGBN crop gives nir_to_rgb its tiles
        assert info["base_checkpoint_hash"] == checkpoint_hash(folder)
        lin = info[NIR_LINEAR]                                        # where nir_to_rgb starts: fitted, finite
        assert len(lin["a"]) == len(lin["b"]) == 3 and np.isfinite(lin["a"] + lin["b"]).all()
    m = geot2e.load_model(tmp_path / "exported", device="cpu", translate=True)
    assert m.controlnet is not None and m.controlnet_meta[NIR_LINEAR] == lin
    trained = dict(m.controlnet.named_parameters())
    zero = [k for k in trained if k.startswith("controlnet_down_blocks") and k.endswith("weight")]
    assert any(trained[k].abs().max() > 0 for k in zero)               # the zero convolutions moved
    # the denoiser is unchanged by the control stage (frozen)
    from geot2e.models import from_pretrained

    den = from_pretrained(tmp_path / "run" / "denoiser" / "model")
    for k, v in den.unet.state_dict().items():
        assert torch.equal(v, m.unet.state_dict()[k].float()) or torch.allclose(v.half().float(),
                                                                                m.unet.state_dict()[k].float()), k
    # a rerun resumes: nothing left to train, same export
    run_training(cfg, progress=False)
    assert json.loads((tmp_path / "run" / "control" / "state.json").read_text())["step"] == 3


def test_control_stage_continues_the_base_models_controlnet(tmp_path):
    """With base_model and no denoiser section, the control stage trains on the base model's
    denoiser and continues its ControlNet (a new objective's base keeps the trained
    conditioning path): at lr 0 the ControlNet comes out as it went in, and its record says
    what it continued. Without a denoiser or a base model there is nothing to train on."""
    import yaml

    from geot2e.errors import ParameterError
    from geot2e.models import from_pretrained
    from geot2e.models.control import controlnet_info
    from geot2e.train import run_training

    run_training(_config(tmp_path / "a"), progress=False)
    base = tmp_path / "a" / "exported"
    d = yaml.safe_load(_config(tmp_path / "b").read_text())
    for st in ("vae", "denoiser", "decoder"):
        d.pop(st, None)
    d["control"].update(lr=0.0, steps=2)
    cfg = tmp_path / "b" / "continue.yaml"
    cfg.write_text(yaml.safe_dump({**d, "base_model": str(base)}))
    run_training(cfg, progress=False)
    out = tmp_path / "b" / "exported"
    info = controlnet_info(out)
    assert info["continued_from"]["steps"] == controlnet_info(base)["steps"] == 3
    a = geot2e.load_model(base, device="cpu", translate=True).controlnet.state_dict()
    b = geot2e.load_model(out, device="cpu", translate=True).controlnet.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    den_a, den_b = from_pretrained(base).unet.state_dict(), from_pretrained(out).unet.state_dict()
    assert all(torch.equal(den_a[k], den_b[k]) for k in den_a)           # the base's denoiser, frozen

    cfg.write_text(yaml.safe_dump(d))                                    # no denoiser, no base model
    with pytest.raises(ParameterError, match="base_model"):
        run_training(cfg, progress=False)


def test_the_public_tasks_are_the_controlnets_tasks():
    """One task list for users (geot2e.sampling, read by the CLI without xarray) and the
    ControlNet's one-hot order: the same set."""
    from geot2e.sampling import TRANSLATION_TASKS
    from geot2e.translation import TASKS as PUBLIC_TASKS

    assert PUBLIC_TASKS == TRANSLATION_TASKS and set(TASKS) == set(TRANSLATION_TASKS)


def test_edge_padded_sampling_hands_the_model_a_reflected_margin_and_crops_it():
    """NIR → RGB samples with EDGE_PAD columns of reflected input left of each tile (the
    denoiser darkens a window's first columns from its half-way start) and returns exactly the
    tile: every spatial input (known, mask, control, init, noise on the latent grid) grows by
    the same mirrored margin, and the result is cut back to the tile."""
    from geot2e.models.control import EDGE_PAD, _sample_padded

    seen = {}

    class Fake:
        vae_factor = 4

        def inpaint(self, known, mask, **kw):
            seen.update(known=known, mask=mask, **kw)
            return kw["init"] * 2

    pad = EDGE_PAD["nir_to_rgb"]
    assert pad % 16 == 0
    g = torch.Generator().manual_seed(0)
    known, init = torch.rand(2, 3, 32, 48, generator=g), torch.rand(2, 3, 32, 48, generator=g)
    noise = torch.randn(2, 4, 8, 12, generator=g)
    out = _sample_padded(Fake(), pad, known, torch.ones(2, 1, 32, 48), control=torch.rand(2, 9, 32, 48),
                         init=init, noise=noise, strength=0.5)
    assert torch.equal(out, init * 2)
    assert seen["known"].shape[-1] == seen["mask"].shape[-1] == seen["control"].shape[-1] == 48 + pad
    assert seen["noise"].shape[-1] == 12 + pad // 4 and torch.equal(seen["noise"][..., pad // 4:], noise)
    assert torch.equal(seen["init"][..., :pad].flip(-1), init[..., 1:pad + 1])          # mirrored, not zeros
    assert _sample_padded(Fake(), pad, known[..., :16], torch.ones(2, 1, 32, 16), init=init[..., :16]).shape[-1] == 16
