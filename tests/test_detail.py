"""The pixel-detail network (geot2e.models.detail): untrained it is the identity; a fill's pixel
noise is keyed by the tile's latent noise and lies under the mask only; the shipped network
restores detail a VAE round trip of a held-out crop lost; and the detail stage of `geot2e
train` adds its network beside a model without touching the model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rioxarray
import torch
import yaml

import geot2e
from geot2e.eval.metrics import psnr, robust_range, to_unit
from geot2e.models.detail import DETAIL_DIR, DetailNet, detail_net_info, has_detail_net, predict_detail
from engine_helpers import tiny_train_config, train_beside_unchanged

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "geot2e" / "weights" / "default"


def test_an_untrained_network_is_the_identity_with_a_small_spread():
    x = torch.rand(2, 4, 13, 20, generator=torch.Generator().manual_seed(0)) * 2 - 1
    net = DetailNet(8, 1)
    mean, sigma = predict_detail(net, x)            # odd height: padded, cropped back
    assert mean.shape == x.shape and sigma.shape == (2, 3, 13, 20)
    assert torch.equal(mean, x)                      # the fourth band passes through too
    assert torch.allclose(sigma, torch.full_like(sigma, float(np.exp(-3.0))))
    with pytest.raises(ValueError, match="even"):
        net.predict(x[:, :3])


class _Model:
    """The part of Text2Earth that add_detail uses, around an untrained network."""

    def __init__(self):
        self.detail_net = DetailNet(8, 1).eval()

    add_detail = geot2e.models.text2earth.Text2Earth.add_detail


def test_a_fills_pixel_noise_is_keyed_and_lies_under_the_mask():
    """The same tile key gives the same pixels (chunk invariance), another key others; no
    pixel outside the mask changes with the noise; temperature 0 is the expected image."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    decoded = (x + 0.1 * torch.randn(2, 3, 32, 32, generator=g)).clamp(-1, 1)
    m = torch.zeros(2, 1, 32, 32)
    m[..., 8:24, 4:20] = 1
    key = torch.randn(2, 4, 8, 8, generator=g)
    model = _Model()
    with torch.no_grad():
        mean = model.add_detail(decoded, x, m, "none", key, 0.0)
        a = model.add_detail(decoded, x, m, "none", key, 1.0)
        b = model.add_detail(decoded, x, m, "none", key.clone(), 1.0)
        c = model.add_detail(decoded, x, m, "none", key + 1, 1.0)
    assert torch.equal(a, b) and not torch.equal(a, c)
    out = m.expand_as(a) < 0.5
    assert torch.equal(a[out], mean[out]) and torch.equal(c[out], mean[out])
    inside = (a - mean)[~out]
    assert 0.03 < float(inside.std()) < 0.07          # exp(-3) = 0.05 of spread, untrained


def test_the_grain_is_as_strong_as_the_ground_around_the_hole():
    """context_level: around a hole in flat ground the fill gets no grain; in grainy ground
    enough for the fill's Laplacian energy to match it; with nothing known (text-to-image)
    the fallback level."""
    from geot2e.models.detail import _laplace, context_level

    g = torch.Generator().manual_seed(2)
    m = torch.zeros(1, 1, 64, 64)
    m[..., 16:48, 16:48] = 1
    mean = torch.zeros(1, 3, 64, 64)
    grain = 0.05 * torch.randn(1, 1, 64, 64, generator=g).expand(1, 3, 64, 64)
    flat = torch.zeros(1, 3, 64, 64)
    rough = 0.08 * torch.randn(1, 1, 64, 64, generator=g).expand(1, 3, 64, 64)
    assert float(context_level(flat, m, mean, grain)) == 0.0
    level = float(context_level(rough, m, mean, grain))
    filled = rough * (1 - m) + level * grain * m
    inner = (slice(None), slice(None), slice(18, 46), slice(18, 46))
    ratio = float(_laplace(filled)[inner].std() / _laplace(rough)[inner].std())
    assert 1.4 < level < 1.8 and 0.9 < ratio < 1.1
    assert float(context_level(rough, torch.ones_like(m), mean, grain, fallback=0.6)) == pytest.approx(0.6)


@pytest.fixture(scope="module")
def model():
    if not has_detail_net(DEFAULT):
        pytest.fail("the default model ships its pixel-detail network (geot2e/weights/default/detail)")
    return geot2e.load_model("default", device="cpu")


def test_the_default_loads_its_detail_network_and_modalities_do_not(model):
    """Loaded by default and named in the provenance hash; detail=False and modality
    adapters go without it (PAN has its own), and a pickled reference (dask.distributed)
    reloads as it was."""
    import pickle

    from geot2e.engine.tiles import ModelRef
    from geot2e.models.checkpoint import checkpoint_hash

    assert model.detail_net is not None and detail_net_info(DEFAULT)["steps"] > 0
    assert model.checkpoint_hash.startswith(checkpoint_hash(DEFAULT) + "+")
    plain = geot2e.load_model("default", device="cpu", detail=False)
    assert plain.detail_net is None and plain.checkpoint_hash == checkpoint_hash(DEFAULT)
    assert geot2e.load_model("default", device="cpu", modality="nir").detail_net is None
    pan = geot2e.load_model("default", device="cpu", modality="pan")           # PAN has its own, one band
    assert pan.detail_net is not None and pan.detail_net.channels == 1 and pan.detail_net.temperature > 0
    for m, want in ((model, True), (plain, False)):
        ref = pickle.loads(pickle.dumps(ModelRef(m, "cpu")))
        assert (ref.get().detail_net is not None) is want


def test_the_shipped_network_restores_what_a_round_trip_lost_on_a_heldout_crop(model):
    """A VAE round trip of a held-out Landsat 224/077 crop (never a training tile) keeps under
    two thirds of its pixel-scale texture under a disc; the network's expected image is
    closer to the truth there than the round trip, and the default detail (grain as fine as
    the known ground around the disc) brings the texture to 0.7-1.3 of the truth's."""
    from geot2e.eval.metrics import texture_ratio
    from geot2e.train.detail import round_trip

    da = rioxarray.open_rasterio(ROOT / "tests" / "data" / "landsat_224077_holdout_crop.tif").isel(
        x=slice(0, 128), y=slice(0, 128)).load()
    t = da.values.astype(np.float64)
    lo, hi = robust_range(t)
    x = torch.from_numpy(to_unit(t, lo, hi) * 2 - 1).float()[None]
    yy, xx = np.mgrid[:128, :128]
    disc = (yy - 64) ** 2 + (xx - 64) ** 2 < 40 ** 2
    m = torch.from_numpy(disc.astype(np.float32))[None, None]
    rec = round_trip(model, x)
    key = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mean = model.add_detail(rec, x, m, "none", key, 0.0)
        sample = model.add_detail(rec, x, m, "none", key)
    unit = lambda v: (v[0].numpy().astype(np.float64) + 1) / 2          # noqa: E731
    truth = unit(x)
    assert texture_ratio(unit(rec), truth, disc) < 0.67
    assert psnr(unit(mean), truth, disc) > psnr(unit(rec), truth, disc)
    assert 0.7 < texture_ratio(unit(sample), truth, disc) < 1.3


def _section(**kw):
    return {"steps": 3, "batch_size": 2, "lr": 0.001, "warmup": 1, "ema_decay": 0.9, "save_every": 2,
            "log_every": 1, "tile_sizes": [32], **kw}


def test_the_detail_stage_adds_its_network_beside_an_unchanged_model(tmp_path):
    """configs/detail.yaml's shape on a copy of the default: the stage trains on the base's
    own VAE, resumes with nothing left, and the folder gets detail/ while every file that was
    there keeps its bytes."""
    from geot2e.train import run_training

    base, cfg = train_beside_unchanged(tmp_path, DEFAULT, DETAIL_DIR, "detail", _section())
    state = json.loads((tmp_path / "run" / "detail" / "state.json").read_text())
    assert state["step"] == 3 and all(np.isfinite(r["loss"]) for r in state["log"] if "loss" in r)
    assert has_detail_net(base) and detail_net_info(base)["steps"] == 3
    run_training(cfg, progress=False)                                               # resumes: nothing left


def test_the_detail_stage_needs_the_finished_decoder(tmp_path):
    """In a from-scratch recipe the stage reads the decoder stage's result: asked for alone
    before it, a typed error says which stage to run first."""
    from geot2e.errors import ParameterError
    from geot2e.train import run_training

    d = yaml.safe_load(tiny_train_config(tmp_path, stages=("vae", "decoder")).read_text())
    d["detail"] = _section()
    cfg = tmp_path / "scratch.yaml"
    cfg.write_text(yaml.safe_dump(d))
    run_training(cfg, progress=False, stages=["vae"])
    with pytest.raises(ParameterError, match="needs the finished decoder stage"):
        run_training(cfg, progress=False, stages=["detail"])
    assert not (tmp_path / "run" / "detail").exists()
