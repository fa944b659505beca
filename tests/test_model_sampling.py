"""Sampling of the Text2Earth model: the paper's guidance formula, one UNet pass per step at
ω = 0, null conditions for missing text/GSD, batched per-tile conditions, RGBN models."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geot2e.errors import ParameterError, TileSizeError
from geot2e.models import Text2Earth, make_scheduler, tiny_config

SIZE = 32  # pixels; tiny_config has a VAE factor of 4 → 8×8 latents


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Text2Earth(tiny_config()).eval()
    # A trained-looking resolution embedding: the last layer and ρ∅ start at zero, which would
    # make every resolution check vacuous.
    with torch.no_grad():
        torch.nn.init.normal_(m.resolution.mlp[2].weight, std=0.5)
        torch.nn.init.normal_(m.resolution.mlp[2].bias, std=0.5)
        torch.nn.init.normal_(m.resolution.null, std=1.0)
    return m


@pytest.fixture(scope="module")
def tiles(landsat_da):
    """Real Landsat crops scaled to [-1, 1] (B=3, 3 bands, 32×32) and a square mask."""
    a = landsat_da.values[:, 100:100 + 3 * SIZE, 200:200 + SIZE].astype("float32")
    lo, hi = (float(v) for v in np.percentile(a, [1, 99]))
    a = (np.clip((a - lo) / (hi - lo), 0, 1) * 2 - 1).astype("float32")
    x = torch.from_numpy(a).reshape(3, 3, SIZE, SIZE).permute(1, 0, 2, 3).contiguous()
    m = torch.zeros(3, 1, SIZE, SIZE)
    m[..., 8:24, 4:20] = 1
    return x, m


def _noise(b, seed=0, c=4):
    return torch.randn(b, c, SIZE // 4, SIZE // 4, generator=torch.Generator().manual_seed(seed))


class UNetSpy:
    """Counts UNet forward passes and the batch entries they carry; keeps their conditions."""

    def __init__(self, model):
        self.batches, self.text, self.labels = [], [], []
        self.h = model.unet.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, mod, args, kwargs):
        self.batches.append(args[0].shape[0])
        self.text.append(kwargs["encoder_hidden_states"].clone())
        self.labels.append(kwargs["class_labels"].clone())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.h.remove()


def _manual_step(model, x, m, noise, *, prompts, gsd, scheduler, combine):
    """One denoising step from explicit, separate UNet calls; ``combine`` builds ε from them."""
    b = x.shape[0]
    with torch.no_grad():
        m_lat, zm = model.masked_condition(x, m)
        s = make_scheduler(model.config, scheduler)
        s.set_timesteps(1)
        t = s.timesteps[0]
        z0 = noise * s.init_noise_sigma
        inp = torch.cat([s.scale_model_input(z0, t), m_lat, zm], 1)
        tau = model.text_encoder(prompts)
        tau0 = model.text_encoder([""] * b)  # τ∅ = encoding of ""
        rho = model.resolution(torch.full((b,), gsd))
        rho0 = model.resolution.null.expand(b, -1)  # learned ρ∅

        def eps(text, res):
            return model.unet(inp, t.expand(b), encoder_hidden_states=text, class_labels=res).sample

        e = combine(eps, tau, tau0, rho, rho0)
        return model.decode_latents(s.step(e, t, z0).prev_sample), eps(tau, rho), eps(tau0, rho0)


@pytest.mark.parametrize("scheduler", ["ddim", "dpmsolver++"])
@pytest.mark.parametrize("w", [3.0, 0.7])
def test_guidance_formula_matches_two_explicit_unet_calls(model, tiles, scheduler, w):
    x, m = tiles
    prompts = ["a river crossing farmland", "dense forest", "a small town"]
    noise = _noise(3, seed=1)
    out = model.inpaint(x, m, gsd=30.0, prompts=prompts, guidance=w, steps=1, scheduler=scheduler,
                        noise=noise, harmonize=False)
    ref, e_c, e_u = _manual_step(model, x, m, noise, prompts=prompts, gsd=30.0, scheduler=scheduler,
                                 combine=lambda eps, tau, tau0, rho, rho0: (1 + w) * eps(tau, rho) - w * eps(tau0, rho0))
    assert (e_c - e_u).abs().max() > 1e-3  # the conditions do matter, so the check is not vacuous
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_split_guidance_formula(model, tiles):
    x, m = tiles
    wt, wr = 2.0, 0.5
    noise = _noise(3, seed=2)
    out = model.inpaint(x, m, gsd=10.0, prompts="bare soil", guidance_text=wt, guidance_res=wr, steps=1,
                        noise=noise, harmonize=False)

    def combine(eps, tau, tau0, rho, rho0):
        e_c = eps(tau, rho)
        return e_c + wt * (e_c - eps(tau0, rho)) + wr * (e_c - eps(tau, rho0))

    ref, _, _ = _manual_step(model, x, m, noise, prompts=["bare soil"] * 3, gsd=10.0, scheduler="ddim", combine=combine)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_zero_guidance_runs_one_unet_pass_per_step(model, tiles):
    x, m = tiles
    b = x.shape[0]
    model.unet_calls = 0
    with UNetSpy(model) as spy:
        model.inpaint(x, m, gsd=30.0, prompts="fields", guidance=0.0, steps=3, noise=_noise(b))
    assert spy.batches == [b, b, b] and model.unet_calls == 3
    model.unet_calls = 0
    with UNetSpy(model) as spy:
        model.inpaint(x, m, gsd=30.0, prompts="fields", guidance=3.0, steps=3, noise=_noise(b))
    assert spy.batches == [2 * b] * 3 and model.unet_calls == 3


def test_missing_text_uses_encoding_of_empty_string(model, tiles):
    x, m = tiles
    tau0 = model.text_encoder([""])
    for prompts in (None, "", [None, "", None]):
        with UNetSpy(model) as spy:
            model.inpaint(x, m, gsd=30.0, prompts=prompts, guidance=0.0, steps=1, noise=_noise(3))
        torch.testing.assert_close(spy.text[0], tau0.expand(3, -1, -1), atol=0, rtol=0)


def test_missing_gsd_uses_learned_null_resolution(model, tiles):
    x, m = tiles
    with UNetSpy(model) as spy:
        model.inpaint(x, m, gsd=None, prompts="a lake", guidance=0.0, steps=1, noise=_noise(3))
    assert torch.equal(spy.labels[0], model.resolution.null.detach().expand(3, -1))
    with UNetSpy(model) as spy:  # guided: the unconditional half carries τ∅ and ρ∅
        model.inpaint(x, m, gsd=[0.5, None, 30.0], prompts="a lake", guidance=2.0, steps=1, noise=_noise(3))
    labels, null = spy.labels[0], model.resolution.null.detach()
    assert torch.equal(labels[1], null) and torch.equal(labels[3:], null.expand(3, -1))
    assert not torch.equal(labels[0], null) and not torch.equal(labels[2], null)


def test_generation_works_without_any_condition(model, tiles):
    x, m = tiles
    full = torch.ones_like(m)  # text-to-image: nothing known
    for kw in ({}, {"prompts": None, "gsd": None}, {"prompts": "", "gsd": None, "guidance": 0.0}):
        out = model.inpaint(x, full, steps=2, noise=_noise(3), **kw)
        assert out.shape == x.shape and torch.isfinite(out).all()


def test_batched_per_tile_conditions_equal_single_tile_calls(model, tiles):
    x, m = tiles
    gsd, prompts, noise = [0.5, None, 30.0], ["harbour", None, ""], _noise(3, seed=5)
    out = model.inpaint(x, m, gsd=gsd, prompts=prompts, steps=2, guidance=2.0, noise=noise)
    assert out.shape == (3, 3, SIZE, SIZE) and out.dtype == torch.float32
    for i in range(3):
        one = model.inpaint(x[i:i + 1], m[i:i + 1], gsd=[gsd[i]], prompts=[prompts[i]], steps=2, guidance=2.0,
                            noise=noise[i:i + 1])
        torch.testing.assert_close(out[i:i + 1], one, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("masked_fill", ["smooth", "zero"])
def test_values_under_the_mask_are_never_read(model, tiles, masked_fill):
    x, m = tiles
    noise = _noise(3, seed=6)
    outs = []
    old = model.config.masked_fill
    model.config.masked_fill = masked_fill
    try:
        for fill in (float("nan"), 1e6, -3.0):
            xx = x.clone()
            xx[(m > 0).expand_as(xx)] = fill  # clouds, nodata, garbage
            outs.append(model.inpaint(xx, m, gsd=30.0, prompts="fields", steps=2, guidance=1.0, noise=noise))
    finally:
        model.config.masked_fill = old
    assert torch.isfinite(outs[0]).all()
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_deterministic_given_generator(model, tiles):
    x, m = tiles
    a = model.inpaint(x, m, gsd=30.0, prompts="x", steps=2, generator=torch.Generator().manual_seed(7))
    b = model.inpaint(x, m, gsd=30.0, prompts="x", steps=2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_bad_batch_arguments_raise_typed_errors(model, tiles):
    x, m = tiles
    with pytest.raises(ParameterError, match="prompts"):
        model.inpaint(x, m, prompts=["a", "b"], steps=1)
    with pytest.raises(ParameterError, match="GSD"):
        model.inpaint(x, m, gsd=[1.0, 2.0], steps=1)
    with pytest.raises(TileSizeError, match="multiple"):
        model.inpaint(x[..., :30, :30], m[..., :30, :30], steps=1)


def test_rgbn_model(rgbn_da):
    torch.manual_seed(0)
    model = Text2Earth(tiny_config(bands=4)).eval()
    a = torch.from_numpy(rgbn_da.values[:, :SIZE, :SIZE].astype("float32")) / 127.5 - 1
    x = a[None].repeat(2, 1, 1, 1)
    m = torch.zeros(2, 1, SIZE, SIZE)
    m[..., 10:22, 10:22] = 1
    out = model.inpaint(x, m, gsd=[5.0, None], prompts=["crops", None], steps=2, noise=_noise(2))
    assert out.shape == (2, 4, SIZE, SIZE) and torch.isfinite(out).all()
    assert model.bands == 4 and model.config.band_names == ["red", "green", "blue", "nir"]


def test_guidance_interval_guides_only_the_noisiest_steps(model, tiles):
    x, m = tiles
    b = x.shape[0]
    with UNetSpy(model) as spy:                      # 4 steps, the first 2 guided (2 passes each)
        half = model.inpaint(x, m, gsd=30.0, prompts="fields", guidance=3.0, steps=4, noise=_noise(b),
                             guidance_interval=0.5, harmonize=False)
    assert spy.batches == [2 * b, 2 * b, b, b]
    full = model.inpaint(x, m, gsd=30.0, prompts="fields", guidance=3.0, steps=4, noise=_noise(b), harmonize=False)
    none = model.inpaint(x, m, gsd=30.0, prompts="fields", guidance=3.0, steps=4, noise=_noise(b),
                         guidance_interval=0.0, harmonize=False)
    unguided = model.inpaint(x, m, gsd=30.0, prompts="fields", guidance=0.0, steps=4, noise=_noise(b), harmonize=False)
    torch.testing.assert_close(none, unguided)
    assert (half - full).abs().max() > 1e-4 and (half - unguided).abs().max() > 1e-4


def test_vae_runs_in_bfloat16_only_where_the_unet_does(model, tiles, monkeypatch):
    """With bfloat16 autocast the VAE's encode and decode run in it too (faster on CPU), the
    result stays float32 and within 40 dB of the float32 run's; float16 never touches the VAE."""
    x, m = tiles
    seen = []
    decode = model.decode_latents
    monkeypatch.setattr(model, "decode_latents", lambda z: seen.append(torch.get_autocast_dtype("cpu")
                                                                          if torch.is_autocast_enabled("cpu") else None)
                        or decode(z))
    kw = dict(guidance=0.0, steps=2, noise=_noise(3), harmonize="none")
    ref = model.inpaint(x, m, **kw)
    monkeypatch.setattr(model, "autocast_dtype", torch.bfloat16)
    got = model.inpaint(x, m, **kw)
    assert seen == [None, torch.bfloat16]
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    mse = float(((got - ref) ** 2).mean())
    assert 10 * np.log10(4 / max(mse, 1e-12)) > 40
    monkeypatch.setattr(model, "autocast_dtype", torch.float16)
    assert type(model._vae_autocast(torch.device("cpu"))).__name__ == "nullcontext"


def test_decode_box_covers_the_holes_with_their_margin_and_leaves_big_ones_whole():
    from geot2e.models.text2earth import DECODE_CROP_SHARE, DECODE_MARGIN, decode_box

    m = torch.zeros(2, 1, 160, 192)
    m[0, :, 61:97, 50:90] = 1
    m[1, :, 70:80, 120:131] = 1                       # a second window of the batch: the box is the union's
    y0, y1, x0, x1 = decode_box(m, 4)
    assert (y0, x0) == ((61 - DECODE_MARGIN) // 4 * 4, (50 - DECODE_MARGIN) // 4 * 4)
    assert y1 >= 97 + DECODE_MARGIN and x1 >= 131 + DECODE_MARGIN and y1 % 4 == x1 % 4 == 0
    assert (y1 - y0) * (x1 - x0) <= DECODE_CROP_SHARE * 160 * 192
    m[1, :, 2:158, 2:190] = 1                         # a mostly masked window: decoded whole
    assert decode_box(m, 4) is None
    assert decode_box(torch.zeros(1, 1, 32, 32), 4) is None


def test_a_small_hole_is_decoded_around_it_and_its_fill_barely_changes(model):
    """Decoding only the holes' box (plus DECODE_MARGIN) gives the pixels outside that box back
    as the input, and within the hole nearly what decoding the whole window gives (the decoder's
    convolutions see DECODE_MARGIN pixels of the same latents; its group norms, the box alone)."""
    import geot2e.models.text2earth as T

    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 96, 96, generator=g) * 2 - 1
    m = torch.zeros(3, 1, 96, 96)
    m[:2, :, 40:56, 36:52] = 1                        # two tiles with one hole, one with another
    m[2, :, 8:30, 60:90] = 1
    x = torch.cat([x, x[:1]])
    noise = torch.randn(3, 4, 24, 24, generator=g)
    kw = dict(steps=2, guidance=0.0, noise=noise, harmonize="lowpass")
    cropped = model.inpaint(x, m, **kw)
    old = T.DECODE_CROP_SHARE
    T.DECODE_CROP_SHARE = -1.0                        # decode every window whole
    try:
        whole = model.inpaint(x, m, **kw)
    finally:
        T.DECODE_CROP_SHARE = old
    for i in range(3):                                # each tile decoded around its own hole
        y0, y1, x0, x1 = T.decode_box(m[i:i + 1], model.vae_factor)
        outside = torch.ones(96, 96, dtype=torch.bool)
        outside[y0:y1, x0:x1] = False
        assert torch.equal(cropped[i][:, outside], x[i][:, outside])
        assert not torch.equal(whole[i][:, outside], x[i][:, outside])
        hole = m[i, 0] > 0
        diff = (cropped[i] - whole[i])[:, hole].abs()
        assert float(diff.mean()) < 0.2 * float(whole[i][:, hole].std())   # latents a cell off: 1.2-1.3x
