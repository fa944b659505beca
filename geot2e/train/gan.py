"""A small PatchGAN discriminator for the decoder stage (see :func:`geot2e.train.loop.train_decoder`).

An L1/L2-trained decoder returns the conditional mean of the detail the latents lost, which is
blur: on held-out Landsat crops the v1 decoder kept 0.39 of the truth's Laplacian energy. A
patch discriminator with a hinge loss rewards detail with the statistics of real tiles instead.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["PatchDiscriminator", "hinge_d_loss", "adaptive_weight", "critic_step", "adversarial_term"]


class PatchDiscriminator(nn.Module):
    """Fully convolutional critic: (B, C, H, W) → (B, 1, H/4 − 2, W/4 − 2) patch logits
    (receptive field 34 px)."""

    def __init__(self, in_channels: int, width: int = 64):
        super().__init__()

        def block(cin, cout, stride, norm=True):
            layers = [nn.Conv2d(cin, cout, 4, stride, 1)]
            if norm:
                layers.append(nn.GroupNorm(8, cout))
            layers.append(nn.LeakyReLU(0.2))
            return layers

        self.net = nn.Sequential(*block(in_channels, width, 2, norm=False), *block(width, 2 * width, 2),
                                 *block(2 * width, 4 * width, 1), nn.Conv2d(4 * width, 1, 4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return torch.relu(1.0 - real_logits).mean() + torch.relu(1.0 + fake_logits).mean()


def adaptive_weight(rec_loss: torch.Tensor, adv_loss: torch.Tensor, last: torch.Tensor,
                    *, cap: float = 1e4) -> torch.Tensor:
    """‖∇ rec‖ / ‖∇ adv‖ at the decoder's last layer (Esser et al., 2021): keeps the adversarial
    term on the scale of the reconstruction term whatever their magnitudes."""
    g_rec = torch.autograd.grad(rec_loss, last, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv_loss, last, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, cap).detach()


def critic_step(disc: nn.Module, opt: torch.optim.Optimizer, real: torch.Tensor, fake: torch.Tensor, ctx) -> float:
    """One hinge update of the critic on real tiles against (detached) reconstructions."""
    with ctx:
        d_loss = hinge_d_loss(disc(real).float(), disc(fake.detach()).float())
    opt.zero_grad(set_to_none=True)
    d_loss.backward()
    opt.step()
    return float(d_loss.detach())


def adversarial_term(disc: nn.Module, fake: torch.Tensor, rec_loss: torch.Tensor, last: torch.Tensor,
                     weight: float, ctx) -> tuple[torch.Tensor, float]:
    """The generator's adversarial loss scaled by ``weight`` × the adaptive weight; returns the
    term to add to ``rec_loss`` and the scale used."""
    with ctx:
        adv = -disc(fake).float().mean()
    w = adaptive_weight(rec_loss, adv, last) * weight
    return w * adv, float(w)
