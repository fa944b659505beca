"""Official Text2Earth diffusers folders: tiny random folders of both official layouts
(tests/official_helpers.py) loaded through geot2e. What is checked here: loading and
refusals, the Google level (rounded, clamped, 0 = null, prompt prefix), the scheduler from
the folder (allow-list), the tokenizer folder's padding, the nearest-neighbour latent mask,
the guidance formula and the text-to-image (4-channel) model. The end-to-end comparison with
the official pipelines' steps is in tests/test_official_pipeline.py."""
from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

from geot2e.errors import CheckpointError, Geot2eWarning, GSDRangeWarning, ParameterError
from geot2e.models import Text2Earth, from_pretrained, load_model
from geot2e.models.official import (GoogleLevel, OfficialText2Earth, google_level, level_gsd, load_official,
                                    parse_level_prefix)
from official_helpers import CTX, DDIM_CONFIG, WIDTH, open_clip_tower, write_folder, write_tokenizer


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("official") / "Text2Earth-inpainting-tiny", kind="inpainting")


@pytest.fixture(scope="module")
def model(folder):
    return load_official(folder, device="cpu")


@pytest.fixture(scope="module")
def t2i_folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("official") / "Text2Earth-tiny", kind="text2image")


def _inputs(b=2, size=64):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(b, 3, size, size, generator=g) * 2 - 1
    m = torch.zeros(b, 1, size, size)
    m[..., 16:48, 16:48] = 1
    return x, m


def _capture(model):
    seen = []

    def hook(mod, args, kwargs):
        seen.append({"n": args[0].shape[0], "labels": kwargs["class_labels"].clone(),
                     "text": kwargs["encoder_hidden_states"].clone(), "input": args[0].clone()})

    return seen, model.unet.register_forward_pre_hook(hook, with_kwargs=True)


# ----------------------------------------------------------------------------- loading
def test_loads_both_kinds_with_official_defaults(model, folder, t2i_folder):
    assert isinstance(model, OfficialText2Earth) and isinstance(model, Text2Earth)
    assert model.kind == "inpainting" and model.vae_factor == 8 and model.bands == 3
    assert model.config.masked_fill == "zero" and model.gsd_range == (0.5, 128.0)
    assert model.checkpoint_hash != "unsaved" and model.source == str(folder.resolve())
    # the folder's scheduler class, 50 steps, no harmonisation
    assert model.sampling_defaults == {"steps": 50, "scheduler": "PNDMScheduler", "harmonize": "none"}
    t2i = load_official(t2i_folder)
    assert t2i.kind == "text2image" and t2i.unet.config.in_channels == 4
    # text-to-image: Euler configured from the folder's (DDIM) config, as the README does
    assert t2i.sampling_defaults["scheduler"] == "EulerDiscreteScheduler"
    s = t2i.make_scheduler()
    assert type(s).__name__ == "EulerDiscreteScheduler"
    assert s.config.steps_offset == 1 and s.config.timestep_spacing == "leading"
    assert model.text_encoder.pad_id == 0  # tokenizer/ pads with "!" (Stable Diffusion 2 style)


def test_text_to_image_generates_with_a_full_mask(t2i_folder):
    model = load_official(t2i_folder)
    seen, h = _capture(model)
    try:
        out = model.inpaint(torch.zeros(1, 3, 64, 64), torch.ones(1, 1, 64, 64), gsd=2.0, prompts="farmland",
                            steps=3, guidance=3.0)
    finally:
        h.remove()
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()
    assert len(seen) == 3 and all(s["input"].shape[1] == 4 for s in seen)  # latents only, no mask channels


def test_text_to_image_keeps_known_latents_when_partly_masked(t2i_folder):
    """With known pixels (the engine's second-pass tiles), the known latents are blended back
    after every step, as the official inpainting pipeline does with a 4-channel UNet: the
    final latents equal the known image's latents where the latent mask is 0."""
    model = load_official(t2i_folder)
    x, m = _inputs(1)
    z = model.inpaint(x, m, gsd=2.0, prompts="farmland", steps=3, guidance=0.0, output_type="latent")
    m_lat, zm = model.masked_condition(x, m)
    keep = m_lat < 0.5
    torch.testing.assert_close(z[keep.expand_as(z)], zm[keep.expand_as(zm)], atol=1e-5, rtol=0)
    assert (z - zm)[~keep.expand_as(z)].abs().max() > 1e-3


def test_dispatch_from_pretrained_and_load_model(folder):
    a = from_pretrained(folder)
    assert isinstance(a, OfficialText2Earth)
    b = load_model(folder, device="cpu", autocast=None)
    assert isinstance(b, OfficialText2Earth) and b is load_model(folder, device="cpu", autocast=None)
    with pytest.raises(CheckpointError, match="official"):
        a.save_pretrained(folder.parent / "resaved")


def _copy(folder, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(folder, dst)
    return dst


def test_pickle_only_component_refused(folder, tmp_path):
    root = _copy(folder, tmp_path)
    (root / "unet" / "diffusion_pytorch_model.safetensors").rename(root / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle") as e:
        from_pretrained(root)
    assert "unet" in str(e.value)


def test_corrupt_and_missing_files_named(folder, tmp_path):
    root = _copy(folder, tmp_path)
    f = root / "vae" / "diffusion_pytorch_model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt") as e:
        load_official(root)
    assert str(f) in str(e.value)
    shutil.rmtree(root / "text_encoder")
    shutil.copytree(folder / "vae", root / "vae", dirs_exist_ok=True)
    with pytest.raises(CheckpointError, match="text_encoder"):
        load_official(root)


def test_other_unet_widths_refused(folder, tmp_path):
    root = _copy(folder, tmp_path)
    cfg = json.loads((root / "unet" / "config.json").read_text())
    cfg["in_channels"] = 8
    (root / "unet" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="in_channels=8"):
        load_official(root)


def test_text_width_mismatch_refused(folder, tmp_path):
    from safetensors.torch import save_file

    root = _copy(folder, tmp_path)
    for f in (root / "text_encoder").iterdir():
        f.unlink()
    tower = open_clip_tower(width=64, layers=1)
    save_file({k: v.contiguous() for k, v in tower.state_dict().items()},
              str(root / "text_encoder" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="cross_attention_dim"):
        load_official(root)


def test_open_clip_text_tower_layout(tmp_path):
    from safetensors.torch import load_file

    root = write_folder(tmp_path / "oc", text="open_clip")
    model = load_official(root)
    saved = load_file(str(root / "text_encoder" / "model.safetensors"))
    for k, v in model.text_encoder.tower.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert model.text_encoder(["a river"]).shape == (1, CTX, WIDTH)


def test_hf_clip_text_encoder_is_converted(folder, model):
    """diffusers folders ship CLIPTextModel weights: converted to the OpenCLIP tower exactly,
    and the tokens (with the folder's padding) are the CLIPTokenizer's."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.CLIPTextModel.from_pretrained(str(folder / "text_encoder")).eval()
    tok = transformers.CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    prompts = ["a river through farmland, with 3 bridges!", ""]  # "!" is the pad token: id 0 in both
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    ours = model.text_encoder.tokenize(prompts)
    assert torch.equal(ours, ids)
    with torch.no_grad():
        torch.testing.assert_close(model.text_encoder(ours), hf(input_ids=ids)[0], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- tokenizer folder
def test_tokenizer_padding_is_adopted(folder, tmp_path):
    """A version-1 style tokenizer pads with <|endoftext|> (49407), not OpenCLIP's 0: the
    padding changes the token features the UNet attends to, so geot2e pads like the folder."""
    transformers = pytest.importorskip("transformers")
    root = _copy(folder, tmp_path)
    shutil.rmtree(root / "tokenizer")
    write_tokenizer(root / "tokenizer", pad="<|endoftext|>")
    model = load_official(root)
    assert model.text_encoder.pad_id == 49407
    tok = transformers.CLIPTokenizer.from_pretrained(str(root / "tokenizer"))
    prompts = ["dense residential area", ""]
    ref = tok(prompts, padding="max_length", max_length=CTX, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(model.text_encoder.tokenize(prompts), ref)
    base = load_official(folder)
    assert not torch.allclose(model.text_encoder(prompts), base.text_encoder(prompts))


def test_tokenizer_that_openclip_cannot_reproduce_is_refused(folder, tmp_path):
    root = _copy(folder, tmp_path)
    vocab = json.loads((root / "tokenizer" / "vocab.json").read_text())
    vocab["lake</w>"], vocab["river</w>"] = vocab["river</w>"], vocab["lake</w>"]
    (root / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(CheckpointError, match="vocabulary"):
        load_official(root)
    shutil.rmtree(root / "tokenizer")
    write_tokenizer(root / "tokenizer", model_max_length=64)
    with pytest.raises(CheckpointError, match="model_max_length"):
        load_official(root)


# ----------------------------------------------------------------------------- scheduler
def test_scheduler_comes_from_the_folder(model):
    s = model.make_scheduler()
    assert type(s).__name__ == "PNDMScheduler"
    assert s.config.skip_prk_steps and s.config.steps_offset == 1 and not s.config.set_alpha_to_one
    s.set_timesteps(10)
    assert int(s.timesteps[0]) == 901  # "leading" spacing + steps_offset 1, as the folder says
    swapped = model.make_scheduler("euler")  # geot2e names swap the class, keep the folder's config
    assert type(swapped).__name__ == "EulerDiscreteScheduler" and swapped.config.steps_offset == 1


def test_scheduler_allow_list(folder, tmp_path):
    root = _copy(folder, tmp_path)
    f = root / "scheduler" / "scheduler_config.json"
    f.write_text(json.dumps({**DDIM_CONFIG, "_class_name": "MyEvilScheduler"}))
    with pytest.raises(CheckpointError, match="not an allowed scheduler"):
        load_official(root)
    f.write_text(json.dumps({**DDIM_CONFIG, "beta_start": {"__class__": "os.system"}}))
    with pytest.raises(CheckpointError, match="plain numbers"):
        load_official(root)
    f.unlink()  # no scheduler/: the Stable-Diffusion-2 schedule with DDIM
    assert type(load_official(root).make_scheduler()).__name__ == "DDIMScheduler"
    with pytest.raises(ParameterError, match="unknown scheduler"):
        load_official(root).make_scheduler("FlowMatchEulerDiscreteScheduler")


# ----------------------------------------------------------------------------- resolution level
def test_gsd_maps_to_integer_trained_levels():
    lv = GoogleLevel()
    gsd = torch.tensor([0.5, 2.0, 30.0, 128.0, 0.1, 5000.0, float("nan"), 2.9, 2.8])
    assert lv(gsd).tolist() == [18.0, 16.0, 12.0, 10.0, 18.0, 10.0, 0.0, 15.0, 16.0]
    assert lv(gsd, drop=torch.ones(9, dtype=torch.bool)).eq(0).all()
    assert torch.allclose(google_level(torch.tensor([128.0, 30.0])), torch.tensor([10.0, 17 - 4.906890595608519]))
    table = GoogleLevel(num_classes=20)(torch.tensor([30.0, float("nan"), 1e9, 0.01]))
    assert table.dtype == torch.long and table.tolist() == [12, 0, 10, 18]
    assert [level_gsd(v) for v in (18, 16, 10)] == [0.5, 2.0, 128.0]


def test_labels_reach_the_unet_uncond_first(model):
    x, m = _inputs()
    seen, h = _capture(model)
    try:
        model.inpaint(x, m, gsd=[30.0, None], prompts="roads", steps=1, guidance=2.0)
    finally:
        h.remove()
    assert len(seen) == 1 and seen[0]["n"] == 4
    # [uncond (0, 0), cond (ℓ(30 m) = 12 rounded, unknown → 0)], as the official pipelines batch them
    assert seen[0]["labels"].tolist() == [0.0, 0.0, 12.0, 0.0]


def test_prompt_prefix_is_parsed_and_stripped(model):
    assert parse_level_prefix("16_GOOGLE_LEVEL_Seven green circular farmlands") == (
        16, "Seven green circular farmlands")
    assert parse_level_prefix("0_GOOGLE_LEVEL_a lake") == (0, "a lake")
    assert parse_level_prefix("a lake") == (None, "a lake")
    with pytest.raises(ParameterError, match="whole Google level"):
        parse_level_prefix("high_GOOGLE_LEVEL_a lake")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # agrees with the GSD (2 m = level 16): no warning
        texts, labels = model.condition(["16_GOOGLE_LEVEL_a green lake"], 2.0, 1)
    assert texts == ["a green lake"] and labels.tolist() == [16.0]
    plain, _ = model.condition(["a green lake"], 2.0, 1)
    torch.testing.assert_close(model.encode_prompts(texts), model.encode_prompts(plain))
    with pytest.warns(Geot2eWarning, match="prefix wins"):
        texts, labels = model.condition(["14_GOOGLE_LEVEL_a green lake"], 30.0, 1)
    assert labels.tolist() == [14.0]
    with pytest.warns(GSDRangeWarning, match="outside the trained"):
        _, labels = model.condition(["20_GOOGLE_LEVEL_a green lake"], None, 1)
    assert labels.tolist() == [18.0]
    _, labels = model.condition(["0_GOOGLE_LEVEL_a green lake"], None, 1)
    assert labels.tolist() == [0.0]


# ----------------------------------------------------------------------------- mask and guidance
def test_mask_at_latent_size_is_nearest_neighbour(model):
    """Each latent cell takes the mask value of its top-left pixel (F.interpolate's default),
    never a fraction; masked pixels are zeroed before encoding."""
    x, _ = _inputs(1)
    m = torch.zeros(1, 1, 64, 64)
    m[..., 13:43, 9:50] = 1  # edges not on the 8-px latent grid
    m_lat, zm = model.masked_condition(x, m)
    assert set(m_lat.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(m_lat, m[..., ::8, ::8])
    torch.testing.assert_close(zm, model.encode_images(x * (1 - m)))


def test_guidance_is_the_official_formula(model):
    """One step equals ε∅ + (1+ω)(ε − ε∅) with the official [uncond, cond] batch, computed by hand."""
    x, m = _inputs(1)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    w = 2.5
    out = model.inpaint(x, m, gsd=4.0, prompts="a harbour", steps=1, guidance=w, noise=noise, output_type="latent")
    with torch.no_grad():
        m_lat, zm = model.masked_condition(x, m)
        s = model.make_scheduler()
        s.set_timesteps(1)
        t = s.timesteps[0]
        z = noise * s.init_noise_sigma
        inp = torch.cat([s.scale_model_input(torch.cat([z, z]), t), torch.cat([m_lat] * 2), torch.cat([zm] * 2)], 1)
        eps = model.unet(inp, t, encoder_hidden_states=torch.cat([model.text_encoder([""]),
                                                                 model.text_encoder(["a harbour"])]),
                         class_labels=torch.tensor([0.0, 15.0])).sample
        e_u, e_c = eps.chunk(2)
        ref = s.step(e_u + (1 + w) * (e_c - e_u), t, z).prev_sample
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_unguided_runs_one_pass_and_level_changes_output(model):
    x, m = _inputs(1)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    before = model.unet_calls
    a = model.inpaint(x, m, gsd=0.5, prompts="farmland", steps=2, guidance=0.0, noise=noise)
    s = model.make_scheduler()
    s.set_timesteps(2)  # PNDM's PLMS steps: 2 steps are 3 UNet evaluations
    assert model.unet_calls - before == len(s.timesteps) == 3
    b = model.inpaint(x, m, gsd=64.0, prompts="farmland", steps=2, guidance=0.0, noise=noise)
    c = model.inpaint(x, m, gsd=0.5, prompts="farmland", steps=2, guidance=0.0, noise=noise)
    assert torch.equal(a, c) and (a - b).abs().max() > 1e-6
    with pytest.raises(ParameterError):
        model.training_loss(x, m, torch.tensor([1.0]), ["a"])


def test_stochastic_scheduler_is_reproducible_per_tile(model):
    """Ancestral schedulers draw step noise; with no generator it is seeded by the tile's
    initial noise, so a tile gives the same result wherever and whenever it runs."""
    x, m = _inputs(1)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    kw = dict(gsd=2.0, prompts="a lake", steps=3, guidance=1.0, scheduler="EulerAncestralDiscreteScheduler",
              output_type="latent")
    a = model.inpaint(x, m, noise=noise, **kw)
    b = model.inpaint(x, m, noise=noise.clone(), **kw)
    assert torch.equal(a, b)
    g = model.inpaint(x, m, noise=noise, generator=torch.Generator().manual_seed(1), **kw)
    assert (a - g).abs().max() > 1e-4  # the step noise does matter
