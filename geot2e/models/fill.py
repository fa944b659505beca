"""Smooth interpolation of unknown pixels (push-pull pyramid + Laplace relaxation).

Used twice: to pre-fill the masked image before the VAE encodes it (so the model never
mistakes a constant fill value for data), and to spread the decoder's residual on the
known pixels into the masked area (gradient-domain harmonisation of the fill).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["smooth_fill", "harmonize"]

_LAPLACE = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]])


def smooth_fill(x: torch.Tensor, known: torch.Tensor, *, relax_iters: int = 32) -> torch.Tensor:
    """Fill pixels where ``known == 0`` smoothly from those where ``known == 1``.

    Parameters
    ----------
    x : (B, C, H, W) tensor; values at unknown pixels are ignored.
    known : (B, 1, H, W) tensor in {0, 1} (fractions allowed).
    relax_iters : Jacobi iterations of the Laplace equation after the pyramid fill.

    Returns
    -------
    (B, C, H, W) tensor equal to ``x`` on known pixels. Where a sample has no known pixel
    at all, the fill is 0 (the middle of the model's [-1, 1] range).
    """
    w = known.float().clamp(0, 1)
    # values at unknown pixels are never read (NaN·0 would still be NaN)
    x = torch.where(w > 0, x.float(), torch.zeros((), dtype=torch.float32, device=x.device))
    xs, ws = [x * w], [w]
    # push: weighted averages down the pyramid
    while min(xs[-1].shape[-2:]) > 1:
        v = F.avg_pool2d(xs[-1], 2, ceil_mode=True)
        ww = F.avg_pool2d(ws[-1], 2, ceil_mode=True)
        xs.append(v)
        ws.append(ww)
    # normalise: each level's value is the average of known pixels below it
    vals = [v / ww.clamp_min(1e-8) for v, ww in zip(xs, ws)]
    filled = vals[-1] * (ws[-1] > 0)
    # pull: blend each level with the upsampled coarser fill by its confidence
    for lvl in range(len(vals) - 2, -1, -1):
        up = F.interpolate(filled, size=vals[lvl].shape[-2:], mode="bilinear", align_corners=False)
        conf = (ws[lvl] * (1.0 if lvl == 0 else 4.0)).clamp(0, 1)
        filled = conf * vals[lvl] + (1 - conf) * up
    out = torch.where(w >= 1, x, filled)
    if relax_iters > 0:
        k = _LAPLACE.to(out).view(1, 1, 3, 3).repeat(out.shape[1], 1, 1, 1)
        hard = (w >= 1).to(out)
        for _ in range(relax_iters):
            avg = F.conv2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), k, groups=out.shape[1])
            out = hard * x + (1 - hard) * avg
    any_known = (w.flatten(1).amax(1) > 0).view(-1, 1, 1, 1)
    return torch.where(any_known, out, torch.zeros_like(out))


def harmonize(decoded: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, band: int = 8) -> torch.Tensor:
    """Correct ``decoded`` inside ``mask`` by the smooth continuation of its residual
    ``target - decoded`` on the known pixels within ``band`` pixels of the mask.

    This removes the colour offset the VAE/diffusion adds at the boundary (Poisson-style
    blending) while keeping the generated texture. Known pixels are returned unchanged
    from ``decoded`` (the caller composites the originals back).
    """
    m = (mask > 0.5).float()
    near = F.max_pool2d(m, 2 * band + 1, stride=1, padding=band)
    ring = near * (1 - m)  # known pixels close to the mask
    resid = (target - decoded).float() * ring
    corr = smooth_fill(resid, ring, relax_iters=16)
    return decoded + corr * m
