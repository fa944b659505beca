"""Official Text2Earth(-inpainting) diffusers folders, loaded from local disk (safetensors only).

An official folder holds ``vae/``, ``unet/`` and ``text_encoder/`` (and possibly
``scheduler/``, ``tokenizer/``): a 9-channel inpainting ``UNet2DConditionModel`` whose class
embedding takes the Google map level ℓ = 17 − log2(GSD) (0 = unknown resolution), an
``AutoencoderKL`` and a CLIP text tower. :func:`load_official` wraps them in
:class:`OfficialText2Earth`, a :class:`~geot2e.models.Text2Earth` whose ``inpaint`` takes the
same arguments (GSD in metres, prompts, guidance...) and maps the GSD to ℓ.

Only ``*.safetensors`` weights are read; ``.bin``/``.pt``/``.ckpt`` pickles are refused.
The text tower may be stored in OpenCLIP naming (``token_embedding.weight``,
``transformer.resblocks.N...``, optionally under ``text.``) or in Hugging Face
``CLIPTextModel`` naming (``text_model.*``, as diffusers pipelines ship it); the latter is
converted to the OpenCLIP tower on load (no ``transformers`` needed).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, Geot2eWarning
from .config import (ResolutionConfig, SchedulerConfig, Text2EarthConfig, TextConfig, UNetConfig,
                     VAEConfig)
from .text import TextEncoder
from .text2earth import Text2Earth

__all__ = ["load_official", "OfficialText2Earth", "GoogleLevel", "google_level", "OFFICIAL_GSD_RANGE"]

#: GSDs of Google levels 18 … 10, the range Text2Earth was trained on (metres).
OFFICIAL_GSD_RANGE = (0.5, 128.0)
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_VARIANT = re.compile(r"\.(fp16|bf16|fp32)\.safetensors$")
# keys of a CLIP checkpoint that the text tower does not use (tokens only)
_TEXT_IGNORED = re.compile(r"^(visual\.|logit_scale|logit_bias|text_projection|attn_mask|"
                           r"(text_model\.)?embeddings\.position_ids)")


def google_level(gsd: torch.Tensor) -> torch.Tensor:
    """Google map level ℓ = 17 − log2(GSD [m]) (continuous; ℓ = 18 at 0.5 m, 10 at 128 m)."""
    return 17.0 - torch.log2(gsd.float().clamp_min(1e-6))


class GoogleLevel(nn.Module):
    """Stands in for the resolution embedding of an official model: GSD → UNet class label.

    ``forward(gsd, drop)`` has the signature of :class:`ResolutionEmbedding`: GSD per sample
    in metres (NaN = unknown), ``drop`` marks samples that take the null condition. The
    result is ℓ = 17 − log2(GSD), or 0 (the null label) where unknown/dropped. Known GSDs
    are clamped to ℓ ≥ 1 so that no GSD can collide with the null label. With an embedding
    table (``num_classes``) ℓ is rounded and clamped to the table; with a sinusoidal
    ("timestep") class embedding it stays continuous.
    """

    def __init__(self, *, num_classes: int | None = None):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, gsd: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        unknown = torch.isnan(gsd)
        if drop is not None:
            unknown = unknown | drop.to(unknown.device)
        lvl = google_level(torch.where(unknown, torch.ones_like(gsd), gsd))
        if self.num_classes is not None:
            lvl = lvl.round().clamp(1, max(self.num_classes - 1, 1))
            return torch.where(unknown, torch.zeros_like(lvl), lvl).long()
        lvl = lvl.clamp_min(1.0)
        return torch.where(unknown, torch.zeros_like(lvl), lvl)


class OfficialText2Earth(Text2Earth):
    """A :class:`Text2Earth` around the components of an official diffusers folder.

    Sampling, guidance (ε = (1+ω)·ε(τ,ℓ) − ω·ε(τ∅,0)), masks and the batched ``inpaint``
    are those of :class:`Text2Earth`; only the resolution condition differs (a class label
    instead of an added embedding vector). Build it with :func:`load_official`.
    """

    def __init__(self, config: Text2EarthConfig, *, vae: nn.Module, unet: nn.Module,
                 text_encoder: TextEncoder, resolution: GoogleLevel):
        nn.Module.__init__(self)  # components come loaded; Text2Earth.__init__ would build new ones
        config.validate()
        self.config = config
        self.vae = vae
        self.unet = unet
        self.text_encoder = text_encoder
        self.resolution = resolution
        self.source: str | None = None
        self.checkpoint_hash: str = "unsaved"
        self.autocast_dtype: torch.dtype | None = None
        self.unet_calls = 0

    def save_pretrained(self, path: str | os.PathLike, *, dtype: torch.dtype | None = None) -> Path:
        raise CheckpointError(f"{self.source}: an official Text2Earth model is used from its own folder; "
                              "it is not re-saved in geot2e's layout. Load it again with "
                              "geot2e.load_model(<that folder>).")


# ----------------------------------------------------------------------------- helpers
def _read_json(f: Path) -> dict[str, Any]:
    if not f.is_file():
        raise CheckpointError(f"{f}: missing. An official Text2Earth folder holds vae/, unet/ and text_encoder/, "
                              "each with config.json (text_encoder: optional) and *.safetensors weights.")
    try:
        d = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f}: not valid JSON ({e}).") from e
    if not isinstance(d, dict):
        raise CheckpointError(f"{f}: expected a JSON object.")
    return d


def _weight_files(d: Path) -> list[Path]:
    """The safetensors files of one component folder (plain files preferred over variants);
    refuses folders holding only pickles and checks each file's header and size."""
    from safetensors import safe_open

    if not d.is_dir():
        raise CheckpointError(f"{d}: missing component folder of an official Text2Earth checkpoint "
                              "(expected vae/, unet/ and text_encoder/).")
    files = sorted(q for q in d.iterdir() if q.name.endswith(".safetensors"))
    if not files:
        pickles = sorted(q.name for q in d.iterdir() if q.suffix.lower() in _PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(f"{d}: only pickle weights found ({', '.join(pickles)}); they are never loaded "
                                  "(unpickling can run arbitrary code). Convert them to .safetensors "
                                  "(e.g. diffusers save_pretrained(..., safe_serialization=True)).")
        raise CheckpointError(f"{d}: no *.safetensors weights found.")
    plain = [q for q in files if not _VARIANT.search(q.name)]
    files = plain or files
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                fh.keys()
            size = f.stat().st_size
            with open(f, "rb") as raw:
                n = int.from_bytes(raw.read(8), "little")
                header = json.loads(raw.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if size < 8 + n + end:
                raise ValueError(f"file is {size} bytes, its header needs {8 + n + end}")
        except Exception as e:  # noqa: BLE001 - any parse failure means a corrupt file
            raise CheckpointError(f"{f}: corrupt or unreadable safetensors file ({e}).") from e
    return files


def _variant(files: list[Path]) -> str | None:
    m = _VARIANT.search(files[0].name)
    return m.group(1) if m else None


def _load_diffusers(cls, d: Path):
    files = _weight_files(d)
    _read_json(d / "config.json")
    try:
        return cls.from_pretrained(str(d), use_safetensors=True, local_files_only=True,
                                   torch_dtype=torch.float32, variant=_variant(files))
    except Exception as e:  # noqa: BLE001 - diffusers raises many types; re-raised typed
        raise CheckpointError(f"{files[0]}: could not be loaded as a diffusers {cls.__name__} with "
                              f"{d / 'config.json'} ({type(e).__name__}: {e}).") from e


def _hf_clip_to_open_clip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``CLIPTextModel`` keys → OpenCLIP ``TextTransformer`` keys."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
    # older transformers save under text_model., newer ones without the prefix
    pre = "text_model." if any(k.startswith("text_model.") for k in sd) else ""
    simple = {"embeddings.token_embedding.weight": "token_embedding.weight",
              "embeddings.position_embedding.weight": "positional_embedding",
              "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}
    layer_map = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
                 "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for k, v in sd.items():
        if not k.startswith(pre):
            out[k] = v  # left for the strict check to report
            continue
        kk = k[len(pre):]
        if kk in simple:
            out[simple[kk]] = v
            continue
        m = re.match(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", kk)
        if m is None:
            out[k] = v
            continue
        i, mod, kind = int(m.group(1)), m.group(2), m.group(3)
        if mod in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            qkv.setdefault(i, {}).setdefault(kind, {})[mod[-6]] = v
        elif mod in layer_map:
            out[f"transformer.resblocks.{i}.{layer_map[mod]}.{kind}"] = v
        else:
            out[k] = v
    for i, kinds in qkv.items():
        for kind, parts in kinds.items():
            if set(parts) != {"q", "k", "v"}:
                raise CheckpointError(f"text encoder layer {i}: incomplete q/k/v {kind} weights")
            out[f"transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def _load_text_encoder(d: Path, *, expect_width: int | None) -> TextEncoder:
    from safetensors.torch import load_file

    files = _weight_files(d)
    cfg = _read_json(d / "config.json") if (d / "config.json").is_file() else {}
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(str(f)))
    where = files[0] if len(files) == 1 else d
    hf = any(k.endswith("embeddings.token_embedding.weight") for k in sd)
    if hf:
        sd = _hf_clip_to_open_clip(sd)
    elif any(k.startswith("text.") for k in sd):  # OpenCLIP CustomTextCLIP state dict
        sd = {k[len("text."):]: v for k, v in sd.items() if k.startswith("text.")}
    sd = {k: v for k, v in sd.items() if not _TEXT_IGNORED.match(k)}
    if "token_embedding.weight" not in sd or "positional_embedding" not in sd:
        raise CheckpointError(f"{where}: not a CLIP text tower (no token_embedding.weight / positional_embedding; "
                              f"keys start {sorted(sd)[:3]}).")
    vocab, width = sd["token_embedding.weight"].shape
    ctx = sd["positional_embedding"].shape[0]
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))}
    layers = max(blocks) + 1 if blocks else 0
    text_cfg = cfg.get("text_cfg", cfg) if isinstance(cfg.get("text_cfg", cfg), dict) else cfg
    heads = text_cfg.get("heads") or text_cfg.get("num_attention_heads") or max(width // 64, 1)
    quick = bool(cfg.get("quick_gelu", False)) or text_cfg.get("hidden_act") == "quick_gelu"
    if not (isinstance(heads, int) and heads > 0 and width % heads == 0):
        raise CheckpointError(f"{d / 'config.json'}: {heads!r} attention heads do not divide width {width}.")
    if expect_width is not None and width != expect_width:
        raise CheckpointError(f"{where}: text width {width} does not match the UNet's cross_attention_dim "
                              f"{expect_width}; text_encoder/ and unet/ come from different models.")
    mlp_ratio = sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width if layers else 4.0
    tc = TextConfig(width=int(width), layers=int(layers), heads=int(heads), context_length=int(ctx),
                    vocab_size=int(vocab))
    enc = TextEncoder(tc)
    if quick or mlp_ratio != 4.0:
        from open_clip.model import CLIPTextCfg, _build_text_tower

        enc.tower = _build_text_tower(tc.width, CLIPTextCfg(
            context_length=tc.context_length, vocab_size=tc.vocab_size, width=tc.width, heads=tc.heads,
            layers=tc.layers, mlp_ratio=mlp_ratio, output_tokens=True, proj_type="none"), quick_gelu=quick)
    try:
        enc.tower.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{where}: text-tower weights do not fit a CLIP text transformer of width {width}, "
                              f"{layers} layers, {heads} heads ({e}).") from e
    return enc


def _scheduler_config(p: Path) -> SchedulerConfig:
    f = p / "scheduler" / "scheduler_config.json"
    if not f.is_file():
        return SchedulerConfig()
    d = _read_json(f)
    if d.get("trained_betas") is not None:
        raise CheckpointError(f"{f}: explicit trained_betas are not supported; use a beta_schedule.")
    base = SchedulerConfig()
    kw = {k: d.get(k, getattr(base, k)) for k in ("num_train_timesteps", "beta_schedule", "beta_start",
                                                    "beta_end", "prediction_type")}
    return SchedulerConfig(**kw)


def _folder_hash(p: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file() and q.suffix in (".json", ".safetensors")):
        h.update(f.relative_to(p).as_posix().encode())
        with open(f, "rb") as fh:
            for blk in iter(lambda: fh.read(1 << 20), b""):
                h.update(blk)
    return h.hexdigest()[:16]


def _first(v: Any) -> Any:
    return v[0] if isinstance(v, (list, tuple)) else v


# ----------------------------------------------------------------------------- loader
def load_official(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> OfficialText2Earth:
    """Load an official Text2Earth-inpainting diffusers folder from local disk.

    Parameters
    ----------
    path : folder with ``vae/``, ``unet/``, ``text_encoder/`` (and optionally ``scheduler/``).
    device : torch device for the model.

    Returns
    -------
    OfficialText2Earth
        ``inpaint(images, masks, gsd=..., prompts=..., guidance=...)`` as :class:`Text2Earth`;
        the GSD becomes the class label ℓ = 17 − log2(GSD) (None → 0, the null label).

    Raises
    ------
    CheckpointError
        Pickle-only components, missing/corrupt files, a UNet that is not a 9-channel
        inpainting UNet, or components that do not fit together.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"{p}: not a folder; an official Text2Earth checkpoint is a diffusers folder.")
    vae_cfg = _read_json(p / "vae" / "config.json")
    unet_cfg = _read_json(p / "unet" / "config.json")
    lc = vae_cfg.get("latent_channels", 4)
    if unet_cfg.get("in_channels") != 2 * lc + 1 or unet_cfg.get("out_channels", 4) != lc:
        raise CheckpointError(f"{p / 'unet' / 'config.json'}: in_channels={unet_cfg.get('in_channels')}, "
                              f"out_channels={unet_cfg.get('out_channels')}; geot2e needs the inpainting UNet "
                              f"(in_channels = 2×{lc}+1 = {2 * lc + 1}: latents, mask, masked-image latents). "
                              "Use the Text2Earth-inpainting weights.")
    cet, ncls = unet_cfg.get("class_embed_type"), unet_cfg.get("num_class_embeds")
    if cet not in (None, "timestep") or unet_cfg.get("addition_embed_type") is not None:
        raise CheckpointError(f"{p / 'unet' / 'config.json'}: class_embed_type={cet!r}, addition_embed_type="
                              f"{unet_cfg.get('addition_embed_type')!r} are not supported; the resolution "
                              "must be a Google-level class label (class_embed_type 'timestep' or num_class_embeds).")
    if vae_cfg.get("shift_factor") not in (None, 0, 0.0):
        raise CheckpointError(f"{p / 'vae' / 'config.json'}: VAEs with a latent shift_factor are not supported.")

    vae = _load_diffusers(AutoencoderKL, p / "vae")
    unet = _load_diffusers(UNet2DConditionModel, p / "unet")
    text = _load_text_encoder(p / "text_encoder", expect_width=unet.config.cross_attention_dim)
    if cet is None and ncls is None:
        warnings.warn(f"{p}: the UNet has no class embedding, so the GSD has no effect on this model.",
                      Geot2eWarning, stacklevel=2)
    level = GoogleLevel(num_classes=ncls if cet is None else None)

    vc, uc = vae.config, unet.config
    bands = int(vc.in_channels)
    names = ["red", "green", "blue", "nir"][:bands] if bands <= 4 else [f"b{i + 1}" for i in range(bands)]
    down = list(uc.down_block_types)
    config = Text2EarthConfig(
        bands=bands, band_names=names,
        vae=VAEConfig(block_out_channels=list(vc.block_out_channels), layers_per_block=int(_first(vc.layers_per_block)),
                      latent_channels=int(vc.latent_channels), norm_num_groups=int(vc.norm_num_groups),
                      scaling_factor=float(vc.scaling_factor if vc.scaling_factor is not None else 1.0)),
        unet=UNetConfig(block_out_channels=list(uc.block_out_channels),
                        layers_per_block=int(_first(uc.layers_per_block)),
                        attention_heads=int(_first(uc.attention_head_dim or 8)),
                        cross_attention_blocks=["CrossAttn" in t for t in down],
                        norm_num_groups=int(uc.norm_num_groups)),
        text=text.cfg,
        resolution=ResolutionConfig(gsd_min=2.0 ** (17 - 18), gsd_max=2.0 ** (17 - 10)),
        scheduler=_scheduler_config(p),
        trained_gsd_range=list(OFFICIAL_GSD_RANGE),
        model_id=f"text2earth-official:{p.resolve().name}",
        masked_fill="zero",  # diffusers inpainting: masked image = image × (1 − mask)
    )
    config.validate(source=str(p))
    model = OfficialText2Earth(config, vae=vae, unet=unet, text_encoder=text, resolution=level)
    model.source = str(p.resolve())
    model.checkpoint_hash = _folder_hash(p)
    model.eval()
    return model.to(device)
