"""Smooth interpolation of unknown pixels (push-pull pyramid + Laplace relaxation, and
OpenCV's Telea fast marching).

Used twice: to pre-fill the masked image before the VAE encodes it (so the model never
mistakes a constant fill value for data), and to carry the known pixels' colour into the
generated fill after decoding (:func:`harmonize`, :func:`anchor_lowpass`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["smooth_fill", "membrane_fill", "telea_fill", "harmonize", "anchor_lowpass", "apply_harmonize", "ANCHORS",
           "HARMONIZE_MODES", "harmonize_mode"]

HARMONIZE_MODES = ("lowpass", "boundary", "none")
LOWPASS_SIGMA = 2.0    # pixels; chosen by measurement, see docs/model_card.md "Colour anchoring"
ANCHORS = ("blend", "harmonic", "telea")


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
        # Jacobi sweeps (each unknown pixel ← the mean of its 4 neighbours), by slicing: ~20×
        # faster on CPU than the equivalent depthwise conv2d, the same sums up to float rounding
        # (benchmarks/bench_engine.py --only anchor)
        # Known pixels never change, so the sweeps run on the box of the unknown ones (all
        # samples) and a ring of one pixel: the same values, at the holes' cost, not the window's
        hard = (w >= 1).to(out)
        box = _unknown_box(hard)
        if box is not None:
            sub, hard_b = out[box], hard[box]
            soft, fixed = 1 - hard_b, hard_b * x[box]
            for _ in range(relax_iters):
                p = F.pad(sub, (1, 1, 1, 1), mode="replicate")
                avg = (p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]) * 0.25
                sub = torch.addcmul(fixed, soft, avg)
            out = out.clone()
            out[box] = sub
    any_known = (w.flatten(1).amax(1) > 0).view(-1, 1, 1, 1)
    return torch.where(any_known, out, torch.zeros_like(out))


def _unknown_box(hard: torch.Tensor) -> tuple | None:
    """The index of the box holding every pixel where ``hard < 1`` (in any sample) and a ring of
    one pixel around it, clipped to the array; None when every pixel is known. A solver that
    keeps known pixels fixed gets the same values on this box as on the whole array."""
    unknown = (hard < 1).flatten(0, 1).any(0)        # (H, W): unknown in any sample
    rows, cols = torch.nonzero(unknown.any(1)).flatten(), torch.nonzero(unknown.any(0)).flatten()
    if not len(rows):
        return None
    y0, y1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, hard.shape[-2])
    x0, x1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, hard.shape[-1])
    return (..., slice(y0, y1), slice(x0, x1))


def _neg_laplacian(u: torch.Tensor) -> torch.Tensor:
    """Sum of the 4 neighbours minus 4 × the pixel, with replicated edges (Neumann)."""
    p = F.pad(u, (1, 1, 1, 1), mode="replicate")
    return p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:] - 4 * u


def membrane_fill(x: torch.Tensor, known: torch.Tensor, *, iters: int = 150, tol: float = 1e-6) -> torch.Tensor:
    """The membrane (harmonic) interpolation of the unknown pixels, by conjugate gradients.

    Solves Laplace's equation on the pixels where ``known < 1`` (4-neighbour stencil, Neumann
    at the array's edges) with the known pixels as boundary values, each band of each sample
    on its own, from :func:`smooth_fill`'s pyramid fill; ``iters`` conjugate-gradient steps
    (about the holes' width in pixels reaches the exact solution to plotting accuracy, where
    Jacobi sweeps need its square). Returns ``x`` on the known pixels; a sample without any
    known pixel is 0, as in :func:`smooth_fill`.
    """
    hard = (known >= 1).to(torch.float32)
    full = smooth_fill(x, known, relax_iters=0)
    box = _unknown_box(hard)
    if box is None:
        return full
    any_known = (hard.flatten(1).amax(1) > 0).view(-1, 1, 1, 1)
    # solved on that box, at the holes' cost; where it meets the array's edge, that edge's Neumann
    u = full[box]
    unk = (1.0 - hard[box]).expand_as(u)
    r = _neg_laplacian(u) * unk
    p = r.clone()
    rr = (r * r).sum((-2, -1), keepdim=True)
    stop = tol * tol * unk.sum((-2, -1), keepdim=True).clamp_min(1)
    active = rr > stop                  # each band of each sample stops on its own: batching changes nothing
    for _ in range(int(iters)):
        if not bool(active.any()):
            break
        ap = -_neg_laplacian(p) * unk
        pap = (p * ap).sum((-2, -1), keepdim=True)
        alpha = torch.where(active & (pap > 0), rr / pap.clamp_min(1e-30), torch.zeros_like(rr))
        u = u + alpha * p
        r = r - alpha * ap
        rr_new = (r * r).sum((-2, -1), keepdim=True)
        active = active & (rr_new > stop)
        beta = torch.where(rr > 0, rr_new / rr.clamp_min(1e-30), torch.zeros_like(rr))
        p = r + beta * p
        rr = rr_new
    full = full.clone()
    full[box] = u
    return torch.where(any_known, full, torch.zeros_like(full))


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


def telea_fill(x: torch.Tensor, known: torch.Tensor, *, radius: float = 5.0) -> torch.Tensor:
    """OpenCV's Telea inpainting (fast marching) of the unknown pixels of ``x`` (B, C, H, W),
    band by band; ``known`` (B, 1, H, W) is 1 where ``x`` is data. Each band's known range is
    mapped to 0–1000 for OpenCV (whose float Telea misbehaves on unit-scale data) and the fill
    clipped to that range. A sample without any known or any unknown pixel is returned as it is."""
    import cv2
    import numpy as np

    out = x.detach().to(torch.float32).cpu().clone()
    unknown = (known < 0.5).cpu().numpy()[:, 0]
    for b in range(out.shape[0]):
        if not unknown[b].any() or unknown[b].all():
            continue
        m8 = unknown[b].astype(np.uint8)
        for c in range(out.shape[1]):
            band = out[b, c].numpy().copy()
            known_v = band[~unknown[b]]
            lo, hi = float(known_v.min()), float(known_v.max())
            span = hi - lo if hi > lo else 1.0
            # OpenCV's float Telea is tuned for 8-bit-like value ranges: on data in [-1, 1] it
            # overshoots wildly (±2 on a smooth field), on the same data ×1000 it matches uint8
            work = ((band - lo) * (1000.0 / span)).astype(np.float32)
            work[unknown[b]] = 0.0
            filled = cv2.inpaint(work, m8, float(radius), cv2.INPAINT_TELEA) * (span / 1000.0) + lo
            band[unknown[b]] = np.clip(filled, lo, hi)[unknown[b]]     # known pixels exactly as given
            out[b, c] = torch.from_numpy(band)
    return out.to(x.device)


def _first_occurrence(target: torch.Tensor, m: torch.Tensor) -> list[int]:
    """For each row of the batch, the index of the first row with the same target and mask."""
    first: list[int] = []
    reps: list[int] = []
    for i in range(target.shape[0]):
        for j in reps:
            if torch.equal(m[i], m[j]) and torch.equal(torch.where(m[i] > 0, 0.0, target[i]),
                                                       torch.where(m[j] > 0, 0.0, target[j])):
                first.append(j)
                break
        else:
            reps.append(i)
            first.append(i)
    return first


def anchor_lowpass(decoded: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *,
                   sigma: float = LOWPASS_SIGMA, anchor: str = "harmonic") -> torch.Tensor:
    """Give the fill the low frequencies of a smooth interpolation of the known pixels and
    keep the generated detail.

    Inside ``mask``: ``decoded + G_σ ⊛ (S − decoded)``, where ``S`` interpolates the known
    pixels of ``target`` and ``G_σ ⊛`` is a Gaussian low-pass (σ in pixels) normalised over the
    masked pixels only. ``anchor`` picks ``S``: ``"harmonic"`` (:func:`membrane_fill`, the
    membrane (Laplace) fill solved to convergence; the default), ``"telea"`` (:func:`telea_fill`)
    or ``"blend"`` (their mean; the default until the membrane was solved exactly: with 200 Jacobi
    sweeps it was not, and the blend made up for it; held out, the mean of 4 anchored on the
    exact membrane is 0.16-0.18 dB more accurate than on the blend, at the same colour error;
    docs/model_card.md). Detail finer than about σ comes from the model, colour and
    brightness at coarser scales from the surroundings, so the fill agrees with its border and
    the diffusion model's colour drift (strongest under classifier-free guidance) is removed.
    Known pixels are returned unchanged from ``decoded``, and so is a sample without any
    known pixel (text-to-image). Linear in ``decoded``: the mean of anchored samples is the
    anchored mean.

    Meant for reconstruction (cloud removal), where the fill should continue what is around
    it; it would also flatten a prompt's new colours (a lake in a field), so the editing
    functions use the boundary mode.
    """
    if anchor not in ANCHORS:
        raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
    m = (mask > 0.5).to(torch.float32)
    dec = decoded.float()
    # K samples of one window arrive as K identical (target, mask) rows: interpolate each once
    first = _first_occurrence(target, m)
    uniq = sorted(set(first))
    t_u, m_u = target[uniq], m[uniq]
    if anchor == "telea":
        smooth = telea_fill(t_u, 1.0 - m_u)
    else:
        smooth = membrane_fill(t_u, 1.0 - m_u)
        if anchor == "blend":
            smooth = 0.5 * (smooth + telea_fill(t_u, 1.0 - m_u))
    if len(uniq) < len(first):
        smooth = smooth[[uniq.index(i) for i in first]]
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


def apply_harmonize(decoded: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """The post-processing of a decoded fill by ``mode`` (from :func:`harmonize_mode`):
    ``"lowpass"`` → :func:`anchor_lowpass`, ``"boundary"`` → :func:`harmonize`, else as it is."""
    if mode == "lowpass":
        return anchor_lowpass(decoded, target, mask)
    if mode == "boundary":
        return harmonize(decoded, target, mask)
    return decoded
