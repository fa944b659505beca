"""Configuration of a Text2Earth model (pure data, JSON-serialisable).

Only plain numbers, strings and lists live here: a checkpoint's ``config.json`` is
validated against these fields, so no class names or code can come from a file.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import CheckpointError

__all__ = ["Text2EarthConfig", "VAEConfig", "UNetConfig", "TextConfig", "ResolutionConfig",
           "SchedulerConfig", "tiny_config", "default_config"]


@dataclass
class VAEConfig:
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 128])
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float = 1.0  # set after VAE training: 1 / std of latents
    # a decoder of its own widths/depth behind the same encoder (None: mirror the encoder);
    # trained with the decoder stage, the latent space and the denoiser stay valid
    decoder_block_out_channels: list[int] | None = None
    decoder_layers_per_block: int | None = None

    @property
    def factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def decoder_widths(self) -> list[int]:
        return list(self.decoder_block_out_channels or self.block_out_channels)

    @property
    def decoder_layers(self) -> int:
        return self.layers_per_block if self.decoder_layers_per_block is None else self.decoder_layers_per_block


@dataclass
class UNetConfig:
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 256])
    layers_per_block: int = 1
    attention_heads: int = 4
    cross_attention_blocks: list[bool] = field(default_factory=lambda: [False, True, True])
    norm_num_groups: int = 32


@dataclass
class TextConfig:
    """OpenCLIP text tower. ``arch``/``pretrained`` name an OpenCLIP model and a local file
    (e.g. ViT-H-14 weights); otherwise a small tower is built from width/layers/heads."""
    width: int = 128
    layers: int = 2
    heads: int = 4
    context_length: int = 32
    vocab_size: int = 49408
    arch: str | None = None
    pretrained: str | None = None


@dataclass
class ResolutionConfig:
    gsd_min: float = 0.3
    gsd_max: float = 1000.0
    num_freqs: int = 8


@dataclass
class SchedulerConfig:
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction_type: str = "epsilon"
    # rescale the betas so the last timestep is pure noise (zero terminal SNR, Lin et al., 2024):
    # with SD's schedule the last step still holds 6.8 % of the signal, so a model trained on it
    # cannot move the mean colour far from the starting noise's; needs v_prediction (at SNR 0
    # the noise is the input, so predicting it says nothing about the image)
    rescale_betas_zero_snr: bool = False


_ALLOWED_BETA = {"scaled_linear", "linear", "squaredcos_cap_v2"}
_ALLOWED_PRED = {"epsilon", "v_prediction"}


@dataclass
class Text2EarthConfig:
    bands: int = 3
    band_names: list[str] = field(default_factory=lambda: ["red", "green", "blue"])
    vae: VAEConfig = field(default_factory=VAEConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    text: TextConfig = field(default_factory=TextConfig)
    resolution: ResolutionConfig = field(default_factory=ResolutionConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    # GSD range (metres) seen in training; outside it a GSDRangeWarning is raised.
    trained_gsd_range: list[float] = field(default_factory=lambda: [0.3, 1000.0])
    model_id: str = "geot2e-untrained"
    # Masked pixels are pre-filled with a smooth interpolation of the known pixels
    # before the VAE encodes the masked image ("smooth"), or with 0 ("zero", Text2Earth).
    masked_fill: str = "smooth"
    # Which raster band feeds each of the VAE's image channels (None: band i feeds channel i).
    # A modality model (geot2e.models.modality) generates fewer bands than the VAE has
    # channels, e.g. NIR alone through an RGB VAE: channels [0, 0, 0]; each band's output is
    # the mean of the channels it feeds.
    channels: list[int] | None = None
    format_version: int = 1

    @property
    def vae_channels(self) -> int:
        """Image channels of the VAE (and of a ControlNet's guide): ``len(channels)`` or ``bands``."""
        return len(self.channels) if self.channels is not None else self.bands

    # ------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "config") -> "Text2EarthConfig":
        if not isinstance(d, dict):
            raise CheckpointError(f"{source}: expected a JSON object, got {type(d).__name__}.")
        subs = {"vae": VAEConfig, "unet": UNetConfig, "text": TextConfig,
                "resolution": ResolutionConfig, "scheduler": SchedulerConfig}
        kwargs: dict[str, Any] = {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise CheckpointError(f"{source}: unknown keys {sorted(unknown)}; this file was not written "
                                  "by geot2e or by a newer version. Re-save it with this version.")
        for k, v in d.items():
            if k in subs:
                sub_known = {f.name for f in dataclasses.fields(subs[k])}
                if not isinstance(v, dict) or set(v) - sub_known:
                    raise CheckpointError(f"{source}: section {k!r} has unexpected keys "
                                          f"{sorted(set(v) - sub_known) if isinstance(v, dict) else v!r}.")
                kwargs[k] = subs[k](**v)
            else:
                kwargs[k] = v
        cfg = cls(**kwargs)
        cfg.validate(source=source)
        return cfg

    def validate(self, *, source: str = "config") -> None:
        def bad(msg: str) -> CheckpointError:
            return CheckpointError(f"{source}: {msg}")

        if not (isinstance(self.bands, int) and 1 <= self.bands <= 64):
            raise bad(f"bands must be an integer in 1..64, got {self.bands!r}")
        if len(self.band_names) != self.bands:
            raise bad(f"band_names has {len(self.band_names)} entries for {self.bands} bands")
        if self.channels is not None:
            ch = self.channels
            if (not isinstance(ch, list) or not ch or any(isinstance(c, bool) or not isinstance(c, int) for c in ch)
                    or any(not 0 <= c < self.bands for c in ch) or set(ch) != set(range(self.bands))):
                raise bad(f"channels must list, for each VAE channel, the band (0..{self.bands - 1}) that feeds it, "
                          f"using every band; got {ch!r}")
        for name, chans in (("vae", self.vae.block_out_channels), ("unet", self.unet.block_out_channels)):
            if not chans or any((not isinstance(c, int)) or c <= 0 for c in chans):
                raise bad(f"{name}.block_out_channels must be positive integers, got {chans!r}")
        if any(c % self.unet.norm_num_groups for c in self.unet.block_out_channels):
            raise bad("unet.block_out_channels must be divisible by unet.norm_num_groups")
        if any(c % self.vae.norm_num_groups for c in self.vae.block_out_channels):
            raise bad("vae.block_out_channels must be divisible by vae.norm_num_groups")
        dec = self.vae.decoder_block_out_channels
        if dec is not None:
            if (not isinstance(dec, list) or len(dec) != len(self.vae.block_out_channels)
                    or any(isinstance(c, bool) or not isinstance(c, int) or c <= 0 or c % self.vae.norm_num_groups
                           for c in dec)):
                raise bad(f"vae.decoder_block_out_channels must list {len(self.vae.block_out_channels)} positive "
                          f"multiples of vae.norm_num_groups (one per encoder level), got {dec!r}")
        dl = self.vae.decoder_layers_per_block
        if dl is not None and (isinstance(dl, bool) or not isinstance(dl, int) or dl < 1):
            raise bad(f"vae.decoder_layers_per_block must be an integer >= 1, got {dl!r}")
        if len(self.unet.cross_attention_blocks) != len(self.unet.block_out_channels):
            raise bad("unet.cross_attention_blocks must have one flag per block")
        if self.scheduler.beta_schedule not in _ALLOWED_BETA:
            raise bad(f"scheduler.beta_schedule must be one of {sorted(_ALLOWED_BETA)}")
        if self.scheduler.prediction_type not in _ALLOWED_PRED:
            raise bad(f"scheduler.prediction_type must be one of {sorted(_ALLOWED_PRED)}")
        if self.scheduler.rescale_betas_zero_snr and self.scheduler.prediction_type != "v_prediction":
            raise bad("scheduler.rescale_betas_zero_snr needs prediction_type 'v_prediction' (at zero terminal "
                      "SNR an epsilon model's last step carries no information about the image)")
        if self.masked_fill not in ("smooth", "zero"):
            raise bad("masked_fill must be 'smooth' or 'zero'")
        if not (0 < self.resolution.gsd_min < self.resolution.gsd_max):
            raise bad("resolution.gsd_min must be positive and below gsd_max")


def tiny_config(bands: int = 3) -> Text2EarthConfig:
    """A very small configuration for tests and engine development (random weights)."""
    names = ["red", "green", "blue", "nir"][:bands] if bands <= 4 else [f"b{i+1}" for i in range(bands)]
    return Text2EarthConfig(
        bands=bands, band_names=names,
        vae=VAEConfig(block_out_channels=[32, 32, 32], latent_channels=4),
        unet=UNetConfig(block_out_channels=[32, 64], attention_heads=2, cross_attention_blocks=[False, True]),
        text=TextConfig(width=32, layers=1, heads=2, context_length=16, vocab_size=49408),
        model_id="geot2e-tiny-random",
    )


def default_config() -> Text2EarthConfig:
    """The configuration of the embedded default model."""
    return Text2EarthConfig(
        vae=VAEConfig(block_out_channels=[64, 128, 128], layers_per_block=1, latent_channels=4),
        unet=UNetConfig(block_out_channels=[64, 128, 256], layers_per_block=1, attention_heads=4,
                        cross_attention_blocks=[False, True, True]),
        text=TextConfig(width=128, layers=2, heads=4, context_length=32),
        model_id="geot2e-default",
    )
