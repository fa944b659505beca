"""Parts of the model: resolution embedding (ρ, learned ρ∅), smooth fill of masked pixels,
OpenCLIP text towers named by architecture with a local safetensors file."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from geot2e.errors import CheckpointError
from geot2e.errors import ParameterError
from geot2e.models import ResolutionEmbedding, anchor_lowpass, harmonize, smooth_fill
from geot2e.models.fill import harmonize_mode
from geot2e.models.config import TextConfig
from geot2e.models.text import TextEncoder


# ------------------------------------------------------------------ resolution embedding
def test_resolution_last_layer_zero_initialised_and_range_normalised():
    r = ResolutionEmbedding(64)
    assert torch.count_nonzero(r.mlp[2].weight) == 0 and torch.count_nonzero(r.mlp[2].bias) == 0
    assert torch.count_nonzero(r(torch.tensor([0.3, 30.0, 1000.0]))) == 0  # starts as "no effect"
    u = r.normalise(torch.tensor([0.3, 1000.0, float(np.sqrt(0.3 * 1000.0))]))
    torch.testing.assert_close(u, torch.tensor([-1.0, 1.0, 0.0]), atol=1e-6, rtol=0)


def test_null_resolution_is_a_learned_vector_not_a_sentinel_gsd():
    torch.manual_seed(0)
    r = ResolutionEmbedding(32)
    assert any(p is r.null for p in r.parameters()) and r.null.requires_grad
    with torch.no_grad():
        torch.nn.init.normal_(r.mlp[2].weight)
        torch.nn.init.normal_(r.null)
    nan = torch.tensor([float("nan")])
    torch.testing.assert_close(r(nan)[0], r.null.detach(), atol=0, rtol=0)
    # dropping a known GSD (DCA in training) gives the same vector
    torch.testing.assert_close(r(torch.tensor([30.0]), drop=torch.tensor([True]))[0], r.null.detach(), atol=0, rtol=0)
    # ρ∅ does not come out of the MLP: changing the MLP leaves it, changing ρ∅ moves it
    with torch.no_grad():
        r.mlp[0].weight.add_(1.0)
    torch.testing.assert_close(r(nan)[0], r.null.detach(), atol=0, rtol=0)
    # no GSD, however extreme, lands on ρ∅
    sweep = r(torch.logspace(-3, 7, 200))
    assert ((sweep - r.null.detach()).abs().amax(1) > 1e-3).all()
    # ρ∅ gets gradients when GSDs are dropped
    r.zero_grad()
    r(torch.tensor([float("nan"), 5.0])).sum().backward()
    assert r.null.grad is not None and r.null.grad.abs().sum() > 0


def test_gsd_arguments_to_tensor():
    t = ResolutionEmbedding.as_tensor([0.5, None, 30], 3)
    assert t[0] == 0.5 and torch.isnan(t[1]) and t[2] == 30
    assert torch.isnan(ResolutionEmbedding.as_tensor(None, 2)).all()
    assert ResolutionEmbedding.as_tensor(10.0, 4).tolist() == [10.0] * 4


# ------------------------------------------------------------------ smooth fill
@pytest.fixture(scope="module")
def crop(landsat_da):
    a = landsat_da.values[:, 200:264, 200:264].astype("float32")
    lo, hi = (float(v) for v in np.percentile(a, [1, 99]))
    return torch.from_numpy((np.clip((a - lo) / (hi - lo), 0, 1) * 2 - 1).astype("float32"))[None]


def test_smooth_fill_keeps_known_pixels_and_stays_in_range(crop):
    g = torch.Generator().manual_seed(0)
    known = torch.ones(1, 1, 64, 64)
    known[..., 10:40, 20:50] = 0
    known[torch.rand(1, 1, 64, 64, generator=g) < 0.2] = 0  # plus scattered holes
    x = crop.clone()
    x[(known == 0).expand_as(x)] = float("nan")  # values under the mask are never read
    out = smooth_fill(x, known)
    k = (known == 1).expand_as(x)
    assert torch.equal(out[k], crop[k])
    x[(known == 0).expand_as(x)] = 1e6
    assert torch.equal(smooth_fill(x, known), out)
    for c in range(3):
        kc = crop[0, c][known[0, 0] == 1]
        fc = out[0, c][known[0, 0] == 0]
        assert fc.min() >= kc.min() - 1e-5 and fc.max() <= kc.max() + 1e-5
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("holes", [[(20, 30, 24, 40)], [(0, 6, 50, 64), (40, 52, 0, 9)]])
def test_smooth_fill_relaxes_only_around_the_holes_with_the_same_values(crop, holes):
    """The Laplace sweeps run on the box of the unknown pixels plus a one-pixel ring (known
    pixels never change): bit for bit what sweeps over the whole window give, holes at the
    window's edge included, at the holes' cost."""
    import torch.nn.functional as F

    known = torch.ones(2, 1, 64, 64)
    for y0, y1, x0, x1 in holes:
        known[0, :, y0:y1, x0:x1] = 0
    known[1, :, 30:33, 30:33] = 0.5                       # a second sample, soft weights
    x = crop.repeat(2, 1, 1, 1)
    out = smooth_fill(x, known, relax_iters=50)
    ref = smooth_fill(x, known, relax_iters=0)            # the pyramid fill, then sweeps everywhere
    hard = (known >= 1).float()
    soft, fixed = 1 - hard, hard * x
    for _ in range(50):
        p = F.pad(ref, (1, 1, 1, 1), mode="replicate")
        ref = torch.addcmul(fixed, soft, (p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]) * 0.25)
    assert torch.equal(out, ref)
    assert not torch.equal(out, smooth_fill(x, known, relax_iters=0))   # the sweeps did run


def test_smooth_fill_all_masked_is_zero_not_nan(crop):
    x = crop.clone().repeat(2, 1, 1, 1)
    known = torch.ones(2, 1, 64, 64)
    known[0] = 0  # first sample: nothing known
    x[0] = float("nan")
    out = smooth_fill(x, known)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    assert torch.equal(out[1], crop[0])


def test_harmonize_leaves_known_pixels_alone(crop):
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 16:48] = 1
    decoded = crop + 0.3  # a colour offset the fill should lose
    out = harmonize(decoded, crop, mask)
    assert torch.equal(out[(mask == 0).expand_as(out)], decoded[(mask == 0).expand_as(out)])
    inner = (out - crop)[..., 24:40, 24:40]
    assert inner.abs().mean() < 0.05  # the offset is carried away inside the mask


def _blob_mask():
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 12:52, 12:52] = 1
    return mask


def _interior_drift():
    """A colour drift that is 0 on the mask's border and +0.4 in its middle (what the
    model did under guidance): invisible to the boundary ring."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    return 0.4 * torch.exp(-((yy - 31.5) ** 2 + (xx - 31.5) ** 2) / (2 * 7.0 ** 2))


@pytest.mark.parametrize("anchor", ["blend", "harmonic", "telea"])
def test_lowpass_anchor_removes_an_interior_colour_drift_that_boundary_mode_keeps(crop, anchor):
    mask = _blob_mask()
    decoded = crop + _interior_drift()
    inner = (slice(None), slice(None), slice(24, 40), slice(24, 40))
    drift = _interior_drift()[24:40, 24:40].mean()
    # what each mode leaves of the drift (both are linear in the decoded image)
    left_boundary = (harmonize(decoded, crop, mask) - harmonize(crop, crop, mask))[inner].mean()
    anchored = anchor_lowpass(decoded, crop, mask, anchor=anchor)
    left_lowpass = (anchored - anchor_lowpass(crop, crop, mask, anchor=anchor))[inner].mean()
    assert left_boundary > 0.9 * drift                      # the drift survives the ring correction
    assert abs(float(left_lowpass)) < 0.35 * drift          # most of it is gone (scales > σ)
    # known pixels untouched
    k = (mask == 0).expand_as(anchored)
    assert torch.equal(anchored[k], decoded[k])


def test_lowpass_anchor_keeps_the_generated_detail(crop):
    mask = _blob_mask()
    g = torch.Generator().manual_seed(1)
    detail = 0.2 * torch.sign(torch.randn(1, 3, 64, 64, generator=g))  # pixel-scale texture
    decoded = smooth_fill(crop, 1 - mask, relax_iters=200) + 0.3 + detail   # off-colour, textured
    lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
    inner = (slice(None), slice(None), slice(20, 44), slice(20, 44))
    tex = lambda a: torch.nn.functional.conv2d(a, lap, groups=3)[inner].std()  # noqa: E731
    out = anchor_lowpass(decoded, crop, mask, anchor="harmonic")   # the offset is relative to that anchor
    assert tex(anchor_lowpass(decoded, crop, mask)) > 0.9 * tex(decoded)   # the default (blend) keeps it too
    assert tex(out) > 0.9 * tex(decoded)                   # texture kept
    assert abs(float((out - decoded)[inner].mean()) + 0.3) < 0.05  # the colour offset is gone


def test_lowpass_anchor_is_linear_and_leaves_text_to_image_alone(crop):
    mask = _blob_mask().repeat(2, 1, 1, 1)
    mask[1] = 1                                              # second sample: nothing known
    x = crop.repeat(2, 1, 1, 1)
    g = torch.Generator().manual_seed(2)
    a, b = (torch.rand(2, 3, 64, 64, generator=g) * 2 - 1 for _ in range(2))
    torch.testing.assert_close(anchor_lowpass((a + b) / 2, x, mask),
                               (anchor_lowpass(a, x, mask) + anchor_lowpass(b, x, mask)) / 2, atol=1e-5, rtol=0)
    assert torch.equal(anchor_lowpass(a, x, mask)[1], a[1])


def test_lowpass_anchor_interpolates_each_window_once_for_k_samples(crop, monkeypatch):
    import geot2e.models.fill as fill

    mask = _blob_mask().repeat(4, 1, 1, 1)
    mask[3, :, :8] = 1                                       # the 4th row: another mask
    x = crop.repeat(4, 1, 1, 1)
    x[1][mask[1].expand(3, -1, -1) > 0] = float("nan")      # values under the mask are never read
    g = torch.Generator().manual_seed(3)
    dec = torch.rand(4, 3, 64, 64, generator=g) * 2 - 1
    per_row = torch.cat([anchor_lowpass(dec[i:i + 1], x[i:i + 1], mask[i:i + 1]) for i in range(4)])
    sizes = []
    real = fill.membrane_fill
    monkeypatch.setattr(fill, "membrane_fill", lambda t, k: sizes.append(t.shape[0]) or real(t, k))
    out = anchor_lowpass(dec, x, mask)
    assert sizes == [2]                                      # rows 0-2 share one interpolation
    torch.testing.assert_close(out, per_row, atol=1e-6, rtol=0)   # as one row at a time


def test_the_membrane_fill_solves_laplaces_equation():
    """Conjugate gradients reach scipy's direct solve of the same equation (Neumann edges; the
    protocol's harmonic baseline) where the Jacobi sweeps of smooth_fill are far from it, keep
    the known pixels, and fill a batch as they fill its rows one by one."""
    import numpy as np

    from geot2e.geo.spectral import harmonic_fill
    from geot2e.models.fill import membrane_fill, smooth_fill
    from geot2e.train.masks import cloud_blobs

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:80]
    x = torch.from_numpy(np.stack([np.sin(xx / 7.0 + c) + np.cos(yy / 11.0) + 0.1 * rng.normal(size=(96, 80))
                                   for c in range(3)])[None].repeat(3, 0).astype(np.float32))
    m = torch.from_numpy(np.stack([cloud_blobs(rng, 96, 80, coverage=0.45) for _ in range(3)])[:, None]
                         .astype(np.float32))
    got = membrane_fill(x, 1 - m)
    want = np.stack([harmonic_fill(x[i].numpy(), m[i, 0].numpy() < 0.5) for i in range(3)])
    rms = lambda a: float(np.sqrt(((np.asarray(a) - want) ** 2).sum() / (3 * float(m.sum()))))  # noqa: E731
    assert rms(got) < 1e-3 < 0.05 < rms(smooth_fill(x, 1 - m, relax_iters=200))
    known = (1 - m).expand_as(x) > 0
    assert torch.equal(got[known], x[known])
    one = torch.cat([membrane_fill(x[i:i + 1], 1 - m[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(got, one, atol=1e-5, rtol=0)
    assert torch.equal(membrane_fill(x, torch.zeros_like(m)), torch.zeros_like(x))   # nothing known: 0


def test_telea_fill_fills_from_the_known_pixels_only(crop):
    from geot2e.models.fill import telea_fill

    mask = _blob_mask()
    x = crop.clone()
    x[(mask > 0).expand_as(x)] = 50.0                       # garbage under the mask: must not leak
    out = telea_fill(x, 1 - mask)
    k = (mask == 0).expand_as(out)
    assert torch.equal(out[k], x[k])
    inside = out[~k].view(3, -1)
    known = crop[k].view(3, -1)
    assert (inside.min(1).values >= known.min(1).values - 1e-5).all()
    assert (inside.max(1).values <= known.max(1).values + 1e-5).all()
    assert torch.equal(telea_fill(x, torch.zeros_like(mask)), x)   # nothing known: left alone
    # scale-free: OpenCV's float Telea on the raw [-1, 1] values overshoots (a mean off by > 0.1
    # here); the fill of the same data shifted and scaled is the same fill shifted and scaled
    torch.testing.assert_close(telea_fill(x * 0.01 + 5, 1 - mask), out * 0.01 + 5, atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="anchor"):
        anchor_lowpass(crop, crop, mask, anchor="poisson")


def test_harmonize_modes():
    assert harmonize_mode(True) == "boundary" and harmonize_mode(False) == "none" and harmonize_mode(None) == "none"
    for m in ("lowpass", "boundary", "none"):
        assert harmonize_mode(m) == m
    for bad in ("poisson", 1, "LOWPASS"):
        with pytest.raises(ParameterError, match="harmonize"):
            harmonize_mode(bad)


# ------------------------------------------------------------------ OpenCLIP text towers
ARCH = "geot2e-test-tiny-clip"


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory):
    """A small OpenCLIP architecture registered from a temp dir (no download ever)."""
    import open_clip

    d = tmp_path_factory.mktemp("openclip_cfg")
    (d / f"{ARCH}.json").write_text(json.dumps({
        "embed_dim": 24,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }))
    open_clip.add_model_config(d)
    assert ARCH in open_clip.list_models()
    torch.manual_seed(0)
    clip = open_clip.create_model(ARCH, pretrained=None).eval()
    return clip


@pytest.mark.parametrize("prefix", ["", "text."])
def test_openclip_arch_with_local_safetensors(tiny_arch, tmp_path, prefix):
    from safetensors.torch import save_file

    clip = tiny_arch
    text_keys = [k for k in clip.state_dict() if not k.startswith("visual.") and k != "logit_scale"]
    sd = {prefix + k: clip.state_dict()[k].contiguous() for k in text_keys}
    f = tmp_path / "tiny_clip.safetensors"
    save_file(sd, str(f))
    enc = TextEncoder(TextConfig(arch=ARCH, pretrained=str(f)))
    own = enc.tower.state_dict()
    assert set(own) <= {k[len(prefix):] for k in sd}
    for k, v in own.items():
        assert torch.equal(v, sd[prefix + k]), k
    tokens = enc.tokenize(["a river through farmland", ""])
    feats = enc(tokens)
    assert feats.shape == (2, 20, 32) and enc.width == 32 and enc.context_length == 20
    with torch.no_grad():  # the tower is OpenCLIP's own: its pooled output is encode_text's
        pooled, _ = enc.tower(tokens)
        torch.testing.assert_close(pooled, clip.encode_text(tokens), atol=1e-5, rtol=1e-5)


def test_openclip_pickle_and_wrong_files_refused(tiny_arch, tmp_path):
    pt = tmp_path / "open_clip_pytorch_model.pt"
    pt.write_bytes(b"not even opened")
    with pytest.raises(CheckpointError, match="pickle"):
        TextEncoder(TextConfig(arch=ARCH, pretrained=str(pt)))
    with pytest.raises(CheckpointError, match="not found"):
        TextEncoder(TextConfig(arch=ARCH, pretrained=str(tmp_path / "absent.safetensors")))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        TextEncoder(TextConfig(arch=ARCH, pretrained=str(bad)))
    with pytest.raises(CheckpointError, match="unknown OpenCLIP architecture"):
        TextEncoder(TextConfig(arch="no-such-arch-xyz"))


def test_prompt_longer_than_context_warns():
    from geot2e.errors import PromptTruncatedWarning

    enc = TextEncoder(TextConfig(width=32, layers=1, heads=2, context_length=8))
    with pytest.warns(PromptTruncatedWarning):
        out = enc(["a very long prompt about rivers fields roads towns forests lakes and hills"])
    assert out.shape == (1, 8, 32)


def test_min_snr_weighting_keeps_noisy_steps_and_damps_clean_ones():
    """snr_gamma: an example at SNR above gamma weighs gamma / SNR of its plain loss, one below it 1;
    a gamma above every SNR is the plain loss."""
    from geot2e.models import Text2Earth, make_scheduler, tiny_config

    torch.manual_seed(0)
    m = Text2Earth(tiny_config())
    sched = make_scheduler(m.config, "ddpm")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    mask = torch.ones(2, 1, 16, 16)
    snr = sched.alphas_cumprod / (1 - sched.alphas_cumprod)

    def loss(gamma, t):
        from unittest import mock

        def fixed(lo, hi, size, **kw):                 # pin the timestep of both examples
            return torch.full(size, t, dtype=torch.long, device=kw.get("device"))

        with torch.no_grad(), mock.patch.object(torch, "randint", fixed):
            return float(m.training_loss(x, mask, torch.tensor([30.0, 30.0]), ["", ""], scheduler=sched,
                                         generator=torch.Generator().manual_seed(2), snr_gamma=gamma))

    clean, noisy = 20, 900
    assert snr[clean] > 5 > snr[noisy]
    np.testing.assert_allclose(loss(5.0, clean), loss(None, clean) * 5.0 / float(snr[clean]), rtol=1e-4)
    np.testing.assert_allclose(loss(5.0, noisy), loss(None, noisy), rtol=1e-5)
    np.testing.assert_allclose(loss(1e9, clean), loss(None, clean), rtol=1e-5)
