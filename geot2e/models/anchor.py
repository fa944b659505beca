"""The learned colour anchor: the expected image under a mask, by regression (pure torch).

Cloud removal anchors each sampled fill's low frequencies (Gaussian σ = 2 px) on a smooth
interpolation of the known pixels (:func:`~geot2e.models.fill.anchor_lowpass`), so the mean
of K fills is, up to the samples' leftover detail, that interpolation's low-pass. A membrane
(harmonic) fill is the best a smooth interpolant does, but it knows nothing of ground: a
shoreline, a field edge or a river that enters a hole on one side and leaves on the other is
blurred into a saddle. :class:`AnchorNet` is a small U-Net that starts from that membrane and
learns, by least squares on real tiles under random cloud masks, the correction towards the
truth's conditional mean: what the surrounding ground implies for the hole's colours at the
scales the anchor keeps.

It is affine in the data: each tile's bands are centred and scaled by the known pixels' mean
and spread before the network and back after it, so a sensor's value scale does not matter,
and the known pixels are returned exactly. Trained through ``geot2e train`` (the ``anchor:``
stage, :mod:`geot2e.train.anchor`), saved beside the model as ``anchor/``. Knows no CRS.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fill import membrane_fill
from .netfile import attach_net, has_net, net_info, save_net

__all__ = ["AnchorNet", "ANCHOR_DIR", "ANCHOR_WIDTHS", "save_anchor_net", "load_anchor_net", "has_anchor_net",
           "anchor_net_info", "expected_fill"]

#: the sub-folder of a model folder that holds its anchor network
ANCHOR_DIR = "anchor"
ANCHOR_META = "geot2e_anchor.json"
ANCHOR_WIDTHS_KEY = "widths"
ANCHOR_WEIGHTS = "anchor_net.safetensors"
#: channels per level of the U-Net, from half resolution (each next level half the size again):
#: the anchor keeps scales over σ = 2 px; the correction (bilinear from a grid twice as coarse) is
#: for the scales the membrane gets wrong, over 4 px
ANCHOR_WIDTHS = (48, 64, 96, 128)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, dilation: int = 1):
        super().__init__()
        self.a = nn.Conv2d(cin, cout, 3, 1, dilation, dilation=dilation)
        self.b = nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        return self.skip(x) + self.b(F.gelu(self.a(F.gelu(x))))


class AnchorNet(nn.Module):
    """The expected image under a mask from the known pixels and their membrane fill.

    Input to :meth:`forward`: ``x`` (B, C, H, W) on any scale (read only where ``known``),
    ``known`` (B, 1, H, W) in {0, 1}. Output: (B, C, H, W), ``x`` on known pixels and the
    membrane fill plus the network's correction on the others. H and W need not be multiples
    of anything (the levels pad and crop).
    """

    def __init__(self, channels: int = 3, widths=ANCHOR_WIDTHS):
        super().__init__()
        self.channels, self.widths = int(channels), tuple(int(w) for w in widths)
        c, ws = self.channels, self.widths
        self.inp = nn.Conv2d(4 * (2 * c + 1), ws[0], 3, 1, 1)     # pixel-unshuffled by 2
        self.down = nn.ModuleList(nn.Conv2d(ws[i], ws[i + 1], 3, 2, 1) for i in range(len(ws) - 1))
        self.enc = nn.ModuleList(_Block(w, w) for w in ws)
        self.mid = nn.Sequential(_Block(ws[-1], ws[-1], 2), _Block(ws[-1], ws[-1], 4))
        self.dec = nn.ModuleList(_Block(ws[i] + ws[i + 1], ws[i]) for i in range(len(ws) - 1))
        self.out = nn.Conv2d(ws[0], c, 3, 1, 1)
        nn.init.zeros_(self.out.weight)       # starts as the membrane fill exactly
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        k = (known > 0.5).to(torch.float32)
        x = torch.where(k > 0, x.float(), torch.zeros((), device=x.device))
        n = k.flatten(1).sum(1).clamp_min(1).view(-1, 1, 1, 1)
        mu = (x * k).flatten(2).sum(2).view(*x.shape[:2], 1, 1) / n
        sd = (((x - mu) * k) ** 2).flatten(2).sum(2).view(*x.shape[:2], 1, 1).div(n).sqrt()
        sd = sd.mean(1, keepdim=True).clamp_min(1e-3)        # one scale for the bands: colours keep their ratios
        xn = (x - mu) / sd * k
        base = membrane_fill(xn, k)
        h, w = x.shape[-2:]
        f = 2 ** len(self.widths)
        ph, pw = (-h) % f, (-w) % f
        feats = F.pad(torch.cat([xn, base, k], 1), (0, pw, 0, ph), mode="replicate")
        skips = []
        y = self.enc[0](self.inp(F.pixel_unshuffle(feats, 2)))
        for i, down in enumerate(self.down):
            skips.append(y)
            y = self.enc[i + 1](down(y))
        y = self.mid(y)
        for i in range(len(self.dec) - 1, -1, -1):
            s = skips[i]
            y = F.interpolate(y, size=s.shape[-2:], mode="bilinear", align_corners=False)
            y = self.dec[i](torch.cat([s, y], 1))
        corr = F.interpolate(self.out(y), scale_factor=2, mode="bilinear", align_corners=False)[..., :h, :w]
        pred = (base + corr) * sd + mu
        return torch.where(k > 0, x, pred)


@torch.no_grad()
def expected_fill(net: AnchorNet, x: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """``net``'s expected image (float32) for ``x`` with ``known`` pixels, in eval mode; the
    network's bands are the first ``net.channels`` of ``x``, the others get the membrane fill."""
    c = net.channels
    out = net(x[:, :c].float(), known)
    if x.shape[1] > c:
        out = torch.cat([out, membrane_fill(x[:, c:].float(), known)], 1)
    return out


def has_anchor_net(folder: str | Path) -> bool:
    """True when the model folder carries an anchor network (``anchor/``)."""
    return has_net(folder, ANCHOR_DIR, ANCHOR_META)


def anchor_net_info(folder: str | Path) -> dict:
    """What the folder's anchor network was trained with (steps, widths, data)."""
    return net_info(folder, ANCHOR_DIR, ANCHOR_META)


def save_anchor_net(net: AnchorNet, folder: str | Path, *, meta: dict, dtype: torch.dtype | None = None) -> Path:
    """Write ``net`` (safetensors) and ``meta`` (JSON, with its shape) to ``folder`` atomically."""
    return save_net(net, folder, weights=ANCHOR_WEIGHTS, meta_name=ANCHOR_META, dtype=dtype,
                    meta={**meta, "channels": net.channels, ANCHOR_WIDTHS_KEY: list(net.widths)})


def load_anchor_net(model, folder: str | Path | None = None):
    """Attach the anchor network of ``folder`` (default: ``model.source/anchor``) to ``model``
    (as ``model.anchor_net``, float32, eval mode) and return the model. Raises
    :class:`~geot2e.errors.CheckpointError` when there is none."""
    return attach_net(model, folder, sub=ANCHOR_DIR, weights=ANCHOR_WEIGHTS, meta_name=ANCHOR_META, attr="anchor_net",
                      build=lambda meta: AnchorNet(int(meta.get("channels", 3)),
                                                   meta.get(ANCHOR_WIDTHS_KEY, ANCHOR_WIDTHS)),
                      what="anchor network", section="anchor")
