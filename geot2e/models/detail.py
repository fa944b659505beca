"""The pixel-detail network: what the VAE's decoder cannot carry, restored (pure torch).

The latent diffusion model works four pixels to a latent cell: its decoder returns the layout
and colours of a fill, not the pixel-scale grain of the ground (a VAE round trip of a real tile
keeps 0.3-0.5 of its Laplacian energy). :class:`DetailNet` learns, from the model's own round
trips of the training tiles, two things per band and pixel of a decoded image: the expected
true image (edges the decoder blurred, sharpened where the decoded pixels imply them) and how
far the truth typically lies from it (a Gaussian's standard deviation, high on fields, forest
and towns, low on water). A one-sample fill then gets the expected image plus a level times
that spread times pixel noise drawn from the tile's keyed noise, one field for the three bands
(:meth:`geot2e.models.Text2Earth.add_detail`): the level is set per window so that the fill is
as fine-grained as the known ground around it (:func:`context_level`), and any chunking gives
the same pixels. The grain adds no structure: edges and roads the latents lack stay missing.

Trained through ``geot2e train`` (the ``detail:`` stage, :mod:`geot2e.train.detail`), saved
beside the model as ``detail/`` (safetensors + JSON); a one-band modality (PAN) has its own,
trained on that band's round trips and saved beside its adapter (``modality/pan/detail/``).
Works on the model's [-1, 1] scale; knows no CRS.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .netfile import attach_net, has_net, net_info, save_net

__all__ = ["DetailNet", "DETAIL_DIR", "DETAIL_TEMPERATURE", "predict_detail", "context_level", "save_detail_net", "load_detail_net",
           "has_detail_net", "detail_net_info", "detail_temperature", "calibrate_temperature"]

#: the sub-folder of a model folder that holds its pixel-detail network
DETAIL_DIR = "detail"
DETAIL_META = "geot2e_detail.json"
DETAIL_WEIGHTS = "detail_net.safetensors"
#: channels and residual blocks (on a grid 2 × coarser than the pixels, pixel-unshuffled)
DETAIL_WIDTH, DETAIL_BLOCKS = 48, 6
#: the grain's level, in units of the predicted spread, where a window has no known pixels to
#: match (text-to-image). Chosen on cloud fills of training-region crops (never the held-out
#: sets): the smallest giving one sample 0.7 of the truth's texture on the satellite sets
#: (0.5: 0.68 / 0.69, 0.6: 0.79 / 0.82; model card, "Pixel detail")
DETAIL_TEMPERATURE = 0.6
#: bounds of the predicted log standard deviation (model scale: 4.5e-5 to 1)
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -10.0, 0.0


class DetailNet(nn.Module):
    """The expected true image (B, C, H, W; ``channels`` C: 3 for RGB, 1 for a one-band
    modality such as PAN) of a decoded one ``x`` (same shape, H and W even),
    and the log of the truth's standard deviation around it per band and pixel
    (:meth:`predict`). ``x`` is pixel-unshuffled by 2, run through ``blocks`` residual blocks of
    ``width`` channels, and shuffled back as a residual over ``x`` (the mean) and as a second
    head on the detached features (the spread)."""

    def __init__(self, width: int = DETAIL_WIDTH, blocks: int = DETAIL_BLOCKS, channels: int = 3):
        super().__init__()
        self.width, self.blocks, self.channels = int(width), int(blocks), int(channels)
        #: the grain's level where a window has no known pixels (text-to-image); None:
        #: DETAIL_TEMPERATURE. A network of another band sets its own (calibrate_temperature)
        self.temperature: float | None = None
        w, c4 = self.width, 4 * self.channels
        self.head = nn.Conv2d(c4, w, 3, 1, 1)
        self.body = nn.ModuleList(nn.Sequential(nn.Conv2d(w, w, 3, 1, 1), nn.GELU(), nn.Conv2d(w, w, 3, 1, 1))
                                  for _ in range(self.blocks))
        self.tail = nn.Conv2d(w, c4, 3, 1, 1)
        self.spread = nn.Sequential(nn.Conv2d(w, w, 3, 1, 1), nn.GELU(), nn.Conv2d(w, c4, 3, 1, 1))
        nn.init.zeros_(self.tail.weight)       # starts as the identity
        nn.init.zeros_(self.tail.bias)
        nn.init.zeros_(self.spread[-1].weight)  # and a spread of exp(-3) = 0.05
        nn.init.constant_(self.spread[-1].bias, -3.0)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(f"the detail network takes even heights and widths, not {tuple(x.shape[-2:])}")
        h = self.head(F.pixel_unshuffle(x, 2))
        y = h
        for block in self.body:
            y = y + block(y)
        return y + h

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, log_sigma)`` of the true image given the decoded ``x``."""
        f = self._features(x)
        mean = x + F.pixel_shuffle(self.tail(f), 2)
        log_sigma = F.pixel_shuffle(self.spread(f.detach()), 2).clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)
        return mean, log_sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The expected true image."""
        return x + F.pixel_shuffle(self.tail(self._features(x)), 2)


def predict_detail(net: DetailNet, decoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, sigma)`` of the true image given ``decoded`` (B, C, H, W; its first
    ``net.channels`` bands the network's: RGB, or a modality's band): the network's expected
    image (bands past those as they are, clamped to [-1, 1]) and the truth's standard deviation
    around it (B, net.channels, H, W). A sample is ``mean`` plus ``temperature``
    (:data:`DETAIL_TEMPERATURE`) × ``sigma`` × standard normal pixel noise
    (:meth:`Text2Earth.add_detail`). Odd sizes are padded by replication."""
    p = next(net.parameters())
    nc = int(getattr(net, "channels", 3))
    x = decoded[:, :nc].float()
    h, w = x.shape[-2:]
    ph, pw = h % 2, w % 2
    xin = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
    mean, log_sigma = net.predict(xin.to(p.device, p.dtype))
    mean = mean.float()[..., :h, :w].to(x.device).clamp(-1, 1)
    sigma = torch.exp(log_sigma.float()[..., :h, :w]).to(x.device)
    if decoded.shape[1] > nc:
        mean = torch.cat([mean, decoded[:, nc:].float()], 1)
    return mean, sigma


#: least number of known pixels (away from the mask) a window needs to set its fill's grain
#: from them (:func:`context_level`); fewer, and the grain is DETAIL_TEMPERATURE × the spread
CONTEXT_MIN_PIXELS = 256
#: the most a fill's grain may be raised to match its surroundings, in units of the spread
CONTEXT_MAX_LEVEL = 2.0

_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def _laplace(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = _LAPLACE.to(x.device, x.dtype).expand(c, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c)


def _interior(m: torch.Tensor) -> torch.Tensor:
    """Pixels of ``m`` (B, 1, H, W; 1 = in) whose eight neighbours are in too."""
    return -F.max_pool2d(-m, 3, 1, 1) > 0.5


def context_level(x: torch.Tensor, m: torch.Tensor, mean: torch.Tensor, grain: torch.Tensor, *,
                  fallback: float = DETAIL_TEMPERATURE, context: tuple | None = None) -> torch.Tensor:
    """(B,) how many times ``grain`` (the spread times the pixel noise, B, 3, H, W) a fill
    ``mean`` needs under the mask ``m`` (B, 1, H, W; 1 = synthesized) for its pixel-scale
    energy (the standard deviation of its Laplacian, bands pooled) to equal that of the known
    pixels ``x`` around it: the hidden ground is taken to be as fine-grained as the ground
    around it (a town's fill grainy, a lake's smooth). The grain's Laplacian is taken as
    uncorrelated with the mean's. ``fallback`` where a window has fewer than
    :data:`CONTEXT_MIN_PIXELS` known pixels away from the mask (text-to-image); at most
    :data:`CONTEXT_MAX_LEVEL`. ``context``: ``(x, m)`` of the whole window when ``x``, ``m``,
    ``mean`` and ``grain`` are a box of it (the known pixels of the whole window set the level)."""
    m = m.float()
    cx, cm = (x, m) if context is None else (context[0], context[1].float())
    ctx = _interior(1.0 - cm)
    inside = _interior(m)
    lx, lm, lg = _laplace(cx[:, :3].float()), _laplace(mean[:, :3].float()), _laplace(grain.float())
    out = []
    for b in range(x.shape[0]):
        c, i = ctx[b, 0], inside[b, 0]
        if int(c.sum()) < CONTEXT_MIN_PIXELS or int(i.sum()) < 16:
            out.append(float(fallback))
            continue
        want = float(lx[b][:, c].var())
        have = float(lm[b][:, i].var())
        per_unit = float(lg[b][:, i].var())
        level = ((want - have) / per_unit) ** 0.5 if want > have and per_unit > 0 else 0.0
        out.append(min(level, CONTEXT_MAX_LEVEL))
    return torch.tensor(out, dtype=torch.float32, device=x.device)


def has_detail_net(folder: str | Path) -> bool:
    """True when the model folder carries a pixel-detail network (``detail/``)."""
    return has_net(folder, DETAIL_DIR, DETAIL_META)


def detail_net_info(folder: str | Path) -> dict:
    """What the folder's pixel-detail network was trained with (steps, width, temperature)."""
    return net_info(folder, DETAIL_DIR, DETAIL_META)


def save_detail_net(net: DetailNet, folder: str | Path, *, meta: dict, dtype: torch.dtype | None = None) -> Path:
    """Write ``net`` (safetensors) and ``meta`` (JSON, with its architecture) to ``folder`` atomically."""
    extra = {} if getattr(net, "temperature", None) is None else {"temperature": float(net.temperature)}
    return save_net(net, folder, weights=DETAIL_WEIGHTS, meta_name=DETAIL_META, dtype=dtype,
                    meta={**meta, "width": net.width, "blocks": net.blocks, "channels": net.channels, **extra})


def _built(meta: dict) -> DetailNet:
    net = DetailNet(int(meta.get("width", DETAIL_WIDTH)), int(meta.get("blocks", DETAIL_BLOCKS)),
                    int(meta.get("channels", 3)))
    if meta.get("temperature") is not None:
        net.temperature = float(meta["temperature"])
    return net


def detail_temperature(net) -> float:
    """The grain's level of ``net`` where a window has no known pixels: its own calibrated
    ``temperature`` (a modality's network), else :data:`DETAIL_TEMPERATURE`."""
    t = getattr(net, "temperature", None)
    return DETAIL_TEMPERATURE if t is None else float(t)


def calibrate_temperature(mean: torch.Tensor, grain: torch.Tensor, real: torch.Tensor, *, target: float = 0.7,
                          levels=tuple(round(0.1 * k, 1) for k in range(1, 31))) -> dict:
    """The smallest level (of ``levels``) at which fills ``mean + level × grain`` (text-to-image
    tiles' expected images and their grain, spread × pixel noise; B, C, H, W) keep ``target`` of
    the pixel-scale texture of ``real`` tiles of the same band (std of the Laplacian, pooled):
    the rule :data:`DETAIL_TEMPERATURE` was chosen by, for a network of another band. Calibrate
    on training-region tiles, never on held-out ones. Returns ``{"temperature", "texture"}`` (the
    texture ratio at each level)."""
    def energy(t):
        return float(_laplace(t.float()).std())

    ref = energy(real)
    tex = {float(lv): energy(mean + lv * grain) / ref for lv in levels}
    ok = [lv for lv, r in tex.items() if r >= target - 1e-6]
    return {"temperature": min(ok) if ok else max(tex), "texture": tex}


def load_detail_net(model, folder: str | Path | None = None):
    """Attach the pixel-detail network of ``folder`` (default: ``model.source/detail``) to
    ``model`` (as ``model.detail_net``, float32, eval mode) and return the model. Raises
    :class:`~geot2e.errors.CheckpointError` when there is none."""
    return attach_net(model, folder, sub=DETAIL_DIR, weights=DETAIL_WEIGHTS, meta_name=DETAIL_META,
                      attr="detail_net",
                      build=lambda meta: _built(meta),
                      what="pixel-detail network", section="detail")
