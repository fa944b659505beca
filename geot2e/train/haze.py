"""The dehazing network's training stage (``haze:`` in a training config).

Pairs come from the config's real clear tiles under the atmospheric scattering model
(:func:`synthetic_haze`, also the dehaze pairs of the control stage): ``I = J·t + A·(1 − t)``
with a smooth random transmission ``t`` and a near-white airlight ``A``. The input is the
hazy tile on the clear tile's scale, as a user's raster is when its radiometry is that of the
clear scene (:func:`geot2e.translate` with ``radiometry=``, or the scene's own percentiles
when most of it is clear); half of the tiles are first stretched by their own percentiles,
so that the network also knows tiles whose clear range spans the whole scale, and a fifth are
left clear, so that it leaves clear ground as it is. The loss is
L1 between :class:`~geot2e.models.haze.HazeNet`'s inversion and the clear tile. The
denoiser is not used: this stage needs only the data, and runs at any point of a recipe
(``--stage haze``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..models.haze import HAZE_DIR, HazeNet, save_haze_net
from .schema import StageConfig
from .side import export_side_net, train_side_net

__all__ = ["synthetic_haze", "train_haze", "export_haze_net", "OWN_STRETCH", "CLEAR_SHARE"]

#: share of the haze stage's tiles stretched by their own 0.5 / 99.5 percentiles first
OWN_STRETCH = 0.5
#: share of the haze stage's tiles left without haze: the network leaves clear ground alone
#: (trained without them it raised the contrast of clear crops: 23-25 dB against themselves)
CLEAR_SHARE = 0.2


def _smooth_field(rng: np.random.Generator, b: int, h: int, w: int, cells: int = 4) -> torch.Tensor:
    """(b, 1, h, w) smooth random field in [0, 1] (bicubic upsampling of a cells×cells grid)."""
    g = torch.from_numpy(rng.random((b, 1, cells, cells)).astype(np.float32))
    return F.interpolate(g, size=(h, w), mode="bicubic", align_corners=True).clamp(0, 1)


def synthetic_haze(rgb: torch.Tensor, rng: np.random.Generator, *, clear: float = 0.0) -> torch.Tensor:
    """Hazy versions of clear tiles ``rgb`` (B, 3, H, W) on the model's [-1, 1] scale:
    ``J·t + A·(1 − t)`` on [0, 1], ``t`` a smooth field from a per-tile minimum in
    [0.25, 0.75] up to at most 1, ``A`` 0.8–1.0 (± 0.03 per band: near-white haze). A
    ``clear`` share of the tiles is left without haze (``t`` = 1), so that a network learns to
    leave clear ground as it is."""
    b, _, h, w = rgb.shape
    j = (rgb + 1) / 2
    t_min = torch.from_numpy(rng.uniform(0.25, 0.75, size=(b, 1, 1, 1)).astype(np.float32))
    t = t_min + (1 - t_min) * _smooth_field(rng, b, h, w) * torch.from_numpy(
        rng.uniform(0.3, 1.0, size=(b, 1, 1, 1)).astype(np.float32))
    air = torch.from_numpy((rng.uniform(0.8, 1.0, size=(b, 1, 1, 1))
                            + rng.uniform(-0.03, 0.03, size=(b, 3, 1, 1))).astype(np.float32)).clamp(0, 1)
    if clear > 0:
        t = torch.where(torch.from_numpy(rng.random((b, 1, 1, 1)) < clear), torch.ones_like(t), t)
    return (j * t.to(rgb.device) + air.to(rgb.device) * (1 - t.to(rgb.device))) * 2 - 1


def _own_stretch(rgb: torch.Tensor, rng: np.random.Generator, share: float) -> torch.Tensor:
    """``rgb`` with a ``share`` of its tiles stretched by their own 0.5 / 99.5 percentiles to
    [-1, 1] (clipped), as a crop of a scene is by its own range."""
    q = torch.quantile(rgb.flatten(2).float(), torch.tensor([0.005, 0.995], device=rgb.device), dim=2)
    lo, hi = q[0][..., None, None], q[1][..., None, None]
    own = ((rgb - lo) / (hi - lo).clamp_min(0.02) * 2 - 1).clamp(-1, 1)
    pick = torch.from_numpy(rng.random((rgb.shape[0], 1, 1, 1)) < share).to(rgb.device)
    return torch.where(pick, own, rgb)


def train_haze(model, rgb_dataset, cfg: StageConfig, out_dir: str | Path, *, resume: bool = True,
               progress: bool = True) -> list:
    """Train ``model.haze_net`` (built when missing) on ``rgb_dataset``'s tiles and write it to
    ``out_dir/haze/net``. The rest of ``model`` is untouched."""
    def loss_fn(batch, rng):
        clear = _own_stretch(batch["image"][:, :3], rng, OWN_STRETCH)
        return F.l1_loss(model.haze_net(synthetic_haze(clear, rng, clear=CLEAR_SHARE)), clear)

    meta = {"batch_size": cfg.batch_size, "own_stretch": OWN_STRETCH, "clear_share": CLEAR_SHARE}
    return train_side_net(model, "haze_net", HazeNet, loss_fn, rgb_dataset, cfg, Path(out_dir) / "haze",
                          lambda net, folder, step: save_haze_net(net, folder, meta={"steps": int(step), **meta}),
                          resume=resume, progress=progress, desc="haze")


def export_haze_net(src: str | Path, model_folder: str | Path) -> Path:
    """Copy the trained dehazing network (``src``, a stage's ``haze/net``) into
    ``model_folder/dehaze``, atomically."""
    return export_side_net(src, model_folder, HAZE_DIR)
