"""The pixel-detail network's training stage (``detail:`` in a training config).

Pairs come from the config's real tiles and the model's own VAE: each tile's round trip
(encoded to its latents and decoded, as a fill's latents are decoded at sampling time, under
the same autocast) is the input, the tile itself the target. The loss is L1 between
:class:`~geot2e.models.detail.DetailNet`'s expected image and the tile plus the Gaussian
negative log-likelihood of its error under the network's spread (whose head sees the
features but does not train them). The VAE is frozen and read only: run this stage after
every stage that changes the decoder (``--stage detail`` on a finished model, or
``base_model:`` with this section alone, as ``configs/detail.yaml``).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..models.detail import DETAIL_DIR, DetailNet, save_detail_net
from .schema import StageConfig
from .side import export_side_net, train_side_net

__all__ = ["train_detail", "export_detail_net", "calibrate_detail", "round_trip", "SPREAD_WEIGHT"]

#: weight of the spread's Gaussian negative log-likelihood (its own head: it does not change the mean)
SPREAD_WEIGHT = 0.1


@torch.no_grad()
def round_trip(model, rgb: torch.Tensor) -> torch.Tensor:
    """``rgb`` (B, 3, H, W, [-1, 1]) encoded to the model's latents and decoded, as sampling
    decodes a fill (the VAE in the sampler's autocast)."""
    with model._vae_autocast(model.device):
        z = model.encode_images(rgb.to(model.device))
        return model.decode_latents(z).float().clamp(-1, 1)


def train_detail(model, rgb_dataset, cfg: StageConfig, out_dir: str | Path, *, resume: bool = True,
                 progress: bool = True) -> list:
    """Train ``model.detail_net`` (built when missing, for the model's bands: RGB, or a
    one-band modality's) on ``rgb_dataset``'s tiles through the model's VAE and write it to
    ``out_dir/detail/net``. The model itself is untouched."""
    def loss_fn(batch, rng):
        true = batch["image"][:, :model.detail_net.channels]
        mean, log_sigma = model.detail_net.predict(round_trip(model, true))
        r2 = (true - mean).detach().float() ** 2         # the spread learns the mean's error, never moves it
        nll = 0.5 * r2 * torch.exp(-2 * log_sigma.float()) + log_sigma.float()
        return F.l1_loss(mean, true) + SPREAD_WEIGHT * nll.mean()

    meta = {"batch_size": cfg.batch_size, "model_id": str(getattr(model.config, "model_id", ""))}
    return train_side_net(model, "detail_net", lambda: DetailNet(channels=min(model.bands, 3)), loss_fn, rgb_dataset,
                          cfg, Path(out_dir) / "detail",
                          lambda net, folder, step: save_detail_net(net, folder, meta={"steps": int(step), **meta}),
                          resume=resume, progress=progress, desc="detail")


@torch.no_grad()
def calibrate_detail(model, dataset, *, n: int = 32, size: int = 64, seed: int = 0, steps: int = 25,
                     guidance: float = 3.0, batch_size: int = 16, target: float = 1.0) -> dict:
    """Set ``model.detail_net.temperature``, the grain's level for windows without known pixels
    (text-to-image; :func:`~geot2e.models.detail.calibrate_temperature`): ``model`` (its
    modality adapter merged or attached) generates ``n`` tiles from the captions and GSDs of
    ``n`` training tiles of ``dataset``, and the level is the smallest that gives them
    ``target`` of those tiles' texture (1: generated tiles as fine-grained as real ones; with no
    known pixels there is no fill accuracy to trade against, unlike DETAIL_TEMPERATURE's 0.7)."""
    import numpy as np

    from ..models.control import pixel_noise
    from ..models.detail import calibrate_temperature, predict_detail

    net = model.detail_net
    batch = dataset.batch(np.random.default_rng(seed), n, size=size)
    real = batch["image"][:, :net.channels]
    lat = model.latent_shape(size, size)
    noise = torch.stack([torch.randn(lat, generator=torch.Generator().manual_seed(seed + i)) for i in range(n)])
    means, grains = [], []
    for s in range(0, n, batch_size):
        sl = slice(s, min(n, s + batch_size))
        k = sl.stop - sl.start
        decoded = model.inpaint(torch.zeros(k, model.bands, size, size), torch.ones(k, 1, size, size),
                                gsd=batch["gsd"][sl].tolist(), prompts=batch["caption"][sl], guidance=guidance,
                                steps=steps, noise=noise[sl], harmonize=False, detail=False)
        mean, sigma = predict_detail(net, decoded)
        means.append(mean[:, :net.channels])
        grains.append(sigma * pixel_noise(noise[sl], (k, 1, size, size)))
    res = calibrate_temperature(torch.cat(means), torch.cat(grains), real, target=target)
    net.temperature = float(res["temperature"])
    return {**res, "tiles": n, "steps": steps, "guidance": guidance}


def export_detail_net(src: str | Path, model_folder: str | Path) -> Path:
    """Copy the trained pixel-detail network (``src``, a stage's ``detail/net``) into
    ``model_folder/detail``, atomically."""
    return export_side_net(src, model_folder, DETAIL_DIR)
