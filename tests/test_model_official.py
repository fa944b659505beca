"""Official Text2Earth diffusers folders: tiny randomly initialised folders of that layout
(9-channel inpainting UNet with a Google-level class embedding, AutoencoderKL, CLIP text tower
in safetensors) are built here, loaded through geot2e and sampled."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from geot2e.errors import CheckpointError
from geot2e.models import Text2Earth, from_pretrained, load_model
from geot2e.models.official import GoogleLevel, OfficialText2Earth, google_level, load_official

WIDTH = 32
CTX = 77


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 32),
                         layers_per_block=1, latent_channels=4, norm_num_groups=32, scaling_factor=0.18215)


def _unet(**class_kw):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=8, in_channels=9, out_channels=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=(32, 64),
                                layers_per_block=1, cross_attention_dim=WIDTH, attention_head_dim=2,
                                norm_num_groups=32, **class_kw)


def _open_clip_tower():
    from open_clip.model import CLIPTextCfg, _build_text_tower

    return _build_text_tower(16, CLIPTextCfg(context_length=CTX, vocab_size=49408, width=WIDTH, heads=2, layers=2))


def _write_folder(root, *, unet_kw=None, text="open_clip"):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    root.mkdir(parents=True, exist_ok=True)
    _vae().save_pretrained(root / "vae", safe_serialization=True)
    _unet(**(unet_kw or {"class_embed_type": "timestep"})).save_pretrained(root / "unet", safe_serialization=True)
    (root / "text_encoder").mkdir()
    if text == "open_clip":
        tower = _open_clip_tower()
        sd = {k: v.contiguous() for k, v in tower.state_dict().items()}
        save_file(sd, str(root / "text_encoder" / "model.safetensors"))
        (root / "text_encoder" / "config.json").write_text(json.dumps({"heads": 2}))
    else:
        from transformers import CLIPTextConfig, CLIPTextModel

        hf = CLIPTextModel(CLIPTextConfig(hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=2,
                                          num_attention_heads=2, max_position_embeddings=CTX, vocab_size=49408,
                                          hidden_act="gelu", projection_dim=WIDTH))
        hf.save_pretrained(root / "text_encoder", safe_serialization=True)
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({
        "_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "beta_end": 0.012, "num_train_timesteps": 1000, "prediction_type": "epsilon", "clip_sample": False}))
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _write_folder(tmp_path_factory.mktemp("official") / "Text2Earth-inpainting-tiny")


@pytest.fixture(scope="module")
def model(folder):
    return load_official(folder, device="cpu")


def _inputs(b=2, size=32):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(b, 3, size, size, generator=g) * 2 - 1
    m = torch.zeros(b, 1, size, size)
    m[..., 8:24, 8:24] = 1
    return x, m


def _capture(model):
    seen = []

    def hook(mod, args, kwargs):
        seen.append({"n": args[0].shape[0], "labels": kwargs["class_labels"].clone(),
                     "text": kwargs["encoder_hidden_states"].clone()})

    return seen, model.unet.register_forward_pre_hook(hook, with_kwargs=True)


def test_loads_and_inpaints_two_steps(model, folder):
    assert isinstance(model, OfficialText2Earth) and isinstance(model, Text2Earth)
    assert model.vae_factor == 2 and model.bands == 3 and model.latent_channels == 4
    assert model.config.masked_fill == "zero" and model.gsd_range == (0.5, 128.0)
    assert model.checkpoint_hash != "unsaved" and model.source == str(folder.resolve())
    x, m = _inputs()
    out = model.inpaint(x, m, gsd=[2.0, None], prompts=["a green lake", None], steps=2, guidance=3.0,
                        noise=torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0)))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_gsd_maps_to_google_level_and_null_is_zero(model):
    x, m = _inputs()
    seen, h = _capture(model)
    try:
        model.inpaint(x, m, gsd=[0.5, None], prompts="roads", steps=1, guidance=2.0)
    finally:
        h.remove()
    assert len(seen) == 1 and seen[0]["n"] == 4
    labels = seen[0]["labels"]
    torch.testing.assert_close(labels, torch.tensor([18.0, 0.0, 0.0, 0.0]))  # cond: ℓ(0.5 m)=18, unknown → 0
    assert torch.allclose(google_level(torch.tensor([128.0, 30.0])), torch.tensor([10.0, 17 - 4.906890595608519]))


def test_level_changes_the_output(model):
    x, m = _inputs(1)
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    a = model.inpaint(x, m, gsd=0.5, prompts="farmland", steps=2, guidance=0.0, noise=noise, harmonize=False)
    b = model.inpaint(x, m, gsd=64.0, prompts="farmland", steps=2, guidance=0.0, noise=noise, harmonize=False)
    c = model.inpaint(x, m, gsd=0.5, prompts="farmland", steps=2, guidance=0.0, noise=noise, harmonize=False)
    assert torch.equal(a, c)
    assert (a - b).abs().max() > 1e-6


def test_guidance_is_the_paper_formula(model):
    """One step through the official UNet equals (1+ω)ε(τ,ℓ) − ωε(τ∅,0) computed by hand."""
    from geot2e.models import make_scheduler

    x, m = _inputs(1)
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    w = 2.5
    out = model.inpaint(x, m, gsd=4.0, prompts="a harbour", steps=1, guidance=w, noise=noise, harmonize=False)
    with torch.no_grad():
        m_lat, zm = model.masked_condition(x, m)
        s = make_scheduler(model.config, "ddim")
        s.set_timesteps(1)
        t = s.timesteps[0]
        z = s.scale_model_input(noise * s.init_noise_sigma, t)
        inp = torch.cat([z, m_lat, zm], 1)
        e_c = model.unet(inp, t, encoder_hidden_states=model.text_encoder(["a harbour"]),
                         class_labels=torch.tensor([15.0])).sample
        e_u = model.unet(inp, t, encoder_hidden_states=model.text_encoder([""]),
                         class_labels=torch.tensor([0.0])).sample
        ref = model.decode_latents(s.step((1 + w) * e_c - w * e_u, t, noise * s.init_noise_sigma).prev_sample)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_text_encoder_weights_are_the_saved_ones(model, folder):
    from safetensors.torch import load_file

    saved = load_file(str(folder / "text_encoder" / "model.safetensors"))
    own = model.text_encoder.tower.state_dict()
    for k, v in own.items():
        assert torch.equal(v, saved[k]), k
    assert model.text_encoder(["a river"]).shape == (1, CTX, WIDTH)


def test_hf_clip_text_encoder_is_converted(tmp_path):
    """diffusers pipelines ship CLIPTextModel weights: converted to the OpenCLIP tower exactly."""
    transformers = pytest.importorskip("transformers")
    root = _write_folder(tmp_path / "hf", text="hf")
    model = load_official(root)
    hf = transformers.CLIPTextModel.from_pretrained(str(root / "text_encoder"), use_safetensors=True).eval()
    tokens = model.text_encoder.tokenize(["a river through farmland", ""])
    with torch.no_grad():
        ref = hf(input_ids=tokens).last_hidden_state
        ours = model.text_encoder(tokens)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_class_embedding_table_uses_integer_levels(tmp_path):
    root = _write_folder(tmp_path / "table", unet_kw={"num_class_embeds": 20})
    model = load_official(root)
    assert isinstance(model.resolution, GoogleLevel) and model.resolution.num_classes == 20
    labels = model.resolution(torch.tensor([30.0, float("nan"), 1e9, 0.01]))
    assert labels.dtype == torch.long and labels.tolist() == [12, 0, 1, 19]
    x, m = _inputs(2)
    out = model.inpaint(x, m, gsd=[30.0, None], prompts="forest", steps=2, guidance=1.0)
    assert torch.isfinite(out).all()


def test_dispatch_from_pretrained_and_load_model(folder):
    a = from_pretrained(folder)
    assert isinstance(a, OfficialText2Earth)
    b = load_model(folder, device="cpu", autocast=None)
    assert isinstance(b, OfficialText2Earth) and b is load_model(folder, device="cpu", autocast=None)
    with pytest.raises(CheckpointError, match="official"):
        a.save_pretrained(folder.parent / "resaved")


def _copy(folder, tmp_path):
    dst = tmp_path / "copy"
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


def test_text_to_image_unet_refused(folder, tmp_path):
    root = _copy(folder, tmp_path)
    cfg = json.loads((root / "unet" / "config.json").read_text())
    cfg["in_channels"] = 4
    (root / "unet" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="inpainting"):
        load_official(root)


def test_text_width_mismatch_refused(folder, tmp_path):
    from safetensors.torch import save_file
    from open_clip.model import CLIPTextCfg, _build_text_tower

    root = _copy(folder, tmp_path)
    tower = _build_text_tower(16, CLIPTextCfg(context_length=CTX, width=64, heads=2, layers=1))
    save_file({k: v.contiguous() for k, v in tower.state_dict().items()},
              str(root / "text_encoder" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="cross_attention_dim"):
        load_official(root)
