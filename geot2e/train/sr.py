"""The super-resolution network's training stage (``sr:`` in a training config).

Pairs come from the config's real tiles: each tile area-averaged by the scale (2 for two
tiles in three, else 4: a coarse pixel integrates its footprint, as a sensor's does) is the
input, the tile itself the target; the loss is L1 between :class:`~geot2e.models.sr.SRNet`'s
fine image and the tile, plus the Gaussian negative log-likelihood of its error under the
network's spread (whose head sees the features but does not train them). The denoiser is not used: this stage needs only the data, and runs
at any point of a recipe (``--stage sr``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..models.sr import SR_DIR, SRNet, save_sr_net
from .schema import StageConfig
from .side import export_side_net, train_side_net

__all__ = ["train_sr", "export_sr_net", "SCALE_WEIGHTS", "SPREAD_WEIGHT"]

#: how often the stage draws each scale factor
SCALE_WEIGHTS = {2: 2 / 3, 4: 1 / 3}
#: weight of the spread's Gaussian negative log-likelihood (its own head: it does not change the mean)
SPREAD_WEIGHT = 0.1


def train_sr(model, rgb_dataset, cfg: StageConfig, out_dir: str | Path, *, resume: bool = True,
             progress: bool = True) -> list:
    """Train ``model.sr_net`` (built when missing) on ``rgb_dataset``'s tiles and write it to
    ``out_dir/sr/net``. The rest of ``model`` is untouched."""
    scales = list(SCALE_WEIGHTS)
    p = np.array([SCALE_WEIGHTS[s] for s in scales])

    def loss_fn(batch, rng):
        s = int(scales[int(rng.choice(len(scales), p=p / p.sum()))])
        fine = batch["image"][:, :3]
        mean, log_sigma = model.sr_net.predict(F.avg_pool2d(fine, s), s)
        r2 = (fine - mean).detach().float() ** 2        # the spread learns the mean's error, never moves it
        nll = 0.5 * r2 * torch.exp(-2 * log_sigma.float()) + log_sigma.float()
        return F.l1_loss(mean, fine) + SPREAD_WEIGHT * nll.mean()

    meta = {"batch_size": cfg.batch_size, "scale_weights": {str(k): v for k, v in SCALE_WEIGHTS.items()}}
    return train_side_net(model, "sr_net", SRNet, loss_fn, rgb_dataset, cfg, Path(out_dir) / "sr",
                          lambda net, folder, step: save_sr_net(net, folder, meta={"steps": int(step), **meta}),
                          resume=resume, progress=progress, desc="sr")


def export_sr_net(src: str | Path, model_folder: str | Path) -> Path:
    """Copy the trained super-resolution network (``src``, a stage's ``sr/net``) into
    ``model_folder/super_resolution``, atomically."""
    return export_side_net(src, model_folder, SR_DIR)
