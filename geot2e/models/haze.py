"""Dehazing by inverting the atmospheric scattering model with learned fields (pure torch).

A hazy image is ``I = J·t + A·(1 − t)``: the ground's radiance ``J`` attenuated by the
transmission ``t`` plus the airlight ``A`` scattered in. Both fields are smooth over the
ground (haze varies over hundreds of metres, the ground pixel by pixel), so once they are
known the ground follows exactly, pixel for pixel: ``J = A + (I − A) / t``. The dark channel
prior (He et al., 2009) estimates ``t`` from a hand-made assumption (every patch of clear
ground has a dark pixel in some band), which fails over bright fields, sand and towns.
:class:`HazeNet` learns the two fields instead: a small fully convolutional network that
sees the hazy image on a grid 16 times coarser and predicts ``t`` and ``A`` per coarse pixel,
upsampled bicubically. Trained through ``geot2e train`` (the ``haze:`` stage,
:mod:`geot2e.train.haze`) on the training tiles under the scattering model; every detail of
the result is the input's, never synthesized, so the inversion adds no texture and removes
none.

Works on the model's [-1, 1] scale of the *clear* scene (the radiometry a user passes, or
the raster's own percentiles): the haze then shows as a raised, flattened signal, as it does
in reflectance. Knows no CRS: tiling and units are the engine's.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .netfile import attach_net, has_net, net_info, save_net

__all__ = ["HazeNet", "HAZE_DIR", "HAZE_WIDTH", "HAZE_LEVELS", "T_MIN", "save_haze_net", "load_haze_net",
           "has_haze_net", "haze_net_info"]

#: the sub-folder of a model folder that holds its dehazing network
HAZE_DIR = "dehaze"
HAZE_META = "geot2e_haze.json"
HAZE_WEIGHTS = "haze_net.safetensors"
#: the network's channels per layer and stride-2 levels (126 k parameters)
HAZE_WIDTH, HAZE_LEVELS = 48, 4
#: the smallest transmission the network predicts: below it the input holds too little of the
#: ground (its noise would be amplified more than 20 times)
T_MIN = 0.05


class HazeNet(nn.Module):
    """Transmission and airlight fields of a hazy image, and the image they invert to.

    ``levels`` stride-2 convolutions to a grid ``2**levels`` times coarser, three more there
    (two dilated), a 1×1 convolution to 4 channels (``t`` and ``A`` per band), upsampled
    bicubically to the input's grid. Input and output on the model's [-1, 1] scale,
    (B, 3, H, W); H and W need not be multiples of ``2**levels``.
    """

    def __init__(self, width: int = HAZE_WIDTH, levels: int = HAZE_LEVELS):
        super().__init__()
        self.width, self.levels = int(width), int(levels)
        w = self.width
        down = [nn.Conv2d(3, w, 3, 2, 1), nn.GELU()]
        for _ in range(self.levels - 1):
            down += [nn.Conv2d(w, w, 3, 2, 1), nn.GELU()]
        self.body = nn.Sequential(
            *down,
            nn.Conv2d(w, w, 3, 1, 2, dilation=2), nn.GELU(),
            nn.Conv2d(w, w, 3, 1, 2, dilation=2), nn.GELU(),
            nn.Conv2d(w, w, 3, 1, 1), nn.GELU(),
            nn.Conv2d(w, 4, 1))

    def fields(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(t, A)``: transmission (B, 1, H, W) in [:data:`T_MIN`, 1] and airlight (B, 3, H, W)
        on the model's scale (near-white haze is near 1 there)."""
        o = F.interpolate(self.body(x), size=x.shape[-2:], mode="bicubic", align_corners=False)
        t = T_MIN + (1 - T_MIN) * torch.sigmoid(o[:, :1] + 1.0)
        return t, 1.0 + o[:, 1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The dehazed image ``A + (x − A) / t`` (not clipped)."""
        t, a = self.fields(x)
        return a + (x - a) / t


def has_haze_net(folder: str | Path) -> bool:
    """True when the model folder carries a dehazing network (``dehaze/``)."""
    return has_net(folder, HAZE_DIR, HAZE_META)


def haze_net_info(folder: str | Path) -> dict:
    """What the folder's dehazing network was trained with (steps, width, data)."""
    return net_info(folder, HAZE_DIR, HAZE_META)


def save_haze_net(net: HazeNet, folder: str | Path, *, meta: dict, dtype: torch.dtype | None = None) -> Path:
    """Write ``net`` (safetensors) and ``meta`` (JSON, with the width) to ``folder`` atomically."""
    return save_net(net, folder, weights=HAZE_WEIGHTS, meta_name=HAZE_META, dtype=dtype,
                    meta={**meta, "width": net.width, "levels": net.levels})


def load_haze_net(model, folder: str | Path | None = None):
    """Attach the dehazing network of ``folder`` (default: ``model.source/dehaze``) to ``model``
    (as ``model.haze_net``, float32, eval mode) and return the model. Raises
    :class:`~geot2e.errors.CheckpointError` when there is none."""
    return attach_net(model, folder, sub=HAZE_DIR, weights=HAZE_WEIGHTS, meta_name=HAZE_META, attr="haze_net",
                      build=lambda meta: HazeNet(int(meta.get("width", HAZE_WIDTH)),
                                                 int(meta.get("levels", HAZE_LEVELS))),
                      what="dehazing network", section="haze")
