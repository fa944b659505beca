"""The Text2Earth model: VAE + resolution-conditioned, text-cross-attending inpainting UNet.

Pure torch/diffusers/open_clip: tensors in [-1, 1], masks in {0, 1} (1 = synthesize),
GSD in metres. Knows nothing of CRSs or xarray (the engine is the only layer that knows both).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..sampling import GUIDANCE, MODEL_SAMPLING, SCHEDULERS
from .config import Text2EarthConfig
from .fill import apply_harmonize
from .fill import harmonize_mode as _harmonize_mode
from .fill import smooth_fill
from .resolution import ResolutionEmbedding
from .text import TextEncoder

__all__ = ["Text2Earth", "make_scheduler", "x0_and_eps"]


def make_scheduler(config: Text2EarthConfig, name: str = MODEL_SAMPLING["scheduler"]):
    """A diffusers scheduler built from the model's noise schedule (interchangeable parts)."""
    from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,
                           EulerDiscreteScheduler)

    s = config.scheduler
    common = dict(num_train_timesteps=s.num_train_timesteps, beta_schedule=s.beta_schedule,
                  beta_start=s.beta_start, beta_end=s.beta_end, prediction_type=s.prediction_type,
                  rescale_betas_zero_snr=s.rescale_betas_zero_snr)
    if name == "ddim":
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                             timestep_spacing="trailing")
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                           timestep_spacing="trailing")
    if name == "euler":
        return EulerDiscreteScheduler(**common, timestep_spacing="trailing")
    if name == "ddpm":
        return DDPMScheduler(**common, clip_sample=False)
    from ..errors import ParameterError

    raise ParameterError(f"unknown scheduler {name!r}; choose one of {SCHEDULERS}.")


def x0_and_eps(prediction_type: str, out: torch.Tensor, z: torch.Tensor, alpha_bar: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean latent and the noise that a UNet output ``out`` stands for at a noisy latent
    ``z`` with cumulative ``alpha_bar`` (one per example): ``out`` is ε (``"epsilon"``) or
    v = √ᾱ·ε − √(1−ᾱ)·x₀ (``"v_prediction"``, which stays defined at ᾱ = 0, zero terminal SNR)."""
    a = alpha_bar.reshape(-1, *([1] * (z.ndim - 1))).to(z.dtype)
    sa, s1 = a.sqrt(), (1 - a).sqrt()
    if prediction_type == "v_prediction":
        return sa * z - s1 * out, s1 * z + sa * out
    return (z - s1 * out) / sa, out


def tile_inputs(images: torch.Tensor, masks: torch.Tensor, device, vae_factor: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and masks of a batch of tiles as float32 on ``device``, the values under the mask
    zeroed (never read: NaN/inf there, nodata or clouds, would leak through x·0), the tile size
    checked against the VAE factor (:class:`~geot2e.errors.TileSizeError`)."""
    x = images.to(device, torch.float32)
    m = masks.to(device, torch.float32)
    x = torch.where(m > 0, torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), x)
    h, w = x.shape[-2:]
    if h % vae_factor or w % vae_factor:
        from ..errors import TileSizeError

        raise TileSizeError(f"tile size {h}x{w} is not a multiple of the VAE factor {vae_factor}; "
                            "pad or crop the tiles.")
    return x, m


#: pixels of decoded context kept around a tile's masked pixels when the tile is decoded only
#: there (:func:`decode_box`): what the colour anchor's low-pass (σ = 2 px) and the pixel-detail
#: network need around a fill; a multiple of every VAE factor in use
DECODE_MARGIN = 16
#: the largest share of a window's pixels a cropped decode may cover; above it the whole
#: window is decoded (a mostly masked window, text-to-image: as before cropping existed)
DECODE_CROP_SHARE = 0.8


def decode_box(mask: torch.Tensor, factor: int, margin: int = DECODE_MARGIN) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)``: the pixels of a window (or the union of a batch's: ``mask`` B, 1,
    H, W; 1 = synthesize) that decoding needs, the bounding box of every masked pixel grown by
    ``margin`` and aligned to the VAE ``factor``; None when that covers more than
    :data:`DECODE_CROP_SHARE` of the window (decode it whole). The VAE decoder's cost follows
    the pixels it decodes, and a small cloud's window holds its context margin on every side."""
    h, w = mask.shape[-2:]
    rows = torch.nonzero(mask.amax(dim=(0, 1, 3)) > 0).flatten()
    cols = torch.nonzero(mask.amax(dim=(0, 1, 2)) > 0).flatten()
    if not len(rows):
        return None
    y0 = max(0, (int(rows[0]) - margin) // factor * factor)
    x0 = max(0, (int(cols[0]) - margin) // factor * factor)
    y1 = min(h, -(-(int(rows[-1]) + 1 + margin) // factor) * factor)
    x1 = min(w, -(-(int(cols[-1]) + 1 + margin) // factor) * factor)
    if (y1 - y0) * (x1 - x0) > DECODE_CROP_SHARE * h * w:
        return None
    return y0, y1, x0, x1


class Text2Earth(nn.Module):
    """Resolution-conditioned latent diffusion for editing and generating rasters.

    Use :func:`geot2e.load_model` to get one; :meth:`inpaint` is the batched entry point the
    tiled engine calls.
    """

    def __init__(self, config: Text2EarthConfig):
        super().__init__()
        from diffusers import AutoencoderKL, UNet2DConditionModel

        config.validate()
        self.config = config
        v, u = config.vae, config.unet
        nv = len(v.block_out_channels)
        self.vae = AutoencoderKL(
            in_channels=config.vae_channels, out_channels=config.vae_channels,
            down_block_types=("DownEncoderBlock2D",) * nv, up_block_types=("UpDecoderBlock2D",) * nv,
            block_out_channels=tuple(v.block_out_channels), layers_per_block=v.layers_per_block,
            latent_channels=v.latent_channels, norm_num_groups=v.norm_num_groups,
            mid_block_add_attention=False,
        )
        if v.decoder_widths != list(v.block_out_channels) or v.decoder_layers != v.layers_per_block:
            from diffusers.models.autoencoders.vae import Decoder

            self.vae.decoder = Decoder(
                in_channels=v.latent_channels, out_channels=config.vae_channels, up_block_types=("UpDecoderBlock2D",) * nv,
                block_out_channels=tuple(v.decoder_widths), layers_per_block=v.decoder_layers,
                norm_num_groups=v.norm_num_groups, act_fn="silu", mid_block_add_attention=False,
            )
        self.text_encoder = TextEncoder(config.text)
        lc = v.latent_channels
        down = tuple("CrossAttnDownBlock2D" if ca else "DownBlock2D" for ca in u.cross_attention_blocks)
        up = tuple("CrossAttnUpBlock2D" if ca else "UpBlock2D" for ca in reversed(u.cross_attention_blocks))
        self.unet = UNet2DConditionModel(
            sample_size=32, in_channels=2 * lc + 1, out_channels=lc,
            down_block_types=down, up_block_types=up, block_out_channels=tuple(u.block_out_channels),
            layers_per_block=u.layers_per_block, cross_attention_dim=self.text_encoder.width,
            attention_head_dim=u.attention_heads, norm_num_groups=u.norm_num_groups,
            class_embed_type="identity",
        )
        time_dim = u.block_out_channels[0] * 4
        r = config.resolution
        self.resolution = ResolutionEmbedding(time_dim, gsd_min=r.gsd_min, gsd_max=r.gsd_max, num_freqs=r.num_freqs)
        # Set by from_pretrained / load_model.
        self.source: str | None = None
        self.checkpoint_hash: str = "unsaved"
        self.autocast_dtype: torch.dtype | None = None
        self.unet_calls = 0  # counts UNet forward passes (tests, benchmarks)
        self.student_steps: int | None = None  # a few-step student's number of steps (load_model(few_step=True))
        self.controlnet = None  # a translation ControlNet (geot2e.models.control.load_controlnet)
        self.controlnet_meta: dict = {}  # what it was trained for (its geot2e_control.json)
        self.modality: str | None = None  # a modality adapter's name (geot2e.models.modality.apply_modality)
        self.detail_net = None  # the pixel-detail network (geot2e.models.detail.load_detail_net)

    # ------------------------------------------------------------------ properties
    @property
    def bands(self) -> int:
        return self.config.bands

    @property
    def vae_factor(self) -> int:
        return self.config.vae.factor

    @property
    def latent_channels(self) -> int:
        return self.config.vae.latent_channels

    @property
    def model_id(self) -> str:
        return self.config.model_id

    @property
    def gsd_range(self) -> tuple[float, float]:
        lo, hi = self.config.trained_gsd_range
        return float(lo), float(hi)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def latent_shape(self, h: int, w: int) -> tuple[int, int, int]:
        f = self.vae_factor
        return (self.latent_channels, h // f, w // f)

    # ------------------------------------------------------------------ building blocks
    def to_channels(self, x: torch.Tensor) -> torch.Tensor:
        """(B, bands, H, W) → (B, VAE channels, H, W) by ``config.channels`` (identity without)."""
        ch = self.config.channels
        return x if ch is None else x[:, list(ch)]

    def from_channels(self, y: torch.Tensor) -> torch.Tensor:
        """(B, VAE channels, H, W) → (B, bands, H, W): each band the mean of the channels it feeds."""
        ch = self.config.channels
        if ch is None:
            return y
        return torch.stack([y[:, [c for c, b in enumerate(ch) if b == i]].mean(1) for i in range(self.bands)], 1)

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, bands, H, W) in [-1, 1] → scaled latents (posterior mean)."""
        return self.vae.encode(self.to_channels(x)).latent_dist.mean * self.config.vae.scaling_factor

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents → images (B, bands, H, W)."""
        return self.from_channels(self.vae.decode(z / self.config.vae.scaling_factor).sample)

    def masked_condition(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask at latent size, latents of the masked image). Masked pixels are never read:
        they are replaced by a smooth fill of the known ones (or 0 with masked_fill='zero')."""
        known = 1.0 - mask
        if self.config.masked_fill == "smooth":
            xm = smooth_fill(x, known)
        else:
            xm = x * known
        zm = self.encode_images(xm)
        m_lat = F.interpolate(mask, size=zm.shape[-2:], mode="area")
        return m_lat, zm

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.text_encoder(list(prompts))

    def null_text(self, batch: int) -> torch.Tensor:
        return self.text_encoder([""]).expand(batch, -1, -1)

    def _autocast(self, device: torch.device):
        import contextlib

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)

    def _vae_autocast(self, device: torch.device):
        """The VAE at sampling time in bfloat16 where the UNet runs in it (measured on an AMX CPU,
        a 320² window: decode 27 % and encode 40 % faster, the decoded image 59 dB from float32's);
        never float16, where VAE activations can overflow."""
        import contextlib

        return self._autocast(device) if self.autocast_dtype is torch.bfloat16 else contextlib.nullcontext()

    def predict(self, z_t, t, m_lat, zm, text_emb, res_emb, control: torch.Tensor | None = None) -> torch.Tensor:
        """The UNet's noise (or velocity) prediction; with ``control`` (a conditioning image,
        :func:`geot2e.models.control.control_image`) the attached ControlNet's residuals are
        added to the UNet's skip connections."""
        self.unet_calls += 1
        inp = torch.cat([z_t, m_lat, zm], dim=1)
        with self._autocast(z_t.device):
            extra = {}
            if control is not None:
                if self.controlnet is None:
                    from ..errors import CheckpointError

                    raise CheckpointError("a control image was given but the model has no ControlNet; "
                                          "attach one with geot2e.models.control.load_controlnet.")
                down, mid = self.controlnet(inp, t, encoder_hidden_states=text_emb, controlnet_cond=control,
                                            class_labels=res_emb, return_dict=False)
                extra = dict(down_block_additional_residuals=down, mid_block_additional_residual=mid)
            out = self.unet(inp, t, encoder_hidden_states=text_emb, class_labels=res_emb, **extra).sample
        return out.float() if self.autocast_dtype is not None else out

    # ------------------------------------------------------------------ training
    def training_loss(self, x: torch.Tensor, mask: torch.Tensor, gsd: torch.Tensor, prompts: Sequence[str], *,
                      p_text: float = 0.1, p_res: float = 0.1, scheduler=None,
                      generator: torch.Generator | None = None, masked_weight: float = 1.0,
                      control: torch.Tensor | None = None, snr_gamma: float | None = None) -> torch.Tensor:
        """Denoising loss with dynamic condition dropout (text with p_text, resolution with p_res,
        independently). The VAE is used frozen (no gradients). ``control``: a ControlNet
        conditioning image per example (the translation ControlNet's training). ``snr_gamma``:
        min-SNR-γ weighting, each example weighed min(SNR, γ) / SNR (ε-prediction) or
        min(SNR, γ) / (SNR + 1) (v-prediction)."""
        b = x.shape[0]
        dev = x.device
        sched = scheduler or make_scheduler(self.config, "ddpm")
        with torch.no_grad(), self._autocast(dev):
            z0 = self.encode_images(x).float()
            m_lat, zm = self.masked_condition(x, mask)
            zm = zm.float()
        noise = torch.randn(z0.shape, generator=generator, device=dev)
        t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=generator, device=dev)
        z_t = sched.add_noise(z0, noise, t)
        drop_text = torch.rand(b, generator=generator, device=dev) < p_text
        drop_res = torch.rand(b, generator=generator, device=dev) < p_res
        prompts = ["" if d else p for p, d in zip(prompts, drop_text.tolist())]
        text_emb = self.encode_prompts(prompts)
        res_emb = self.resolution(gsd.to(dev).float(), drop=drop_res)
        pred = self.predict(z_t, t, m_lat, zm, text_emb, res_emb, control=control)
        if self.config.scheduler.prediction_type == "v_prediction":
            target = sched.get_velocity(z0, noise, t)
        else:
            target = noise
        w = 1.0 + masked_weight * m_lat
        if snr_gamma is not None:
            ab = sched.alphas_cumprod.to(dev)[t].float()
            snr = ab / (1 - ab)
            div = snr + 1 if self.config.scheduler.prediction_type == "v_prediction" else snr
            w = w * (snr.clamp(max=float(snr_gamma)) / div).view(-1, 1, 1, 1)
        return (w * (pred.float() - target) ** 2).mean() / (1.0 + masked_weight * m_lat.mean()).clamp_min(1.0)

    # ------------------------------------------------------------------ sampling
    def _prompts(self, prompts, b: int) -> list[str]:
        if prompts is None:
            return [""] * b
        if isinstance(prompts, str):
            return [prompts] * b
        prompts = ["" if p is None else str(p) for p in prompts]
        if len(prompts) == 1 and b > 1:
            prompts = prompts * b
        if len(prompts) != b:
            from ..errors import ParameterError

            raise ParameterError(f"got {len(prompts)} prompts for a batch of {b}; give one prompt or one per tile.")
        return prompts

    @torch.no_grad()
    def inpaint(self, images: torch.Tensor, masks: torch.Tensor, *,
                gsd: float | Sequence[float | None] | torch.Tensor | None = None,
                prompts: str | Sequence[str] | None = None, guidance: float = GUIDANCE,
                guidance_text: float | None = None, guidance_res: float | None = None,
                steps: int = MODEL_SAMPLING["steps"], scheduler: str = MODEL_SAMPLING["scheduler"], noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None, harmonize: bool | str = True,
                guidance_interval: float = 1.0, control: torch.Tensor | None = None,
                init: torch.Tensor | None = None, strength: float = 1.0,
                callback: Callable[[int, int], None] | None = None,
                detail: float | bool | None = None) -> torch.Tensor:
        """Synthesize the masked pixels of a batch of tiles.

        Parameters
        ----------
        images : (B, C, H, W) float tensor in [-1, 1]; H and W multiples of ``vae_factor``.
            Values under the mask are never read.
        masks : (B, 1, H, W) tensor, 1 = synthesize. An all-ones mask is text-to-image.
        gsd : metres per pixel (one value, one per tile, or None = unknown → null resolution).
        prompts : text (one, or one per tile); None or "" → null text.
        guidance : ω of the paper: ε = (1+ω)·ε(c) − ω·ε(∅). ω = 0 runs one UNet pass per step.
        guidance_text, guidance_res : split guidance (separate ω for text and for resolution);
            when either is given, ε = ε(τ,ρ) + ω_t(ε(τ,ρ) − ε(∅,ρ)) + ω_r(ε(τ,ρ) − ε(τ,∅)).
        steps : denoising steps of the scheduler (:data:`geot2e.sampling.MODEL_SAMPLING` by default).
        guidance_interval : share of the steps, from the noisiest, that use guidance; the
            rest run unguided (one UNet pass). Guidance in the last, low-noise steps mostly
            smooths pixel-scale detail (Kynkäänniemi et al., 2024, guide in a limited interval).
        noise : (B, latent_channels, H/f, W/f) initial noise, for determinism across tilings.
        control : (B, K, H, W) conditioning image of the attached ControlNet (translation,
            :func:`geot2e.models.control.translate_tiles`); None = no ControlNet.
        init, strength : start from ``init`` (B, C, H, W in [-1, 1]) noised to the first of the
            last ``strength`` share of the steps instead of from pure noise (SDEdit, Meng et
            al., 2022; diffusers' img2img): the coarse layout comes from ``init``, the rest from
            the model. ``strength=1`` (default) ignores ``init``.
        harmonize : how the decoded fill is made to agree with the known pixels. True or
            ``"boundary"`` (default): the residual on the known ring around the mask is spread
            inward (:func:`~geot2e.models.fill.harmonize`); ``"lowpass"``: low frequencies
            (Gaussian σ = 2 px) from the membrane (harmonic) fill of the known pixels, detail from
            the model (:func:`~geot2e.models.fill.anchor_lowpass`; what ``remove_clouds``
            uses); False or ``"none"``: the decoder output as it is.
        detail : with a pixel-detail network attached (``model.detail_net``, ``detail/`` of the
            model folder): the level of the fill's pixel grain in units of the network's spread
            (None: as fine-grained as the known pixels around it, :meth:`add_detail`; 0: the
            network's expected image alone, what the engine uses for each of ``samples > 1``);
            False: the decoder's output without the network.

        Returns
        -------
        (B, C, H, W) float32 tensor: decoded tiles (known pixels are not composited back). When
        a tile's masked pixels lie in a small part of it, only that part and
        :data:`DECODE_MARGIN` pixels around it are decoded (:func:`decode_box`, per tile); the
        pixels beyond are returned as the input.
        """
        mode = _harmonize_mode(harmonize)
        dev = self.device
        x, m = tile_inputs(images, masks, dev, self.vae_factor)
        b, _, h, w = x.shape
        prompts = self._prompts(prompts, b)
        g = ResolutionEmbedding.as_tensor(gsd, b, dev)
        with self._vae_autocast(dev):
            m_lat, zm = self.masked_condition(x, m)
        m_lat, zm = m_lat.float(), zm.float()
        text_c = self.encode_prompts(prompts)
        null_t = self.null_text(b)
        res_c = self.resolution(g)
        res_n = self.resolution(g, drop=torch.ones(b, dtype=torch.bool, device=dev))
        sched = make_scheduler(self.config, scheduler)
        sched.set_timesteps(steps, device=dev)
        if noise is None:
            noise = torch.randn((b, *self.latent_shape(h, w)), generator=generator, device="cpu").to(dev)
        timesteps = sched.timesteps
        if init is not None and strength < 1.0:
            first = min(len(timesteps) - 1, int(round(len(timesteps) * (1.0 - float(strength)))))
            timesteps = timesteps[first:]
            if hasattr(sched, "set_begin_index"):
                sched.set_begin_index(first)
            z0 = self.encode_images(init.to(dev, torch.float32).clamp(-1, 1)).float()
            z = sched.add_noise(z0, noise.to(dev, torch.float32), timesteps[:1].expand(b))
        else:
            z = noise.to(dev, torch.float32) * sched.init_noise_sigma
        split = guidance_text is not None or guidance_res is not None
        n_guided = int(math.ceil(float(guidance_interval) * len(timesteps) - 1e-9))
        for i, t in enumerate(timesteps):
            zin = sched.scale_model_input(z, t)
            tt = t.expand(b) if t.ndim == 0 else t
            if i >= n_guided:
                eps = self.predict(zin, tt, m_lat, zm, text_c, res_c, control)
            elif split:
                wt, wr = guidance_text or 0.0, guidance_res or 0.0
                zz = torch.cat([zin] * 3)
                eps = self.predict(zz, torch.cat([tt] * 3), torch.cat([m_lat] * 3), torch.cat([zm] * 3),
                                   torch.cat([text_c, null_t, text_c]), torch.cat([res_c, res_c, res_n]),
                                   None if control is None else torch.cat([control] * 3))
                e_c, e_nt, e_nr = eps.chunk(3)
                eps = e_c + wt * (e_c - e_nt) + wr * (e_c - e_nr)
            elif guidance == 0:
                eps = self.predict(zin, tt, m_lat, zm, text_c, res_c, control)
            else:
                eps2 = self.predict(torch.cat([zin, zin]), torch.cat([tt, tt]), torch.cat([m_lat, m_lat]),
                                    torch.cat([zm, zm]), torch.cat([text_c, null_t]), torch.cat([res_c, res_n]),
                                    None if control is None else torch.cat([control, control]))
                e_c, e_u = eps2.chunk(2)
                eps = (1 + guidance) * e_c - guidance * e_u
            z = sched.step(eps, t, z).prev_sample
            if callback is not None:
                callback(i + 1, len(timesteps))
        boxes = [decode_box(m[i:i + 1], self.vae_factor) for i in range(b)]
        if all(bx is None for bx in boxes):
            return self._finish(z, x, m, mode, noise, detail)
        out = x.clone()                      # small holes: decode (and detail) only around each
        groups: dict = {}
        for i, bx in enumerate(boxes):
            groups.setdefault(bx, []).append(i)
        for bx, idx in groups.items():
            sel = torch.tensor(idx, device=z.device)
            zi, xi, mi = z[sel], x[sel], m[sel]
            ni = None if noise is None else noise[sel]
            if bx is None:
                out[sel] = self._finish(zi, xi, mi, mode, ni, detail).to(out.dtype)
                continue
            y0, y1, x0, x1 = bx
            f = self.vae_factor
            part = self._finish(zi[..., y0 // f:y1 // f, x0 // f:x1 // f], xi[..., y0:y1, x0:x1],
                                mi[..., y0:y1, x0:x1], mode, ni, detail, window=(xi, mi, bx))
            out[sel, :, y0:y1, x0:x1] = part.to(out.dtype)
        return out

    def _finish(self, z: torch.Tensor, x: torch.Tensor, m: torch.Tensor, mode: str, noise, detail,
                window: tuple | None = None) -> torch.Tensor:
        """Decoded latents ``z``, harmonised with the known pixels ``x`` (mask ``m``) and given
        the pixel-detail network's grain where it is attached (``window``: see :meth:`add_detail`)."""
        with self._vae_autocast(self.device):
            decoded = self.decode_latents(z).float()
        if self.detail_net is None or detail is False:
            return apply_harmonize(decoded, x, m, mode)
        return self.add_detail(decoded, x, m, mode, noise, detail, window=window)

    def add_detail(self, decoded: torch.Tensor, x: torch.Tensor, m: torch.Tensor, mode: str,
                   noise: torch.Tensor | None, temperature: float | bool | None = None,
                   window: tuple | None = None) -> torch.Tensor:
        """A decoded fill given the pixel detail its decoder lost (the attached
        :class:`~geot2e.models.detail.DetailNet`): its expected image, harmonised with the
        known pixels (``mode``), plus a level × its spread × pixel noise under the mask ``m``.
        The level (``temperature``): None or True sets it per window so that the fill is as
        fine-grained as the known pixels around it (:func:`~geot2e.models.detail.context_level`;
        the network's :func:`~geot2e.models.detail.detail_temperature` without them); a number fixes it; 0
        is the expected image alone. The pixel noise is drawn from each tile's latent ``noise``
        (keyed by the engine per tile and sample), so that a tile's pixels do not depend on the
        chunking. ``window``: ``(x, m, (y0, y1, x0, x1))`` when ``decoded``, ``x`` and ``m`` are
        that box of a larger window (:func:`decode_box`): the pixel noise is the whole window's,
        cut to the box, and the known pixels that set the grain's level are the whole window's,
        so a fill's grain does not depend on how much of its window was decoded."""
        from .control import pixel_noise
        from .detail import context_level, detail_temperature, predict_detail

        mean, sigma = predict_detail(self.detail_net, decoded)
        out = apply_harmonize(mean, x, m, mode)
        if temperature is not None and temperature is not True and float(temperature) <= 0:
            return out
        b, _, h, w = sigma.shape              # one noise field for the three bands: the grain is of brightness
        if window is None:
            field = pixel_noise(noise, (b, 1, h, w))
        else:
            wx, _, (y0, y1, x0, x1) = window
            field = pixel_noise(noise, (b, 1, *wx.shape[-2:]))[..., y0:y1, x0:x1]
        grain = sigma * field.to(out.device)
        if temperature is None or temperature is True:
            ctx = None if window is None else (window[0], window[1])
            level = context_level(x, m, out, grain, fallback=detail_temperature(self.detail_net),
                                  context=ctx).view(b, 1, 1, 1)
        else:
            level = float(temperature)
        c = sigma.shape[1]                    # the network's bands (RGB, or a modality's band)
        own = (out[:, :c] + level * grain * m.to(out.dtype)).clamp(-1, 1)
        return torch.cat([own, out[:, c:]], 1)
