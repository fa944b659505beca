"""The anchor network's training stage (``anchor:`` in a training config).

Pairs come from the config's real tiles under random masks, most of them cloud-like blobs
(:func:`~geot2e.train.masks.cloud_blobs`, 10-60 % cover, as cloud removal meets them) and
some brush strokes, rectangles and edge bands. The loss is the squared error of
:class:`~geot2e.models.anchor.AnchorNet`'s expected image over the masked pixels after a
Gaussian blur of σ = :data:`LOSS_SIGMA` px (the anchor keeps scales over 4 px; the pixel-scale
texture no fill can predict would only add noise to the gradient), each tile's divided by the
square of the truth's range (its 1-99 % percentiles): what a fill's PSNR counts, so a
low-contrast tile weighs as much as a bright one. Needs only the data (no VAE
or denoiser): ``--stage anchor`` runs it at any point of a recipe.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..models.anchor import ANCHOR_DIR, AnchorNet, save_anchor_net
from .masks import random_mask
from .schema import StageConfig
from .side import export_side_net, train_side_net

__all__ = ["train_anchor", "export_anchor_net", "anchor_loss", "MASK_WEIGHTS", "LOSS_SIGMA"]

#: the Gaussian blur (px) of the error before it is squared
LOSS_SIGMA = 2.0

#: the masks of the stage's tiles (cloud removal's blobs first)
MASK_WEIGHTS = {"clouds": 0.7, "brush": 0.1, "rectangle": 0.1, "edge": 0.1}


def anchor_loss(net: AnchorNet, truth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over tiles of the masked squared error of ``net``'s fill of ``truth`` (B, C, H, W)
    under ``mask`` (B, 1, H, W, 1 = fill), blurred by :data:`LOSS_SIGMA` px, each tile's over the
    square of its 1-99 % range."""
    from ..models.fill import gauss_blur

    pred = net(truth, 1.0 - mask)
    q = torch.quantile(truth.flatten(1).float(), torch.tensor([0.01, 0.99], device=truth.device), dim=1)
    span2 = (q[1] - q[0]).clamp_min(0.05) ** 2
    err = (gauss_blur(pred - truth, LOSS_SIGMA) ** 2 * mask).flatten(1).sum(1) / (mask.flatten(1).sum(1) * truth.shape[1]).clamp_min(1)
    return (err / span2).mean()


def train_anchor(model, rgb_dataset, cfg: StageConfig, out_dir: str | Path, *, resume: bool = True,
                 progress: bool = True) -> list:
    """Train ``model.anchor_net`` (built when missing) on ``rgb_dataset``'s tiles under random
    masks and write it to ``out_dir/anchor/net``. The rest of ``model`` is untouched."""
    def loss_fn(batch, rng: np.random.Generator):
        truth = batch["image"][:, :3]
        b, _, h, w = truth.shape
        m = np.stack([random_mask(rng, h, w, weights=MASK_WEIGHTS) for _ in range(b)])
        mask = torch.from_numpy(m[:, None].astype(np.float32)).to(truth.device)
        return anchor_loss(model.anchor_net, truth, mask)

    meta = {"batch_size": cfg.batch_size, "masks": MASK_WEIGHTS}
    return train_side_net(model, "anchor_net", AnchorNet, loss_fn, rgb_dataset, cfg, Path(out_dir) / "anchor",
                          lambda net, folder, step: save_anchor_net(net, folder, meta={"steps": int(step), **meta}),
                          resume=resume, progress=progress, desc="anchor")


def export_anchor_net(src: str | Path, model_folder: str | Path) -> Path:
    """Copy the trained anchor network (``src``, a stage's ``anchor/net``) into
    ``model_folder/anchor``, atomically."""
    return export_side_net(src, model_folder, ANCHOR_DIR)
