"""Super-resolution's regression network: the expected fine image of a coarse one (pure torch).

Area-averaging a fine image by ``s`` loses what varies inside each coarse pixel; bicubic
interpolation guesses it by smoothness alone. :class:`SRNet` learns the guess from the
training tiles (each area-averaged and asked back): a small residual convolutional network
on the coarse grid whose output, rearranged onto the fine grid (sub-pixel convolution, Shi et
al., 2016), is added to the bicubic image. Its result is the mean of what the fine image may
be given the coarse one, the best single answer in squared error. The generative part of
``super_resolution`` (the ControlNet's sampling, :func:`geot2e.models.control.translate_tiles`)
starts from it and adds the detail a sample has. Trained through ``geot2e train`` (the ``sr:``
stage, :mod:`geot2e.train.sr`), saved beside the model as ``super_resolution/``.

Works on the model's [-1, 1] scale; knows no CRS: grids, tiling and units are the engine's.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .netfile import attach_net, has_net, net_info, save_net

__all__ = ["SRNet", "SR_DIR", "SR_WIDTH", "SR_BLOCKS", "SR_SCALES", "save_sr_net", "load_sr_net", "has_sr_net",
           "sr_net_info"]

#: the sub-folder of a model folder that holds its super-resolution network
SR_DIR = "super_resolution"
SR_META = "geot2e_sr.json"
SR_WEIGHTS = "sr_net.safetensors"
#: channels and residual blocks of the network (on the coarse grid)
SR_WIDTH, SR_BLOCKS = 48, 6
#: the scale factors the network has an output head for
SR_SCALES = (2, 4)
#: bounds of the predicted log standard deviation (model scale: 4.5e-5 to 1)
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -10.0, 0.0


class SRNet(nn.Module):
    """The fine image (B, 3, s·h, s·w) of a coarse one ``lo`` (B, 3, h, w), both on the model's
    [-1, 1] scale: bicubic upsampling plus a residual predicted on the coarse grid (``blocks``
    residual blocks of ``width`` channels, one sub-pixel head per scale in ``scales``), and
    how far the truth typically lies from it, per band and fine pixel (a second head per
    scale on the same features, not back-propagated into them: :meth:`predict`)."""

    def __init__(self, width: int = SR_WIDTH, blocks: int = SR_BLOCKS, scales=SR_SCALES):
        super().__init__()
        self.width, self.blocks, self.scales = int(width), int(blocks), tuple(int(s) for s in scales)
        w = self.width
        self.head = nn.Conv2d(3, w, 3, 1, 1)
        self.body = nn.ModuleList(nn.Sequential(nn.Conv2d(w, w, 3, 1, 1), nn.GELU(), nn.Conv2d(w, w, 3, 1, 1))
                                  for _ in range(self.blocks))
        self.tails = nn.ModuleDict({str(s): nn.Conv2d(w, 3 * s * s, 3, 1, 1) for s in self.scales})
        self.spreads = nn.ModuleDict({str(s): nn.Sequential(nn.Conv2d(w, w, 3, 1, 1), nn.GELU(),
                                                            nn.Conv2d(w, 3 * s * s, 3, 1, 1)) for s in self.scales})
        for t in self.tails.values():          # starts as bicubic interpolation
            nn.init.zeros_(t.weight)
            nn.init.zeros_(t.bias)
        for t in self.spreads.values():        # and a spread of exp(-3) = 0.05 (2.5 % of the scale)
            nn.init.zeros_(t[-1].weight)
            nn.init.constant_(t[-1].bias, -3.0)

    def _features(self, lo: torch.Tensor, scale: int) -> torch.Tensor:
        if str(int(scale)) not in self.tails:
            raise ValueError(f"this super-resolution network knows scales {list(self.scales)}, not {scale}")
        h = self.head(lo)
        x = h
        for block in self.body:
            x = x + block(x)
        return x + h

    def predict(self, lo: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, log_sigma)``: the expected fine image and the log of the standard deviation
        of the truth around it (a Gaussian's, per band and fine pixel)."""
        s = int(scale)
        x = self._features(lo, s)
        mean = F.interpolate(lo, scale_factor=s, mode="bicubic", align_corners=False) + F.pixel_shuffle(
            self.tails[str(s)](x), s)
        log_sigma = F.pixel_shuffle(self.spreads[str(s)](x.detach()), s).clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)
        return mean, log_sigma

    def forward(self, lo: torch.Tensor, scale: int) -> torch.Tensor:
        """The expected fine image."""
        s = int(scale)
        x = self._features(lo, s)
        return F.interpolate(lo, scale_factor=s, mode="bicubic", align_corners=False) + F.pixel_shuffle(
            self.tails[str(s)](x), s)


def has_sr_net(folder: str | Path) -> bool:
    """True when the model folder carries a super-resolution network (``super_resolution/``)."""
    return has_net(folder, SR_DIR, SR_META)


def sr_net_info(folder: str | Path) -> dict:
    """What the folder's super-resolution network was trained with (steps, width, data)."""
    return net_info(folder, SR_DIR, SR_META)


def save_sr_net(net: SRNet, folder: str | Path, *, meta: dict, dtype: torch.dtype | None = None) -> Path:
    """Write ``net`` (safetensors) and ``meta`` (JSON, with its architecture) to ``folder`` atomically."""
    return save_net(net, folder, weights=SR_WEIGHTS, meta_name=SR_META, dtype=dtype,
                    meta={**meta, "width": net.width, "blocks": net.blocks, "scales": list(net.scales)})


def load_sr_net(model, folder: str | Path | None = None):
    """Attach the super-resolution network of ``folder`` (default: ``model.source/super_resolution``)
    to ``model`` (as ``model.sr_net``, float32, eval mode) and return the model. Raises
    :class:`~geot2e.errors.CheckpointError` when there is none."""
    return attach_net(model, folder, sub=SR_DIR, weights=SR_WEIGHTS, meta_name=SR_META, attr="sr_net",
                      build=lambda meta: SRNet(int(meta.get("width", SR_WIDTH)), int(meta.get("blocks", SR_BLOCKS)),
                                               tuple(meta.get("scales", SR_SCALES))),
                      what="super-resolution network", section="sr")
