"""Super-resolution's regression network (geot2e.models.sr): untrained it is bicubic
interpolation, the shipped one beats bicubic on a held-out crop it never saw (keeping the
grid exact and every input value, bright ones included), and the sr stage of `geot2e train`
trains alone and adds its network beside a model without touching the model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rioxarray
import torch
import torch.nn.functional as F
from affine import Affine

import geot2e
from geot2e.eval.metrics import psnr, robust_range, to_unit
from geot2e.eval.translation import _as_raster, _coarsen, bicubic
from geot2e.models.sr import SR_DIR, SRNet, has_sr_net, sr_net_info
from engine_helpers import train_beside_unchanged

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "geot2e" / "weights" / "default"


def test_an_untrained_network_is_bicubic_interpolation():
    lo = torch.rand(2, 3, 12, 20, generator=torch.Generator().manual_seed(0)) * 2 - 1
    net = SRNet(8, 1)
    for s in (2, 4):
        want = F.interpolate(lo, scale_factor=s, mode="bicubic", align_corners=False)
        assert torch.equal(net(lo, s), want)
    with pytest.raises(ValueError, match="knows scales"):
        net(lo, 3)


def test_a_sample_is_the_mean_plus_keyed_noise_that_never_moves_a_coarse_pixel():
    """A sample is drawn around the network's mean with pixel noise seeded by the tile's keyed
    latent noise (the same key, the same sample: chunk invariance), and back-projection keeps
    every coarse pixel whatever the noise; temperature 0 is the mean."""
    from geot2e.models.control import _coarse, super_resolve_tiles

    class Model:
        sr_net = SRNet(8, 1).eval()

    g = torch.Generator().manual_seed(1)
    lo = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    guide = lo.repeat_interleave(2, -2).repeat_interleave(2, -1)
    key = torch.randn(2, 4, 8, 8, generator=g)
    with torch.no_grad():
        mean = super_resolve_tiles(Model, guide, scale=2, temperature=0.0)
        a = super_resolve_tiles(Model, guide, scale=2, noise=key, temperature=1.0)
        b = super_resolve_tiles(Model, guide, scale=2, noise=key.clone(), temperature=1.0)
        c = super_resolve_tiles(Model, guide, scale=2, noise=key + 1, temperature=1.0)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    with torch.no_grad():                                           # the antithetic sample: the mirror image
        anti = super_resolve_tiles(Model, guide, scale=2, noise=-key, temperature=1.0)
    assert torch.allclose((a + anti) / 2, mean, atol=1e-5)
    assert float((a - mean).std()) > 0.02                          # exp(-3) = 0.05 of spread, untrained
    for x in (a, c):                                                # the noise moves no coarse pixel
        assert float((_coarse(x, 2) - _coarse(mean, 2)).abs().max()) < 1e-5
    assert float((_coarse(mean, 2) - lo).abs().mean()) < 0.01       # back-projected (white noise: slow)


def test_the_eight_fold_ensemble_turns_with_its_input():
    """Averaged over the square's eight symmetries (SR_ENSEMBLE), the expected image of a
    rotated or mirrored coarse image is the expected image turned the same way; one pass of
    an untrained-but-perturbed network is not."""
    from geot2e.models.control import _sr_predict, _symmetry

    torch.manual_seed(0)

    class Model:
        sr_net = SRNet(8, 1).eval()

    for t in Model.sr_net.tails.values():
        torch.nn.init.normal_(t.weight, std=0.05)
    lo = torch.rand(1, 3, 8, 12) * 2 - 1
    guide = lo.repeat_interleave(2, -2).repeat_interleave(2, -1)
    for k in range(8):
        for n, exact in ((8, True), (1, False)):
            with torch.no_grad():
                a = _sr_predict(Model, _symmetry(guide, k), 2, ensemble=n)[0]
                b = _symmetry(_sr_predict(Model, guide, 2, ensemble=n)[0], k)
            if exact:
                assert torch.allclose(a, b, atol=1e-5), k
            elif k:
                assert not torch.allclose(a, b, atol=1e-3), k


@pytest.fixture(scope="module")
def model():
    if not has_sr_net(DEFAULT):
        pytest.fail("the default model ships its super-resolution network (geot2e/weights/default/super_resolution)")
    return geot2e.load_model("default", device="cpu", translate=True)


@pytest.fixture(scope="module")
def crop():
    """(truth, coarse): a held-out Landsat 224/077 crop (outside 224/078: never a training
    tile) and its area average by 2 on the grid with pixels twice as large."""
    truth = rioxarray.open_rasterio(ROOT / "tests" / "data" / "landsat_224077_holdout_crop.tif").isel(
        x=slice(0, 128), y=slice(0, 128)).load()
    coarse = _coarsen(truth.values.astype(np.float64), 2).round().astype(truth.dtype)
    return truth, _as_raster(coarse, truth, 2).rio.write_nodata(truth.rio.nodata)


def test_the_default_super_resolves_a_heldout_crop_better_than_bicubic(model, crop):
    """Mean of 2 samples closer to the truth than bicubic by more than 0.5 dB; the grid is the
    input's with the pixel size halved exactly; the result area-averages back to the input;
    the input is untouched; any dask chunking gives the same pixels."""
    truth, coarse = crop
    before = coarse.copy(deep=True)
    out = geot2e.translate(coarse, "super_resolution", scale=2, model=model, samples=2, progress=False, threads=1)
    assert coarse.identical(before)
    assert out.shape == truth.shape and out.dtype == truth.dtype and out.rio.crs == truth.rio.crs
    assert out.rio.transform() == coarse.rio.transform() * Affine.scale(0.5)
    t = truth.values.astype(np.float64)
    lo, hi = robust_range(t)
    m = np.ones(t.shape[-2:], bool)

    def score(v):
        return psnr(to_unit(np.asarray(v, np.float64), lo, hi), to_unit(t, lo, hi), m)

    ours, base = score(out.values), score(bicubic(coarse.values.astype(np.float64), 2))
    assert ours > base + 0.5, (ours, base)
    back = _coarsen(out.values.astype(np.float64), 2)
    assert np.abs(back - coarse.values).mean() < 0.01 * float(np.mean(hi - lo))    # the coarse pixels kept
    kw = dict(scale=2, model=model, samples=2, progress=False, threads=1, tile=64, overlap=16)
    lazy = geot2e.translate(coarse.chunk({"x": 24, "y": 40}), "super_resolution", **kw)
    assert hasattr(lazy.data, "dask") and np.array_equal(lazy.values, geot2e.translate(coarse, "super_resolution",
                                                                                          **kw).values)


def test_bright_pixels_beyond_the_robust_range_come_back(model, crop):
    """Super-resolution scales its input by its whole range: a bright patch above the 99.5th
    percentile (a roof, sand, a glint) comes back at its value, not clipped to that percentile
    (which put it 37 % low here)."""
    _, coarse = crop
    bright = coarse.copy(deep=True)
    value = int(coarse.values.max() * 1.3)
    bright.values[:, 10:14, 10:14] = value            # 4 x 4 coarse pixels: 0.4 % of the raster
    out = geot2e.translate(bright, "super_resolution", scale=2, model=model, progress=False, threads=1)
    back = _coarsen(out.values.astype(np.float64), 2)[:, 11:13, 11:13]             # its inner 2 x 2
    assert np.abs(back - value).max() < 0.03 * value


def _sr_section(**kw):
    return {"steps": 3, "batch_size": 2, "lr": 0.001, "warmup": 1, "ema_decay": 0.9, "save_every": 2,
            "log_every": 1, "tile_sizes": [32], **kw}


def test_the_sr_stage_trains_alone_and_adds_its_network_beside_an_unchanged_model(tmp_path):
    """configs/sr.yaml's shape on a copy of the default: the stage trains without a VAE or
    denoiser stage, resumes with nothing left, and the folder gets super_resolution/ while
    every file that was there keeps its bytes."""
    from geot2e.train import run_training

    base, cfg = train_beside_unchanged(tmp_path, DEFAULT, SR_DIR, "sr", _sr_section())
    state = json.loads((tmp_path / "run" / "sr" / "state.json").read_text())
    assert state["step"] == 3 and all(np.isfinite(r["loss"]) for r in state["log"] if "loss" in r)
    assert has_sr_net(base) and sr_net_info(base)["steps"] == 3
    run_training(cfg, progress=False)                                               # resumes: nothing left
    assert json.loads((tmp_path / "run" / "sr" / "state.json").read_text())["step"] == 3
    m = geot2e.load_model(base, device="cpu", translate=True)
    assert m.sr_net is not None and m.haze_net is not None and m.controlnet is not None
