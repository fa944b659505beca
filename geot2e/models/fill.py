"""Smooth interpolation of unknown pixels (push-pull pyramid + Laplace relaxation).

Used twice: to pre-fill the masked image before the VAE encodes it (so the model never
mistakes a constant fill value for data), and to carry the known pixels' colour into the
generated fill after decoding (:func:`harmonize`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["smooth_fill", "harmonize", "anchor_lowpass", "HARMONIZE_MODES", "harmonize_mode"]

HARMONIZE_MODES = ("lowpass", "boundary", "none")
LOWPASS_SIGMA = 4.0    # pixels; chosen by measurement, see docs/model_card.md "Colour anchoring"

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


def harmonize_mode(value) -> str:
    """Normalise a ``harmonize`` option: True → "boundary", False/None → "none"; a mode
    name is returned as it is. Raises ``ParameterError`` for anything else."""
    if value is True:
        return "boundary"
    if value is False or value is None:
        return "none"
    if isinstance(value, str) and value in HARMONIZE_MODES:
        return value
    from ..errors import ParameterError

    raise ParameterError(f"harmonize={value!r} is not a harmonisation mode; use True (= 'boundary'), False "
                         f"(= 'none') or one of {list(HARMONIZE_MODES)}.")


def _gauss_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with zero padding (callers normalise by a blurred weight)."""
    r = max(1, int(round(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-(t ** 2) / (2 * sigma * sigma))
    g = g / g.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0)), g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r)), g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def anchor_lowpass(decoded: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *,
                   sigma: float = LOWPASS_SIGMA, relax_iters: int = 200) -> torch.Tensor:
    """Give the fill the low frequencies of a smooth interpolation of the known pixels and
    keep the generated detail.

    Inside ``mask``: ``decoded + G_σ ⊛ (S − decoded)``, where ``S`` is :func:`smooth_fill` of
    the known pixels of ``target`` and ``G_σ ⊛`` a Gaussian low-pass (σ in pixels) normalised
    over the masked pixels only. Detail finer than about σ comes from the model, colour and
    brightness at coarser scales from the surroundings, so the fill agrees with its border and
    the diffusion model's colour drift (strongest under classifier-free guidance) is removed.
    Known pixels are returned unchanged from ``decoded``, and so is a sample without any
    known pixel (text-to-image). Linear in ``decoded``: the mean of anchored samples is the
    anchored mean.

    Meant for reconstruction (cloud removal), where the fill should continue what is around
    it; it would also flatten a prompt's new colours (a lake in a field), so the editing
    functions use the boundary mode.
    """
    m = (mask > 0.5).to(torch.float32)
    dec = decoded.float()
    smooth = smooth_fill(target, 1.0 - m, relax_iters=relax_iters)
    num = _gauss_blur((smooth - dec) * m, sigma)
    den = _gauss_blur(m, sigma).clamp_min(1e-6)
    any_known = ((1.0 - m).flatten(1).amax(1) > 0).to(dec.dtype).view(-1, 1, 1, 1)
    return dec + any_known * m * num / den


def harmonize(decoded: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, band: int = 8) -> torch.Tensor:
    """Boundary harmonisation (mode ``"boundary"``): correct ``decoded`` inside ``mask`` by
    the smooth continuation of its residual ``target - decoded`` on the known pixels within
    ``band`` pixels of the mask.

    This removes the colour offset the VAE/diffusion adds at the boundary (Poisson-style
    blending) while keeping the generated texture, but not a colour drift inside the fill
    (see :func:`anchor_lowpass`). Known pixels are returned unchanged from ``decoded`` (the
    caller composites the originals back).
    """
    m = (mask > 0.5).float()
    near = F.max_pool2d(m, 2 * band + 1, stride=1, padding=band)
    ring = near * (1 - m)  # known pixels close to the mask
    resid = (target - decoded).float() * ring
    corr = smooth_fill(resid, ring, relax_iters=16)
    return decoded + corr * m
