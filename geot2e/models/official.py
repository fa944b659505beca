"""Official Text2Earth diffusers folders, loaded from local disk and run as the official pipelines run them.

An official folder holds ``vae/``, ``unet/``, ``text_encoder/``, ``tokenizer/`` and
``scheduler/`` (diffusers layout, safetensors weights). Two kinds exist:

- **Text2Earth-inpainting**: a 9-channel UNet (``[latents, mask, masked-image latents]``),
  run as ``pipeline_text2earth_diffusion_inpaint.py`` runs it;
- **Text2Earth** (text-to-image): a 4-channel UNet, run as ``pipeline_text2earth_diffusion.py``
  runs it; with known pixels around the area to fill (the engine's second-pass tiles, or
  ``inpaint`` with this model) the known area's latents are blended in after every step,
  as the official inpainting pipeline does with a 4-channel UNet.

Both take the resolution as a class label, the Google map level ℓ = 17 − log2(GSD [m])
(:class:`GoogleLevel`: rounded to the trained integer levels 10…18, 0 = unknown). A prompt
may carry the official prefix ``"{ℓ}_GOOGLE_LEVEL_"``: it is stripped and its level used
(:func:`parse_level_prefix`). :func:`load_official` wraps the components in
:class:`OfficialText2Earth`, a :class:`~geot2e.models.Text2Earth` whose ``inpaint`` takes the
same arguments as geot2e's own models (GSD in metres, prompts, guidance ω...).

Only ``*.safetensors`` weights are read; ``.bin``/``.pt``/``.ckpt`` pickles are refused. The
scheduler class comes from an allow-list (:mod:`geot2e.models.official_scheduler`); the text
tower and tokenizer from :mod:`geot2e.models.official_text`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, Geot2eWarning, GSDRangeWarning, ParameterError
from ..sampling import GUIDANCE
from .config import (ResolutionConfig, SchedulerConfig, Text2EarthConfig, UNetConfig, VAEConfig)
from .fill import apply_harmonize, harmonize_mode
from .official_scheduler import FALLBACK_CONFIG, build_scheduler, check_scheduler_config, step_kwargs
from .official_text import OfficialTextEncoder, load_text_encoder
from .resolution import ResolutionEmbedding
from .text2earth import Text2Earth, tile_inputs

__all__ = ["load_official", "OfficialText2Earth", "GoogleLevel", "google_level", "parse_level_prefix",
           "level_gsd", "OFFICIAL_GSD_RANGE", "TRAINED_LEVELS", "OFFICIAL_STEPS"]

#: GSDs of Google levels 18 … 10, the range Text2Earth was trained on (metres).
OFFICIAL_GSD_RANGE = (0.5, 128.0)
#: the integer Google levels Text2Earth was trained on (0 is the null label)
TRAINED_LEVELS = (10, 18)
#: denoising steps of the official README examples (the default for official models)
OFFICIAL_STEPS = 50
LEVEL_MARKER = "_GOOGLE_LEVEL_"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_VARIANT = re.compile(r"\.(fp16|bf16|fp32)\.safetensors$")


def google_level(gsd: torch.Tensor) -> torch.Tensor:
    """Google map level ℓ = 17 − log2(GSD [m]) (continuous; ℓ = 18 at 0.5 m, 10 at 128 m)."""
    return 17.0 - torch.log2(gsd.float().clamp_min(1e-6))


def level_gsd(level: int) -> float:
    """GSD in metres of an integer Google level: 2 ** (17 − ℓ) (ℓ = 16 → 2 m)."""
    return float(2.0 ** (17 - int(level)))


def parse_level_prefix(prompt: str) -> tuple[int | None, str]:
    """Split an official ``"{ℓ}_GOOGLE_LEVEL_{text}"`` prompt into ``(ℓ, text)``.

    As in the official pipelines, the level is the integer before the first marker and the
    text what follows the last one; a prompt without the marker gives ``(None, prompt)``.

    >>> parse_level_prefix("16_GOOGLE_LEVEL_Seven green circular farmlands")
    (16, 'Seven green circular farmlands')
    >>> parse_level_prefix("a harbour")
    (None, 'a harbour')

    Raises
    ------
    ParameterError
        The text before the marker is not a whole number.
    """
    if LEVEL_MARKER not in prompt:
        return None, prompt
    head, text = prompt.split(LEVEL_MARKER)[0], prompt.split(LEVEL_MARKER)[-1]
    try:
        level = int(head.strip())
    except ValueError:
        raise ParameterError(f"prompt {prompt[:60]!r}: the official resolution prefix is "
                             f"'{{level}}{LEVEL_MARKER}' with a whole Google level (10-18, 0 = unknown) before "
                             f"it, e.g. '16{LEVEL_MARKER}farmland'; got {head!r}.") from None
    return level, text


class GoogleLevel(nn.Module):
    """Stands in for the resolution embedding of an official model: GSD → UNet class label.

    ``forward(gsd, drop)`` has the signature of :class:`ResolutionEmbedding`: GSD per sample
    in metres (NaN = unknown), ``drop`` marks samples that take the null condition. The
    result is the trained integer level nearest to ℓ = 17 − log2(GSD): rounded, then clamped
    to 10…18 (0.5 m … 128 m; the API warns outside that range), or 0 (the null label) where
    unknown/dropped. With an embedding table (``num_classes``) the labels are ``long`` and
    also clamped to the table; with a sinusoidal ("timestep") class embedding they are float
    (the official pipelines pass them in the timesteps' dtype).
    """

    def __init__(self, *, num_classes: int | None = None):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, gsd: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        unknown = torch.isnan(gsd)
        if drop is not None:
            unknown = unknown | drop.to(unknown.device)
        lvl = google_level(torch.where(unknown, torch.ones_like(gsd), gsd)).round().clamp(*TRAINED_LEVELS)
        if self.num_classes is not None:
            lvl = lvl.clamp(max=max(self.num_classes - 1, 1))
            return torch.where(unknown, torch.zeros_like(lvl), lvl).long()
        return torch.where(unknown, torch.zeros_like(lvl), lvl)


class OfficialText2Earth(Text2Earth):
    """A :class:`Text2Earth` around the components of an official diffusers folder.

    :meth:`inpaint` runs the official pipelines' steps: scheduler from the folder
    (:meth:`make_scheduler`), nearest-neighbour mask at latent size, masked pixels set to 0,
    integer Google levels as class labels (null label 0 with the null text ``""``), guidance
    ``ε∅ + s·(ε − ε∅)`` with s = 1 + ω (one UNet pass when ω = 0), the 4-channel blend of known
    latents for the text-to-image model. Build it with :func:`load_official`.

    Attributes
    ----------
    kind : {"inpainting", "text2image"}
    scheduler_config : dict
        The folder's checked ``scheduler_config.json``.
    sampling_defaults : dict
        What the public functions use when ``steps``/``scheduler``/``harmonize`` are not
        given: 50 steps, the folder's scheduler (Euler for text-to-image, as the README),
        no colour harmonisation.
    fixed_uint8_range : bool
        True: 8-bit rasters are scaled with the fixed 0–255 range (x / 127.5 − 1), as the
        official image processor does, instead of percentiles.
    """

    fixed_uint8_range = True

    def __init__(self, config: Text2EarthConfig, *, vae: nn.Module, unet: nn.Module,
                 text_encoder: OfficialTextEncoder, resolution: GoogleLevel, kind: str = "inpainting",
                 scheduler_config: dict[str, Any] | None = None):
        nn.Module.__init__(self)  # components come loaded; Text2Earth.__init__ would build new ones
        config.validate()
        if kind not in ("inpainting", "text2image"):
            raise ValueError(f"kind must be 'inpainting' or 'text2image', got {kind!r}")
        self.config = config
        self.vae = vae
        self.unet = unet
        self.text_encoder = text_encoder
        self.resolution = resolution
        self.kind = kind
        self.scheduler_config = check_scheduler_config(dict(scheduler_config or FALLBACK_CONFIG),
                                                       source="scheduler_config")
        default_sched = self.scheduler_config["_class_name"] if kind == "inpainting" else "EulerDiscreteScheduler"
        self.sampling_defaults = {"steps": OFFICIAL_STEPS, "scheduler": default_sched, "harmonize": "none"}
        self.source: str | None = None
        self.checkpoint_hash: str = "unsaved"
        self.autocast_dtype: torch.dtype | None = None
        self.unet_calls = 0

    def save_pretrained(self, path: str | os.PathLike, *, dtype: torch.dtype | None = None) -> Path:
        raise CheckpointError(f"{self.source}: an official Text2Earth model is used from its own folder; "
                              "it is not re-saved in geot2e's layout. Load it again with "
                              "geot2e.load_model(<that folder>).")

    def training_loss(self, *args, **kwargs):
        raise ParameterError("official Text2Earth models are used as they are; geot2e does not train them "
                             "(train a geot2e model with `geot2e train`).")

    # ------------------------------------------------------------------ official building blocks
    def make_scheduler(self, name: str = "auto"):
        """A fresh scheduler configured from the folder's ``scheduler_config.json``.

        ``"auto"``: the folder's class (inpainting) or Euler (text-to-image, as the README);
        a geot2e name (``"ddim"``, ``"euler"``, ``"dpmsolver++"``, ``"ddpm"``) or an allow-listed
        diffusers class name swaps the class and keeps the folder's configuration.
        """
        if name == "auto":
            name = self.sampling_defaults["scheduler"]
        return build_scheduler(self.scheduler_config, name)

    def masked_condition(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask at latent size, latents of the masked image), the official way: masked pixels
        (mask ≥ 0.5) set to 0, the mask resized by nearest neighbour (each latent cell takes the
        mask value of its top-left pixel)."""
        xm = x * (mask < 0.5).to(x.dtype)
        zm = self.encode_images(xm)
        m_lat = F.interpolate(mask, size=zm.shape[-2:])
        return m_lat, zm

    def condition(self, prompts, gsd, batch: int) -> tuple[list[str], torch.Tensor]:
        """Texts without level prefixes and the class label per sample.

        The label is the GSD's level (:class:`GoogleLevel`), or the level of a
        ``"{ℓ}_GOOGLE_LEVEL_"`` prefix, which wins as in the official pipelines (with a warning
        when it differs from the GSD's level; a level outside 10…18 is clamped with a
        :class:`~geot2e.errors.GSDRangeWarning`).
        """
        texts = self._prompts(prompts, batch)
        g = ResolutionEmbedding.as_tensor(gsd, batch, self.device)
        labels = self.resolution(g)
        out = []
        for i, p in enumerate(texts):
            level, text = parse_level_prefix(p)
            out.append(text)
            if level is None:
                continue
            if level != 0 and not TRAINED_LEVELS[0] <= level <= TRAINED_LEVELS[1]:
                clamped = min(max(level, TRAINED_LEVELS[0]), TRAINED_LEVELS[1])
                warnings.warn(f"prompt prefix level {level} is outside the trained Google levels "
                              f"{TRAINED_LEVELS[0]}-{TRAINED_LEVELS[1]} ({OFFICIAL_GSD_RANGE[1]:g}-"
                              f"{OFFICIAL_GSD_RANGE[0]:g} m); using {clamped}.", GSDRangeWarning, stacklevel=3)
                level = clamped
            if not torch.isnan(g[i]) and level != int(labels[i]):
                what = "unknown resolution" if level == 0 else f"{level_gsd(level):g} m"
                warnings.warn(f"the prompt's prefix asks for Google level {level} ({what}) but the raster's GSD "
                              f"{float(g[i]):.3g} m is level {int(labels[i])}; the prefix wins (as in the official "
                              "pipelines). Drop the prefix to condition on the raster's GSD.",
                              Geot2eWarning, stacklevel=3)
            labels[i] = level
        return out, labels

    def _unet(self, inp: torch.Tensor, t: torch.Tensor, text: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.unet_calls += 1
        if self.autocast_dtype is not None:
            with torch.autocast(device_type=inp.device.type, dtype=self.autocast_dtype):
                out = self.unet(inp, t, encoder_hidden_states=text, class_labels=labels).sample
            return out.float()
        return self.unet(inp, t, encoder_hidden_states=text, class_labels=labels).sample

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def inpaint(self, images: torch.Tensor, masks: torch.Tensor, *,
                gsd: float | Sequence[float | None] | torch.Tensor | None = None,
                prompts: str | Sequence[str] | None = None, guidance: float = GUIDANCE,
                guidance_text: float | None = None, guidance_res: float | None = None,
                steps: int = OFFICIAL_STEPS, scheduler: str = "auto", noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None, harmonize: bool | str = False,
                guidance_interval: float = 1.0, callback: Callable[[int, int], None] | None = None,
                output_type: str = "image") -> torch.Tensor:
        """Synthesize the masked pixels of a batch of tiles, with the official pipelines' steps.

        Arguments as :meth:`Text2Earth.inpaint`, with the official defaults: ``steps=50``,
        ``scheduler="auto"`` (:meth:`make_scheduler`), ``harmonize=False``. ``guidance`` is ω:
        the official ``guidance_scale`` is 1 + ω (README: 4.0 ↔ ω = 3). Stochastic schedulers
        draw their step noise from ``generator`` or, when None, from a generator seeded by
        ``noise`` (so tiles stay reproducible). ``output_type="latent"`` returns the final
        latents instead of decoded images (as the diffusers pipelines).
        """
        mode = harmonize_mode(harmonize)
        if output_type not in ("image", "latent"):
            raise ParameterError(f"output_type must be 'image' or 'latent', got {output_type!r}.")
        dev = self.device
        x, m = tile_inputs(images, masks, dev, self.vae_factor)
        b, _, h, w = x.shape
        texts, labels = self.condition(prompts, gsd, b)
        null_labels = torch.zeros_like(labels)
        text_c = self.encode_prompts(texts)
        null_t = self.null_text(b)
        m_lat, zm = self.masked_condition(x, m)
        sched = self.make_scheduler(scheduler)
        sched.set_timesteps(steps, device=dev)
        timesteps = sched.timesteps
        blend = self.kind == "text2image" and bool((m_lat < 0.5).any())
        if (self.kind == "inpainting" or blend) and hasattr(sched, "set_begin_index"):
            sched.set_begin_index(0)  # the inpainting pipeline's get_timesteps at strength 1
        if noise is None:
            noise = torch.randn((b, *self.latent_shape(h, w)), generator=generator, device="cpu")
        noise = noise.to(dev, torch.float32)
        if generator is None and "generator" in step_kwargs(sched, torch.Generator()):
            digest = hashlib.sha256(noise.detach().cpu().numpy().tobytes()).digest()
            generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2 ** 63 - 1))
        extra = step_kwargs(sched, generator)
        z = noise * sched.init_noise_sigma
        split = guidance_text is not None or guidance_res is not None
        n_guided = int(math.ceil(float(guidance_interval) * len(timesteps) - 1e-9))
        for i, t in enumerate(timesteps):
            guided = i < n_guided and (split or guidance > 0)
            if not guided:
                conds = [(text_c, labels)]
            elif split:
                conds = [(text_c, labels), (null_t, labels), (text_c, null_labels)]
            else:
                conds = [(null_t, null_labels), (text_c, labels)]  # the official order: [uncond, cond]
            k = len(conds)
            zin = sched.scale_model_input(torch.cat([z] * k) if k > 1 else z, t)
            if self.kind == "inpainting":
                zin = torch.cat([zin, torch.cat([m_lat] * k), torch.cat([zm] * k)], dim=1)
            eps = self._unet(zin, t, torch.cat([c[0] for c in conds]), torch.cat([c[1] for c in conds]))
            if guided and split:
                wt, wr = guidance_text or 0.0, guidance_res or 0.0
                e_c, e_nt, e_nr = eps.chunk(3)
                eps = e_c + wt * (e_c - e_nt) + wr * (e_c - e_nr)
            elif guided:
                e_u, e_c = eps.chunk(2)
                eps = e_u + (1.0 + guidance) * (e_c - e_u)
            z = sched.step(eps, t, z, **extra, return_dict=False)[0]
            if blend:  # the inpainting pipeline with a 4-channel UNet: known latents, re-noised
                keep = zm
                if i < len(timesteps) - 1:
                    keep = sched.add_noise(zm, noise, timesteps[i + 1:i + 2])
                z = (1 - m_lat) * keep + m_lat * z
            if callback is not None:
                callback(i + 1, len(timesteps))
        if output_type == "latent":
            return z
        return apply_harmonize(self.decode_latents(z).float(), x, m, mode)


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


def _scheduler_files(p: Path) -> tuple[dict[str, Any], SchedulerConfig]:
    """The folder's checked scheduler config (the fallback DDIM config when there is none) and
    geot2e's :class:`SchedulerConfig` view of its noise schedule."""
    f = p / "scheduler" / "scheduler_config.json"
    d = check_scheduler_config(_read_json(f), source=str(f)) if f.is_file() else dict(FALLBACK_CONFIG)
    base = SchedulerConfig()
    kw = {k: d.get(k, getattr(base, k)) for k in ("num_train_timesteps", "beta_schedule", "beta_start",
                                                    "beta_end", "prediction_type")}
    if kw["beta_schedule"] not in ("scaled_linear", "linear", "squaredcos_cap_v2"):
        kw["beta_schedule"] = base.beta_schedule  # only recorded; sampling uses the folder's config as it is
    if kw["prediction_type"] not in ("epsilon", "v_prediction"):
        raise CheckpointError(f"{f}: prediction_type {kw['prediction_type']!r} is not supported "
                              "(epsilon or v_prediction).")
    return d, SchedulerConfig(**kw)


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
    """Load an official Text2Earth (text-to-image) or Text2Earth-inpainting folder from local disk.

    Parameters
    ----------
    path : folder with ``vae/``, ``unet/``, ``text_encoder/`` (and optionally ``tokenizer/``,
        ``scheduler/``), diffusers layout, safetensors weights.
    device : torch device for the model.

    Returns
    -------
    OfficialText2Earth
        ``inpaint(images, masks, gsd=..., prompts=..., guidance=...)`` as :class:`Text2Earth`;
        the GSD becomes the class label ℓ = round(17 − log2(GSD)) in 10…18 (None → 0, the null
        label). ``kind`` is ``"inpainting"`` (9-channel UNet) or ``"text2image"`` (4-channel UNet).

    Raises
    ------
    CheckpointError
        Pickle-only components, missing/corrupt files, a UNet of another input width, a
        scheduler class outside the allow-list, a tokenizer that OpenCLIP's cannot reproduce,
        or components that do not fit together.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"{p}: not a folder; an official Text2Earth checkpoint is a diffusers folder.")
    vae_cfg = _read_json(p / "vae" / "config.json")
    unet_cfg = _read_json(p / "unet" / "config.json")
    lc = vae_cfg.get("latent_channels", 4)
    cin, cout = unet_cfg.get("in_channels"), unet_cfg.get("out_channels", 4)
    kinds = {2 * lc + 1: "inpainting", lc: "text2image"}
    if cin not in kinds or cout != lc:
        raise CheckpointError(f"{p / 'unet' / 'config.json'}: in_channels={cin}, out_channels={cout}; geot2e runs "
                              f"the Text2Earth-inpainting UNet (in_channels = 2x{lc}+1 = {2 * lc + 1}: latents, "
                              f"mask, masked-image latents) or the Text2Earth text-to-image UNet (in_channels = "
                              f"{lc}), both with out_channels = {lc}.")
    kind = kinds[cin]
    cet, ncls = unet_cfg.get("class_embed_type"), unet_cfg.get("num_class_embeds")
    if cet not in (None, "timestep") or unet_cfg.get("addition_embed_type") is not None:
        raise CheckpointError(f"{p / 'unet' / 'config.json'}: class_embed_type={cet!r}, addition_embed_type="
                              f"{unet_cfg.get('addition_embed_type')!r} are not supported; the resolution "
                              "must be a Google-level class label (class_embed_type 'timestep' or num_class_embeds).")
    if unet_cfg.get("time_cond_proj_dim") is not None:
        raise CheckpointError(f"{p / 'unet' / 'config.json'}: time_cond_proj_dim is set (a guidance-distilled "
                              "UNet); Text2Earth's UNets have none.")
    if vae_cfg.get("shift_factor") not in (None, 0, 0.0):
        raise CheckpointError(f"{p / 'vae' / 'config.json'}: VAEs with a latent shift_factor are not supported.")
    sched_cfg, sched = _scheduler_files(p)

    vae = _load_diffusers(AutoencoderKL, p / "vae")
    unet = _load_diffusers(UNet2DConditionModel, p / "unet")
    text = load_text_encoder(p / "text_encoder", _weight_files(p / "text_encoder"),
                             expect_width=unet.config.cross_attention_dim, tokenizer_dir=p / "tokenizer")
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
        resolution=ResolutionConfig(gsd_min=level_gsd(TRAINED_LEVELS[1]), gsd_max=level_gsd(TRAINED_LEVELS[0])),
        scheduler=sched,
        trained_gsd_range=list(OFFICIAL_GSD_RANGE),
        model_id=f"text2earth-official-{kind}:{p.resolve().name}",
        masked_fill="zero",  # the official pipelines: masked image = image × (mask < 0.5)
    )
    config.validate(source=str(p))
    model = OfficialText2Earth(config, vae=vae, unet=unet, text_encoder=text, resolution=level, kind=kind,
                               scheduler_config=sched_cfg)
    model.source = str(p.resolve())
    model.checkpoint_hash = _folder_hash(p)
    model.eval()
    return model.to(device)
