"""Tiny random folders in the two official Text2Earth layouts, and a re-implementation of the
official pipelines' steps to check geot2e against (tests/test_model_official.py,
tests/test_official_pipeline.py, tests/test_official_api.py).

A folder holds what the official diffusers folders hold: ``model_index.json``, ``vae/``
(AutoencoderKL, factor 8), ``unet/`` (9-channel inpainting or 4-channel text-to-image UNet
with a ``"timestep"`` class embedding for the Google level), ``text_encoder/`` (Hugging Face
``CLIPTextModel`` in safetensors, or OpenCLIP naming), ``tokenizer/`` (CLIP BPE vocab.json,
merges.txt, special tokens) and ``scheduler/scheduler_config.json``. Weights are random.

The VAE's posterior log-variance is set to -30 (std 3e-7): the official pipelines *sample*
the posterior, geot2e takes its mean (a documented difference); with this VAE both agree to
~1e-7, so the pipeline comparison checks everything else.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
import torch.nn.functional as F

WIDTH = 32
CTX = 77
LEVEL = "_GOOGLE_LEVEL_"

#: Stable-Diffusion-2-inpainting's scheduler config (PNDM with PLMS steps)
PNDM_CONFIG = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012,
               "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
               "num_train_timesteps": 1000, "prediction_type": "epsilon", "set_alpha_to_one": False,
               "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}
#: a DDIM config with "leading" spacing and steps_offset 1 (what the README's Euler swap reads)
DDIM_CONFIG = {"_class_name": "DDIMScheduler", "_diffusers_version": "0.27.0", "beta_end": 0.012,
               "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
               "num_train_timesteps": 1000, "prediction_type": "epsilon", "set_alpha_to_one": False,
               "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None}


def tiny_vae():
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(32, 32, 32, 32),
                        layers_per_block=1, latent_channels=4, norm_num_groups=32, scaling_factor=0.18215)
    with torch.no_grad():  # near-deterministic posterior (see the module docstring)
        vae.quant_conv.weight[4:] = 0
        vae.quant_conv.bias[4:] = -30.0
    return vae


def tiny_unet(in_channels: int, **class_kw):
    from diffusers import UNet2DConditionModel

    class_kw = class_kw or {"class_embed_type": "timestep"}
    return UNet2DConditionModel(sample_size=8, in_channels=in_channels, out_channels=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=(32, 64),
                                layers_per_block=1, cross_attention_dim=WIDTH, attention_head_dim=2,
                                norm_num_groups=32, **class_kw)


def open_clip_tower(width: int = WIDTH, layers: int = 2):
    from open_clip.model import CLIPTextCfg, _build_text_tower

    return _build_text_tower(16, CLIPTextCfg(context_length=CTX, vocab_size=49408, width=width, heads=2,
                                             layers=layers))


def write_tokenizer(d: Path, *, pad: str = "!", model_max_length: int = CTX) -> Path:
    """CLIP BPE tokenizer files (vocab.json, merges.txt, special tokens) made from OpenCLIP's BPE."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.json").write_text(json.dumps({names.get(k, k): v for k, v in tok.encoder.items()}))
    merges = sorted(tok.bpe_ranks, key=tok.bpe_ranks.get)
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": pad}
    # transformers writes special_tokens_map.json entries as AddedToken dicts
    (d / "special_tokens_map.json").write_text(json.dumps({k: {"content": v, "lstrip": False, "normalized": False,
                                                               "rstrip": False, "single_word": False}
                                                           for k, v in special.items()}))
    (d / "tokenizer_config.json").write_text(json.dumps({**special, "model_max_length": model_max_length,
                                                         "do_lower_case": True,
                                                         "tokenizer_class": "CLIPTokenizer"}))
    return d


def write_folder(root: Path, *, kind: str = "inpainting", text: str | None = None, pad: str = "!",
                 scheduler: dict | None = None, unet_kw: dict | None = None, seed: int = 0) -> Path:
    """A tiny official folder of ``kind`` ("inpainting": 9-channel UNet, "text2image": 4-channel).

    ``text``: "hf" (CLIPTextModel weights, as diffusers folders ship them; the default when
    ``transformers`` is installed) or "open_clip" (OpenCLIP naming)."""
    import importlib.util

    from safetensors.torch import save_file

    if text is None:
        text = "hf" if importlib.util.find_spec("transformers") is not None else "open_clip"

    torch.manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    tiny_vae().save_pretrained(root / "vae", safe_serialization=True)
    tiny_unet(9 if kind == "inpainting" else 4, **(unet_kw or {})).save_pretrained(root / "unet",
                                                                                  safe_serialization=True)
    if text == "open_clip":
        (root / "text_encoder").mkdir()
        sd = {k: v.contiguous() for k, v in open_clip_tower().state_dict().items()}
        save_file(sd, str(root / "text_encoder" / "model.safetensors"))
        (root / "text_encoder" / "config.json").write_text(json.dumps({"heads": 2}))
    else:
        from transformers import CLIPTextConfig, CLIPTextModel

        hf = CLIPTextModel(CLIPTextConfig(hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=2,
                                          num_attention_heads=2, max_position_embeddings=CTX, vocab_size=49408,
                                          hidden_act="gelu", projection_dim=WIDTH, pad_token_id=1,
                                          bos_token_id=49406, eos_token_id=49407))
        hf.save_pretrained(root / "text_encoder", safe_serialization=True)
    write_tokenizer(root / "tokenizer", pad=pad)
    sched = scheduler or (PNDM_CONFIG if kind == "inpainting" else DDIM_CONFIG)
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))
    pipe = "StableDiffusionInpaintPipeline" if kind == "inpainting" else "StableDiffusionPipeline"
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": pipe, "_diffusers_version": "0.27.0", "requires_safety_checker": False,
        "feature_extractor": [None, None], "safety_checker": [None, None],
        "scheduler": ["diffusers", sched["_class_name"]], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]}))
    return root


# ----------------------------------------------------------------------------- the official steps
class Components:
    """The folder's parts loaded the way a diffusers pipeline loads them (transformers for text)."""

    def __init__(self, folder: Path, scheduler_class: str | None = None):
        import diffusers
        from transformers import CLIPTextModel, CLIPTokenizer

        cfg = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        cls = getattr(diffusers, scheduler_class or cfg["_class_name"])
        self.scheduler = cls.from_pretrained(str(folder), subfolder="scheduler")
        self.vae = diffusers.AutoencoderKL.from_pretrained(str(folder), subfolder="vae").eval()
        self.unet = diffusers.UNet2DConditionModel.from_pretrained(str(folder), subfolder="unet").eval()
        self.text_encoder = CLIPTextModel.from_pretrained(str(folder), subfolder="text_encoder").eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(str(folder), subfolder="tokenizer")
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)


def _split_levels(prompts: list[str]) -> tuple[list[int], list[str]]:
    """The official pipelines' prefix handling (level before the marker, 0 without one)."""
    res, out = [], []
    for p in prompts:
        res.append(int(p.split(LEVEL)[0]) if LEVEL in p else 0)
        out.append(p.split(LEVEL)[-1])
    return res, out


def _encode_prompt(c: Components, prompts: list[str], do_cfg: bool):
    ids = c.tokenizer(prompts, padding="max_length", max_length=c.tokenizer.model_max_length, truncation=True,
                      return_tensors="pt").input_ids
    emb = c.text_encoder(ids)[0]
    if not do_cfg:
        return emb
    uids = c.tokenizer([""] * len(prompts), padding="max_length", max_length=emb.shape[1], truncation=True,
                       return_tensors="pt").input_ids
    return torch.cat([c.text_encoder(uids)[0], emb])


def _extra_step_kwargs(scheduler, generator, eta: float = 0.0) -> dict:
    params = set(inspect.signature(scheduler.step).parameters)
    kw = {}
    if "eta" in params:
        kw["eta"] = eta
    if "generator" in params:
        kw["generator"] = generator
    return kw


def _denoise(c, unet_input, t, emb, res, do_cfg, guidance_scale):
    r = torch.tensor(res, dtype=t.dtype)
    r_in = torch.cat([torch.zeros_like(r), r]) if do_cfg else r
    eps = c.unet(unet_input, t, encoder_hidden_states=emb, class_labels=r_in, return_dict=False)[0]
    if do_cfg:
        eps_u, eps_c = eps.chunk(2)
        eps = eps_u + guidance_scale * (eps_c - eps_u)
    return eps


@torch.no_grad()
def official_text2image(c: Components, prompts: list[str], *, steps: int, guidance_scale: float,
                        latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The steps of ``pipeline_text2earth_diffusion.py`` (output_type="latent")."""
    res, prompts = _split_levels(prompts)
    do_cfg = guidance_scale > 1
    emb = _encode_prompt(c, prompts, do_cfg)
    c.scheduler.set_timesteps(steps)
    timesteps = c.scheduler.timesteps
    lat = latents * c.scheduler.init_noise_sigma
    extra = _extra_step_kwargs(c.scheduler, generator)
    for t in timesteps:
        inp = torch.cat([lat] * 2) if do_cfg else lat
        inp = c.scheduler.scale_model_input(inp, t)
        eps = _denoise(c, inp, t, emb, res, do_cfg, guidance_scale)
        lat = c.scheduler.step(eps, t, lat, **extra, return_dict=False)[0]
    return lat


@torch.no_grad()
def official_inpaint(c: Components, prompts: list[str], image, mask_image, *, height: int, width: int,
                     steps: int, guidance_scale: float, latents: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """The steps of ``pipeline_text2earth_diffusion_inpaint.py`` at strength 1 (output_type="latent"),
    for a 9-channel UNet and for a 4-channel one (known latents re-noised and blended in)."""
    from diffusers.image_processor import VaeImageProcessor

    res, prompts = _split_levels(prompts)
    do_cfg = guidance_scale > 1
    emb = _encode_prompt(c, prompts, do_cfg)
    s = c.scheduler
    s.set_timesteps(steps)
    init_timestep = min(int(steps * 1.0), steps)
    t_start = max(steps - init_timestep, 0)
    timesteps = s.timesteps[t_start * s.order:]
    if hasattr(s, "set_begin_index"):
        s.set_begin_index(t_start * s.order)
    vsf = c.vae_scale_factor
    image_processor = VaeImageProcessor(vae_scale_factor=vsf)
    mask_processor = VaeImageProcessor(vae_scale_factor=vsf, do_normalize=False, do_binarize=False,
                                       do_convert_grayscale=True)
    init_image = image_processor.preprocess(image, height=height, width=width).to(torch.float32)
    n_unet = c.unet.config.in_channels
    sf = c.vae.config.scaling_factor
    noise = latents
    image_latents = None
    if n_unet == 4:
        image_latents = sf * c.vae.encode(init_image).latent_dist.sample(generator)
    lat = noise * s.init_noise_sigma
    mask_condition = mask_processor.preprocess(mask_image, height=height, width=width)
    masked_image = init_image * (mask_condition < 0.5)
    mask = F.interpolate(mask_condition, size=(height // vsf, width // vsf))
    masked_latents = sf * c.vae.encode(masked_image).latent_dist.sample(generator)
    if do_cfg:
        mask, masked_latents = torch.cat([mask] * 2), torch.cat([masked_latents] * 2)
    extra = _extra_step_kwargs(s, generator)
    for i, t in enumerate(timesteps):
        inp = torch.cat([lat] * 2) if do_cfg else lat
        inp = s.scale_model_input(inp, t)
        if n_unet == 9:
            inp = torch.cat([inp, mask, masked_latents], dim=1)
        eps = _denoise(c, inp, t, emb, res, do_cfg, guidance_scale)
        lat = s.step(eps, t, lat, **extra, return_dict=False)[0]
        if n_unet == 4:
            init_mask = mask.chunk(2)[0] if do_cfg else mask
            proper = image_latents
            if i < len(timesteps) - 1:
                proper = s.add_noise(proper, noise, torch.tensor([timesteps[i + 1]]))
            lat = (1 - init_mask) * proper + init_mask * lat
    return lat
