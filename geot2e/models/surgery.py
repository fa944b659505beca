"""Changes to a trained model's architecture that keep the rest of its weights."""
from __future__ import annotations

import copy
from typing import Sequence

import torch

from ..errors import ParameterError
from .text2earth import Text2Earth

__all__ = ["with_new_decoder"]


def with_new_decoder(model: Text2Earth, *, widths: Sequence[int] | None = None, layers: int | None = None,
                     seed: int = 0) -> Text2Earth:
    """A copy of ``model`` whose VAE decoder has other block widths and/or layers per block,
    freshly initialised; every other weight (the encoder too, so the latent space and the
    denoiser stay valid) is ``model``'s. Train the new decoder with the decoder stage."""
    cfg = copy.deepcopy(model.config)
    if widths is not None:
        widths = [int(w) for w in widths]
        if len(widths) != len(cfg.vae.block_out_channels):
            raise ParameterError(f"the decoder needs one width per VAE level ({len(cfg.vae.block_out_channels)}), "
                                 f"got {widths}.")
        cfg.vae.decoder_block_out_channels = widths
    if layers is not None:
        cfg.vae.decoder_layers_per_block = int(layers)
    torch.manual_seed(seed)
    new = Text2Earth(cfg).to(model.device)
    keep = {k: v for k, v in model.state_dict().items() if not k.startswith("vae.decoder.")}
    missing, unexpected = new.load_state_dict(keep, strict=False)
    if unexpected or not all(k.startswith("vae.decoder.") for k in missing):
        raise ParameterError(f"the new decoder does not fit the model (missing {missing[:3]}, unexpected "
                             f"{unexpected[:3]}).")
    new.autocast_dtype = model.autocast_dtype
    return new
