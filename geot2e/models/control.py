"""Image-to-image translation with a ControlNet on the frozen denoiser (pure torch/diffusers).

One ControlNet (:class:`diffusers.ControlNetModel`, a trainable copy of the UNet's encoder
whose outputs are added to the frozen UNet's skip connections through zero-initialised
convolutions) serves every task: the task is part of its conditioning image. The tasks:

``super_resolution``  the guide is the low-resolution image, nearest-replicated onto the
                      fine grid (each coarse pixel an ``s × s`` block, ``s`` = 2 or 4)
``pansharpen``        the same, plus the panchromatic band at the fine resolution
``nir_to_rgb``        the near-infrared band alone
``dehaze``            the hazy image itself (same grid)

:func:`control_image` turns (task, guide, aux band, scale) into the ControlNet's input: the
guide upsampled bicubically from its coarse pixels, the auxiliary band (PAN matched in mean
and standard deviation to the guide's intensity, as component substitution does), a one-hot
task code and the scale. Training (:mod:`geot2e.train.control`) and sampling
(:func:`translate_tiles`) build it with this one function. Resolution tasks end with
iterative back-projection (:func:`back_project`): the result area-averaged to the coarse
grid equals the input there, so the model adds detail and never moves the coarse colours.

Knows no CRS: grids, tiling and units are the engine's (:mod:`geot2e.engine.translate`).
"""
from __future__ import annotations

import json
from pathlib import Path
import torch
import torch.nn.functional as F

from .._fs import atomic_folder

__all__ = ["TASKS", "RESOLUTION_TASKS", "CONTROL_DIR", "CONTROL_CHANNELS", "CONTROL_BANDS", "STRENGTH", "EDGE_PAD",
           "NIR_LINEAR", "NIR_DETAIL", "nir_linear", "nir_detail", "pan_detail", "resolve_strength", "split_control",
           "build_controlnet", "control_image",
           "back_project", "translate_tiles", "dehaze_tiles", "save_controlnet", "load_controlnet", "has_controlnet",
           "controlnet_info"]

TASKS = ("super_resolution", "pansharpen", "nir_to_rgb", "dehaze")   # the one-hot's order (trained weights)
#: tasks whose guide is a coarser image replicated onto the fine grid (scale 2 or 4)
RESOLUTION_TASKS = ("super_resolution", "pansharpen")
#: guide (3) + auxiliary band (1) + task one-hot + scale level (1)
CONTROL_CHANNELS = 3 + 1 + len(TASKS) + 1
#: the sub-folder of a model folder that holds its translation ControlNet
CONTROL_DIR = "translate"
CONTROL_META = "geot2e_control.json"
BACK_PROJECT_ITERS = 3


#: bands of the translation's input per task, in order: the guide's three, then the auxiliary band
CONTROL_BANDS = {"super_resolution": 3, "pansharpen": 4, "nir_to_rgb": 1, "dehaze": 3}


#: where sampling starts by default (``strength``, SDEdit): from the start image (the guide;
#: for ``nir_to_rgb`` the ControlNet's linear NIR → RGB map, :data:`NIR_LINEAR`) noised to this
#: share of the steps; 1 = from pure noise. Chosen on crops of the training regions (never the
#: held-out sets): the resolution tasks score best from 0.3 (and run in a third of the steps),
#: NIR → RGB from 0.5, dehazing from pure noise (model card, "Translation").
STRENGTH = {"super_resolution": 0.3, "pansharpen": 0.3, "nir_to_rgb": 0.5, "dehaze": 1.0}
#: how much of the super-resolution network's spread a sample carries (0: its mean alone).
#: Chosen on crops of the training regions: the smallest that gives one sample 0.7 of the
#: truth's pixel-scale texture on the satellite sets (model card, "Super-resolution")
SR_TEMPERATURE = 0.5
#: the super-resolution network's prediction is averaged over this many of the square's eight
#: symmetries (rotations by 90°, and each mirrored), each undone on its output (geometric
#: self-ensemble; Timofte et al., 2016): held out, 8 gave the mean of 4 +0.06 to +0.09 dB over 1
#: and pan-sharpening +0.02 to +0.17 dB (model card, "Super-resolution"); 1 = a single pass
SR_ENSEMBLE = 8
#: the key of a ControlNet's meta that holds its linear NIR → RGB map, ``{"a": [3], "b": [3]}``:
#: RGB ≈ a·NIR + b per band on the model's [-1, 1] scale, least squares over the control stage's
#: NIR training pairs (:func:`geot2e.train.control.fit_nir_linear`)
NIR_LINEAR = "nir_to_rgb_linear"
#: pixels of reflected input a task's sampling runs with left of each window, then drops: from
#: NIR → RGB's half-way start the denoiser darkens a window's first ~16 columns whatever the
#: content (a mirrored input too; −0.046 ± 0.010 on [-1, 1] over 12 held-out 5 m crops, right
#: edge +0.010, top −0.001), and not with this pad (−0.002 ± 0.005). The same pad on top changes
#: nothing there. A multiple of 16 (the UNet's input grid)
EDGE_PAD = {"nir_to_rgb": 16}
#: NIR → RGB: the result takes the linear map's detail finer than this many pixels
#: (:func:`nir_detail`); 0 keeps the model's own
NIR_DETAIL = 4


def nir_linear(model) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(a, b)`` of the model's ControlNet's linear NIR → RGB map as (1, 3, 1, 1) tensors, or
    None when its meta has none (a ControlNet trained before the map was recorded)."""
    lin = (getattr(model, "controlnet_meta", None) or {}).get(NIR_LINEAR)
    if not lin:
        return None
    dev = getattr(model, "device", "cpu")
    return tuple(torch.tensor(lin[k], dtype=torch.float32, device=dev).view(1, 3, 1, 1) for k in ("a", "b"))


def resolve_strength(task: str, strength: float | None = None, model=None) -> float:
    """The strength a task samples with: ``strength``, or the task's :data:`STRENGTH` when None;
    always 1 for ``nir_to_rgb`` when ``model``'s ControlNet has no linear map to start from."""
    if task == "nir_to_rgb" and nir_linear(model) is None:
        return 1.0
    return float(STRENGTH[task] if strength is None else strength)


def split_control(task: str, control: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(guide, aux)`` of a task's input bands (B, :data:`CONTROL_BANDS`, H, W)."""
    if task == "nir_to_rgb":
        return None, control[:, :1]
    if task == "pansharpen":
        return control[:, :3], control[:, 3:4]
    return control[:, :3], None


def build_controlnet(model):
    """A ControlNet initialised from ``model``'s UNet (its encoder copied, zero convolutions
    out), with a conditioning embedding that downsamples by the VAE factor."""
    from diffusers import ControlNetModel

    f = int(model.vae_factor)
    levels = f.bit_length() - 1                  # stride-2 convolutions to reach the latent grid
    widths = tuple(16 * 2 ** i for i in range(levels + 1))
    return ControlNetModel.from_unet(model.unet, conditioning_channels=CONTROL_CHANNELS,
                                     conditioning_embedding_out_channels=widths).to(model.device, torch.float32)


def _coarse(guide: torch.Tensor, scale: int) -> torch.Tensor:
    """The coarse image of a guide that replicates each coarse pixel over ``scale × scale``."""
    return F.avg_pool2d(guide, scale) if scale > 1 else guide


def _up(coarse: torch.Tensor, scale: int) -> torch.Tensor:
    if scale <= 1:
        return coarse
    return F.interpolate(coarse, scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1)


def control_image(task: str, guide: torch.Tensor | None, aux: torch.Tensor | None, scale: int = 1) -> torch.Tensor:
    """The ControlNet's conditioning image (B, :data:`CONTROL_CHANNELS`, H, W), in [-1, 1].

    Parameters
    ----------
    task : one of :data:`TASKS`.
    guide : (B, 3, H, W) in [-1, 1]: the low-resolution image replicated onto the fine grid
        (resolution tasks), the hazy image (``dehaze``); None for ``nir_to_rgb``.
    aux : (B, 1, H, W) in [-1, 1]: the PAN band (``pansharpen``) or the NIR band
        (``nir_to_rgb``); None otherwise.
    scale : the resolution tasks' factor (2 or 4); 1 otherwise.
    """
    if task not in TASKS:
        from ..errors import ParameterError

        raise ParameterError(f"unknown translation task {task!r}; choose one of {list(TASKS)}.")
    ref = guide if guide is not None else aux
    b, _, h, w = ref.shape
    dev = ref.device
    g = torch.zeros(b, 3, h, w, device=dev) if guide is None else guide.float()
    if task in RESOLUTION_TASKS:
        g = _up(_coarse(g, scale), scale)
    a = torch.zeros(b, 1, h, w, device=dev) if aux is None else aux.float()
    if task == "pansharpen":
        # component substitution's histogram match: PAN takes the intensity's mean and spread,
        # so its gain and offset (another sensor, other units) do not matter, only its pattern
        inten = g.mean(1, keepdim=True)
        mu_a, sd_a = a.mean((2, 3), keepdim=True), a.std((2, 3), keepdim=True).clamp_min(1e-3)
        mu_i, sd_i = inten.mean((2, 3), keepdim=True), inten.std((2, 3), keepdim=True)
        a = ((a - mu_a) / sd_a * sd_i + mu_i).clamp(-1, 1)
    onehot = torch.zeros(b, len(TASKS), h, w, device=dev)
    onehot[:, TASKS.index(task)] = 1.0
    level = torch.full((b, 1, h, w), (torch.log2(torch.tensor(float(max(1, scale)))) / 2).item(), device=dev)
    return torch.cat([g, a, onehot, level], 1)


def back_project(x: torch.Tensor, guide: torch.Tensor, scale: int, iters: int = BACK_PROJECT_ITERS) -> torch.Tensor:
    """Iterative back-projection: correct ``x`` (B, C, H, W) by the bicubic upsampling of its
    coarse residual, so that ``x`` area-averaged by ``scale`` approaches the coarse image of
    ``guide`` (replicated, as :func:`control_image` takes it). Detail finer than the coarse
    pixels stays the model's."""
    if scale <= 1:
        return x
    lo = _coarse(guide.float(), scale)
    for _ in range(iters):
        x = x + F.interpolate(lo - _coarse(x, scale), scale_factor=scale, mode="bicubic", align_corners=False)
    return x


@torch.no_grad()
def translate_tiles(model, task: str, guide: torch.Tensor | None, aux: torch.Tensor | None, *,
                    known: torch.Tensor | None = None, mask: torch.Tensor | None = None, scale: int = 1,
                    strength: float | None = None, **sampling) -> torch.Tensor:
    """Translate a batch of tiles with ``model`` (a :class:`~geot2e.models.Text2Earth` with a
    ControlNet attached, :func:`load_controlnet`).

    ``known``/``mask``: pixels already produced (by neighbouring windows, mask 0) that the
    result must continue; by default every pixel is synthesized (mask 1). ``strength``: where
    sampling starts, from the guide noised to that share of the steps (:data:`STRENGTH` of the
    task by default; 1 = from pure noise; ``nir_to_rgb`` has no RGB guide). ``sampling``: the
    options of :meth:`~geot2e.models.Text2Earth.inpaint` (gsd, prompts, guidance, steps,
    scheduler, noise, ...). Returns (B, 3, H, W) float32 in [-1, 1] (not clipped).
    """
    if task == "dehaze" and getattr(model, "haze_net", None) is not None:
        return dehaze_tiles(model, guide, known=known, mask=mask)
    if task == "super_resolution" and getattr(model, "sr_net", None) is not None:
        return super_resolve_tiles(model, guide, known=known, mask=mask, scale=scale, noise=sampling.get("noise"))
    ref = guide if guide is not None else aux
    b, _, h, w = ref.shape
    if mask is None:
        mask = torch.ones(b, 1, h, w, device=ref.device)
    if known is None:
        known = torch.zeros(b, model.bands, h, w, device=ref.device)
    cond = control_image(task, guide, aux, scale)
    sampling.setdefault("harmonize", "none")
    if task == "pansharpen" and getattr(model, "sr_net", None) is not None:
        # component substitution around the learned upsampling: the PAN's detail in the
        # super-resolution network's expected image (the ControlNet's sample scored lower)
        out = back_project(pan_detail(sr_mean(model, guide, scale), cond[:, 3:4], scale), guide, scale)
        return _harmonize_known(out, known, mask)
    if guide is not None:
        init = cond[:, :3]                                       # the guide, bicubic for the resolution tasks
    else:                                                        # nir_to_rgb: the linear map's colours, if any
        lin = nir_linear(model)
        init = None if lin is None else (lin[0] * cond[:, 3:4] + lin[1]).clamp(-1, 1)
    out = _sample_padded(model, EDGE_PAD.get(task, 0), known, mask, control=cond, init=init,
                         strength=resolve_strength(task, strength, model), **sampling)
    if task == "pansharpen":
        out = pan_detail(out, cond[:, 3:4], scale)
    if task == "nir_to_rgb" and NIR_DETAIL and nir_linear(model) is not None:
        out = nir_detail(out, cond[:, 3:4], nir_linear(model)[0], NIR_DETAIL)
    if task in RESOLUTION_TASKS:
        out = back_project(out, guide, scale)
    return out


def _sample_padded(model, pad: int, known: torch.Tensor, mask: torch.Tensor, **sampling) -> torch.Tensor:
    """``model.inpaint`` with ``pad`` columns of reflected input (and initial noise) left of
    each tile, dropped from the result (:data:`EDGE_PAD`); the plain call when ``pad`` is 0 or
    the tile is too narrow to reflect it."""
    if pad <= 0 or known.shape[-1] <= pad:
        return model.inpaint(known, mask, **sampling)

    def left(v, p=pad):
        return None if v is None else F.pad(v, (p, 0, 0, 0), mode="reflect")

    for k in ("control", "init"):
        sampling[k] = left(sampling.get(k))
    if sampling.get("noise") is not None:
        sampling["noise"] = left(sampling["noise"], pad // int(model.vae_factor))
    return model.inpaint(left(known), left(mask), **sampling)[..., pad:]


def dehaze_tiles(model, hazy: torch.Tensor, *, known: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """``dehaze`` with the model's dehazing network (:mod:`geot2e.models.haze`): the hazy tiles
    (B, 3, H, W) on the model's scale inverted through the scattering model with the
    network's transmission and airlight fields. Deterministic: every sample is the same.
    ``known``/``mask``: pixels neighbouring windows already produced (mask 0); the result is
    bent smoothly onto them at its edge (:func:`~geot2e.models.fill.harmonize`), since two
    windows' fields differ a little where they meet."""
    net = model.haze_net
    p = next(net.parameters())
    return _harmonize_known(net(hazy.to(p.device, p.dtype)).float(), known, mask)


def _harmonize_known(out: torch.Tensor, known: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
    """``out`` bent smoothly onto the pixels neighbouring windows already produced (mask 0) at
    its edge (:func:`~geot2e.models.fill.harmonize`): a deterministic network's results for
    two windows differ a little where they meet."""
    if known is not None and mask is not None and bool((mask < 0.5).any()):
        from .fill import harmonize

        out = harmonize(out, known[:, :out.shape[1]].float(), mask.float())
    return out


def super_resolve_tiles(model, guide: torch.Tensor, *, known: torch.Tensor | None = None,
                        mask: torch.Tensor | None = None, scale: int = 2, noise: torch.Tensor | None = None,
                        temperature: float | None = None) -> torch.Tensor:
    """``super_resolution`` with the model's regression network (:mod:`geot2e.models.sr`): its
    expected fine image of the coarse one plus ``temperature`` (:data:`SR_TEMPERATURE`) times
    its spread times standard normal pixel noise (a draw from the truth's distribution around
    the mean, narrowed): the mean back-projected (:func:`back_project`), the noise less its
    mean over each coarse pixel, so that it never moves one. ``noise``: the engine's keyed
    latent noise of each tile, from which its pixel noise is drawn (:func:`pixel_noise`), so
    that a tile gets the same sample whatever the chunking; temperature 0 is the mean,
    deterministic."""
    t = SR_TEMPERATURE if temperature is None else float(temperature)
    mean, log_sigma = _sr_predict(model, guide, scale)
    out = back_project(mean, guide, scale)
    if t > 0:                              # noise summing to zero over each coarse pixel
        d = t * torch.exp(log_sigma) * pixel_noise(noise, out.shape).to(out.device)
        out = out + d - F.avg_pool2d(d, scale).repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    return _harmonize_known(out, known, mask)


def _symmetry(x: torch.Tensor, k: int, *, inverse: bool = False) -> torch.Tensor:
    """The ``k``-th (0-7) symmetry of the square on ``x``'s last two axes (rotation by k·90°,
    mirrored first for k ≥ 4), or its inverse."""
    if not inverse:
        x = x.flip(-1) if k >= 4 else x
        return torch.rot90(x, k % 4, (-2, -1))
    x = torch.rot90(x, -(k % 4), (-2, -1))
    return x.flip(-1) if k >= 4 else x


def _sr_predict(model, guide: torch.Tensor, scale: int, ensemble: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's ``(mean, log_sigma)`` of ``guide``, averaged over ``ensemble``
    (:data:`SR_ENSEMBLE`) symmetries of the square."""
    net = model.sr_net
    p = next(net.parameters())
    lo = _coarse(guide.float(), scale).to(p.device, p.dtype)
    n = SR_ENSEMBLE if ensemble is None else int(ensemble)
    mean = log_sigma = 0.0
    for k in range(max(1, min(n, 8))):
        m, s = net.predict(_symmetry(lo, k), scale)
        mean = mean + _symmetry(m.float(), k, inverse=True)
        log_sigma = log_sigma + _symmetry(s.float(), k, inverse=True)
    n = max(1, min(n, 8))
    return mean / n, log_sigma / n


def sr_mean(model, guide: torch.Tensor, scale: int) -> torch.Tensor:
    """The super-resolution network's expected fine image of ``guide`` (the coarse image
    replicated onto the fine grid, as :func:`control_image` takes it)."""
    return _sr_predict(model, guide, scale)[0]


def pixel_noise(latent_noise: torch.Tensor | None, shape) -> torch.Tensor:
    """Standard normal noise of ``shape`` (B, C, H, W), each tile's drawn from a generator
    seeded by its latent noise ``latent_noise[b]`` (the engine's, keyed by tile and sample,
    :func:`geot2e.engine.noise.sample_noise`); fresh noise without it. Odd in the latent noise:
    the negated latent noise (the antithetic sample of a pair) gives the negated pixel noise."""
    if latent_noise is None:
        return torch.randn(shape)
    import hashlib

    out = []
    for z in latent_noise:
        z = z.detach().cpu().float()
        flat = z.flatten()
        nz = flat[flat != 0]
        sign = -1.0 if nz.numel() and float(nz[0]) < 0 else 1.0   # −z draws −(z's noise): antithetic
        digest = hashlib.blake2b((z * sign).numpy().tobytes(), digest_size=8).digest()  # pairs stay pairs
        g = torch.Generator(device="cpu").manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
        out.append(sign * torch.randn(tuple(shape[1:]), generator=g))
    return torch.stack(out)


def pan_detail(x: torch.Tensor, pan: torch.Tensor, scale: int) -> torch.Tensor:
    """Give ``x``'s intensity (band mean) the detail of ``pan`` (matched to the intensity, as
    :func:`control_image` does) finer than the coarse pixels: the component-substitution
    model's one assumption, that the fine-scale intensity is the PAN's. What the PAN does not
    determine (how the detail splits between the bands, the coarse colours) stays the model's
    (and back-projection's)."""
    return x + (_fine(pan, scale) - _fine(x.mean(1, keepdim=True), scale))


def nir_detail(x: torch.Tensor, nir: torch.Tensor, a: torch.Tensor, scale: int) -> torch.Tensor:
    """Give ``x`` (B, 3, H, W) the detail of the linear map ``a``·``nir`` finer than ``scale``
    pixels, band by band, in place of its own: the streets, field edges and shores the NIR band
    shows, which the model's result does not keep. The colours coarser than that stay the
    model's. ``a``: (1, 3, 1, 1), :func:`nir_linear`'s slope."""
    return x - _fine(x, scale) + a * _fine(nir, scale)


def _fine(v: torch.Tensor, scale: int) -> torch.Tensor:
    """``v``'s detail finer than ``scale`` pixels: ``v`` less the bicubic upsampling of its
    ``scale``-pixel area means (a partial last block averaged over what it holds)."""
    lo = F.avg_pool2d(v, scale, ceil_mode=True)
    return v - F.interpolate(lo, size=v.shape[-2:], mode="bicubic", align_corners=False)


# ----------------------------------------------------------------------------- files
def has_controlnet(folder: str | Path) -> bool:
    """True when the model folder carries a translation ControlNet (``translate/``)."""
    return (Path(folder) / CONTROL_DIR / "config.json").is_file()


def controlnet_info(folder: str | Path) -> dict:
    """What the folder's ControlNet was trained for (tasks, steps, base model hash)."""
    f = Path(folder) / CONTROL_DIR / CONTROL_META
    return json.loads(f.read_text()) if f.is_file() else {}


def save_controlnet(controlnet, folder: str | Path, *, meta: dict, dtype: torch.dtype | None = None) -> Path:
    """Write ``controlnet`` (diffusers layout: config.json + safetensors) and ``meta`` to
    ``folder`` atomically (a failed write leaves what was there)."""
    dst = Path(folder)
    with atomic_folder(dst) as tmp:
        cn = controlnet
        if dtype is not None:
            import copy

            cn = copy.deepcopy(controlnet).to(dtype)
        cn.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / CONTROL_META).write_text(json.dumps(meta, indent=2))
    return dst


def load_controlnet(model, folder: str | Path | None = None):
    """Attach the ControlNet of ``folder`` (default: ``model.source/translate``) to ``model``
    (as ``model.controlnet``, float32, eval mode) and return the model. Raises
    :class:`~geot2e.errors.CheckpointError` when there is none."""
    from diffusers import ControlNetModel

    from ..errors import CheckpointError

    base = Path(folder) if folder is not None else (Path(model.source) / CONTROL_DIR if model.source else None)
    if base is None or not (base / "config.json").is_file():
        raise CheckpointError(f"no translation ControlNet in {base}; train one with the control stage of "
                              "`geot2e train` (configs/default.yaml, section control:).")
    cn = ControlNetModel.from_pretrained(str(base), use_safetensors=True)
    model.controlnet = cn.to(model.device, torch.float32).eval()
    model.controlnet.requires_grad_(False)
    meta = base / CONTROL_META
    model.controlnet_meta = json.loads(meta.read_text()) if meta.is_file() else {}
    return model

