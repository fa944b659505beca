"""Cloud removal's learned colour anchor (geot2e.models.anchor): untrained it is the membrane
(harmonic) fill exactly and keeps the known pixels; it is affine in the data (a sensor's
scale does not matter); the shipped network is closer to held-out ground than the membrane
fill; cloud-removal fills take their low frequencies from it; and the anchor stage of
`geot2e train` adds its network beside a model without touching the model."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import rioxarray
import torch

import geot2e
from geot2e.eval.cloud_removal import cloud_mask_for
from geot2e.eval.metrics import masked_metrics, robust_range
from geot2e.geo.spectral import harmonic_fill
from geot2e.models.anchor import ANCHOR_DIR, AnchorNet, anchor_net_info, has_anchor_net
from geot2e.models.fill import LOWPASS_SIGMA, gauss_blur, anchor_lowpass, membrane_fill
from engine_helpers import tiny_train_config, train_beside_unchanged

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "geot2e" / "weights" / "default"


def _blobs(seed: int, b: int, h: int, w: int) -> torch.Tensor:
    from geot2e.train.masks import cloud_blobs

    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([cloud_blobs(rng, h, w, coverage=0.4) for _ in range(b)])[:, None]
                            .astype(np.float32))


def test_the_membrane_fill_solves_laplaces_equation():
    """Conjugate gradients reach scipy's direct solve of the same equation (Neumann edges)."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(2, 3, 48, 40)).astype(np.float32))
    m = _blobs(1, 2, 48, 40)
    got = membrane_fill(x, 1 - m, iters=300).numpy()
    for i in range(2):
        want = harmonic_fill(x[i].numpy(), m[i, 0].numpy() < 0.5)
        assert np.abs(got[i] - want).max() < 1e-3
    assert torch.equal(membrane_fill(x, 1 - m)[(1 - m).expand_as(x) > 0], x[(1 - m).expand_as(x) > 0])
    assert torch.equal(membrane_fill(x, torch.zeros_like(m)), torch.zeros_like(x))    # nothing known: 0


def test_an_untrained_network_is_the_membrane_fill_and_keeps_known_pixels():
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.normal(size=(2, 3, 37, 50)).astype(np.float32))   # sizes no multiple of 16
    m = _blobs(3, 2, 37, 50)
    with torch.no_grad():
        out = AnchorNet()(x, 1 - m)
    assert out.shape == x.shape
    known = (1 - m).expand_as(x) > 0
    assert torch.equal(out[known], x[known])
    assert torch.allclose(out, membrane_fill(x, 1 - m), atol=1e-4)


def test_the_network_is_affine_in_the_data():
    """A sensor's digital numbers or reflectances, or the model's [-1, 1] scale: the same fill."""
    torch.manual_seed(0)
    net = AnchorNet(widths=(8, 8, 8, 8)).eval()
    torch.nn.init.normal_(net.out.weight, std=0.1)          # a network that does change the fill
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    m = _blobs(4, 1, 32, 32)
    with torch.no_grad():
        a = net(x, 1 - m)
        b = net(x * 1000 + 5000, 1 - m)
    assert not torch.allclose(a, membrane_fill(x, 1 - m), atol=1e-3)
    assert torch.allclose((b - 5000) / 1000, a, atol=1e-4)


def test_lowpass_anchoring_takes_the_given_expected_image():
    """``anchor_lowpass(smooth=S)``: the fill's low frequencies become S's, its fine detail stays,
    known pixels keep the decoded values, and a fully masked tile is left as decoded."""
    g = torch.Generator().manual_seed(5)
    target = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    m = torch.zeros(2, 1, 64, 64)
    m[..., 16:48, 16:48] = 1
    m[1] = 1                                                      # text-to-image: nothing to anchor on
    fine = 0.2 * torch.randn(2, 3, 64, 64, generator=g)
    decoded = 0.5 + fine
    smooth = torch.full_like(target, -0.3)
    out = anchor_lowpass(decoded, target, m, smooth=smooth)
    inner = (slice(None), slice(None), slice(26, 38), slice(26, 38))
    assert abs(float(gauss_blur(out[:1], LOWPASS_SIGMA)[inner].mean()) + 0.3) < 0.02
    assert torch.allclose((out - gauss_blur(out, LOWPASS_SIGMA))[:1][inner], (fine - gauss_blur(fine, LOWPASS_SIGMA))[:1][inner],
                          atol=0.05)
    assert torch.equal(out[:1][(m[:1] == 0).expand(1, 3, 64, 64)], decoded[:1][(m[:1] == 0).expand(1, 3, 64, 64)])
    assert torch.equal(out[1], decoded[1])


@pytest.fixture(scope="module")
def model():
    if not has_anchor_net(DEFAULT):
        pytest.fail("the default model ships its anchor network (geot2e/weights/default/anchor)")
    return geot2e.load_model("default", device="cpu")


def test_the_default_loads_its_anchor_network_and_names_it(model):
    assert model.anchor_net is not None and not model.anchor_net.training
    plain = geot2e.load_model("default", device="cpu", anchor=False)
    assert plain.anchor_net is None and plain.checkpoint_hash != model.checkpoint_hash
    assert model.checkpoint_hash.startswith(plain.checkpoint_hash) and "+a" in model.checkpoint_hash
    from geot2e.engine.tiles import ModelRef

    for m in (model, plain):                    # a dask worker loads the same choice
        ref = pickle.loads(pickle.dumps(ModelRef(m, "cpu")))
        assert (ref.get().anchor_net is None) == (m.anchor_net is None)
    assert geot2e.load_model("default", device="cpu", modality="nir").anchor_net is None   # an RGB network


def test_the_shipped_network_is_closer_to_heldout_ground_than_the_membrane_fill(model):
    """On crops of held-out Landsat 224/077 (never a training tile) under the evaluation's
    cloud masks, the network's expected image beats the harmonic fill, the strongest classical
    fill of the protocol, in PSNR over the masked pixels (summed over the crops)."""
    scene = rioxarray.open_rasterio(ROOT / "tests" / "data" / "landsat_224077_holdout_crop.tif").load()
    v = scene.values.astype(np.float64)
    gains = []
    for i, (y, x) in enumerate([(0, 0), (0, 128), (128, 0), (128, 128)]):
        crop = v[:, y:y + 128, x:x + 128]
        if crop.shape[-2:] != (128, 128):
            continue
        mask = cloud_mask_for(i, 128, 128)
        lo, hi = robust_range(crop)
        with torch.no_grad():
            net = model.anchor_net(torch.from_numpy(crop[None].astype(np.float32)),
                                   torch.from_numpy((~mask)[None, None].astype(np.float32)))[0].double().numpy()
        ours = masked_metrics(net, crop, mask, lo=lo, hi=hi)["psnr"]
        harm = masked_metrics(harmonic_fill(crop, ~mask), crop, mask, lo=lo, hi=hi)["psnr"]
        gains.append(ours - harm)
    assert len(gains) >= 2
    assert np.mean(gains) > 0.05, gains


def test_remove_clouds_anchors_on_the_network(model):
    """remove_clouds' mean of K is, at coarse scales, the network's expected image: closer to it
    than to the membrane fill where the two differ; outside the mask nothing changes."""
    scene = rioxarray.open_rasterio(ROOT / "tests" / "data" / "landsat_224077_holdout_crop.tif").load()
    da = scene.isel(x=slice(0, 128), y=slice(0, 128))
    mask = cloud_mask_for(0, 128, 128)
    before = da.copy(deep=True)
    out = geot2e.remove_clouds(da, mask, model=model, samples=2, seed=0, progress=False, threads=1)
    plain = geot2e.remove_clouds(da, mask, model=geot2e.load_model("default", device="cpu", anchor=False),
                                 samples=2, seed=0, progress=False, threads=1)
    assert da.identical(before)
    assert np.array_equal(out.values[:, ~mask], da.values[:, ~mask])
    v = da.values.astype(np.float32)
    with torch.no_grad():
        s = model.anchor_net(torch.from_numpy(v[None]), torch.from_numpy((~mask)[None, None].astype(np.float32)))
    s = s[0].numpy()
    h = harmonic_fill(v, ~mask)

    def low(a):
        return gauss_blur(torch.from_numpy(np.asarray(a, np.float32))[None], 4.0)[0].numpy()[:, mask]

    assert np.abs(low(s) - low(h)).mean() > 1.0                     # the two anchors differ there
    d_net = np.abs(low(out.values) - low(s)).mean()
    d_plain = np.abs(low(plain.values) - low(s)).mean()
    assert d_net < d_plain, (d_net, d_plain)


def _anchor_section(**kw):
    return {"steps": 3, "batch_size": 2, "lr": 0.001, "warmup": 1, "ema_decay": 0.9, "save_every": 2,
            "log_every": 1, "tile_sizes": [32], **kw}


def test_the_anchor_stage_trains_alone_and_resumes(tmp_path):
    from geot2e.train import run_training

    cfg = tiny_train_config(tmp_path, anchor=_anchor_section())
    run_training(cfg, progress=False, stages=["anchor"])
    run = tmp_path / "run"
    state = json.loads((run / "anchor" / "state.json").read_text())
    assert state["step"] == 3 and all(np.isfinite(r["loss"]) for r in state["log"] if "loss" in r)
    assert json.loads((run / "anchor" / "net" / "geot2e_anchor.json").read_text())["steps"] == 3
    assert not (run / "vae").exists() and not (tmp_path / "exported").exists()
    run_training(cfg, progress=False, stages=["anchor"])
    assert json.loads((run / "anchor" / "state.json").read_text())["step"] == 3


def test_the_anchor_stage_adds_its_network_beside_an_unchanged_model(tmp_path):
    base, _ = train_beside_unchanged(tmp_path, DEFAULT, ANCHOR_DIR, "anchor", _anchor_section(steps=2))
    assert has_anchor_net(base) and anchor_net_info(base)["steps"] == 2
    assert geot2e.load_model(base, device="cpu").anchor_net is not None
