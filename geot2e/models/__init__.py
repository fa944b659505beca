"""Text2Earth models (pure torch + diffusers + open_clip; no CRS, no xarray)."""
from .checkpoint import (DEFAULT_WEIGHTS, available_modalities, checkpoint_hash, from_pretrained, load_model,
                         resolve_device, save_pretrained)
from .config import Text2EarthConfig, default_config, tiny_config
from .fill import anchor_lowpass, harmonize, smooth_fill
from .resolution import ResolutionEmbedding
from .text2earth import Text2Earth, make_scheduler

Text2Earth.save_pretrained = save_pretrained  # type: ignore[attr-defined]
Text2Earth.from_pretrained = staticmethod(from_pretrained)  # type: ignore[attr-defined]

__all__ = ["Text2Earth", "Text2EarthConfig", "ResolutionEmbedding", "load_model", "from_pretrained",
           "save_pretrained", "checkpoint_hash", "resolve_device", "make_scheduler", "tiny_config",
           "default_config", "smooth_fill", "harmonize", "anchor_lowpass", "DEFAULT_WEIGHTS", "available_modalities"]
