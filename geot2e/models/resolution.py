"""Resolution embedding rho = f(GSD) added to the timestep embedding (c = rho + g(t))."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = ["ResolutionEmbedding"]


class ResolutionEmbedding(nn.Module):
    """u = log2(GSD [m]) normalised to [-1, 1] over [gsd_min, gsd_max]; sinusoidal features;
    MLP whose last layer starts at zero. A learned null vector rho_null replaces the MLP
    output where the GSD is unknown (None/NaN) or dropped in training."""

    def __init__(self, embed_dim: int, *, gsd_min: float = 0.3, gsd_max: float = 1000.0, num_freqs: int = 8):
        super().__init__()
        self.gsd_min, self.gsd_max, self.num_freqs = float(gsd_min), float(gsd_max), int(num_freqs)
        in_dim = 2 * num_freqs + 1
        self.mlp = nn.Sequential(nn.Linear(in_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)
        self.null = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("freqs", torch.arange(1, num_freqs + 1, dtype=torch.float32) * math.pi / 2,
                             persistent=False)

    def normalise(self, gsd: torch.Tensor) -> torch.Tensor:
        lo, hi = math.log2(self.gsd_min), math.log2(self.gsd_max)
        return 2 * (torch.log2(gsd.clamp_min(1e-6)) - lo) / (hi - lo) - 1

    def features(self, gsd: torch.Tensor) -> torch.Tensor:
        u = self.normalise(gsd).unsqueeze(-1)
        ang = u * self.freqs.to(u)
        return torch.cat([u, torch.sin(ang), torch.cos(ang)], dim=-1)

    @staticmethod
    def as_tensor(gsd: float | Sequence[float | None] | torch.Tensor | None, batch: int,
                  device: torch.device | str = "cpu") -> torch.Tensor:
        """GSD per sample as a float tensor with NaN for 'unknown'."""
        if gsd is None:
            return torch.full((batch,), float("nan"), device=device)
        if isinstance(gsd, torch.Tensor):
            t = gsd.float().to(device).reshape(-1)
        elif isinstance(gsd, (int, float)):
            t = torch.full((batch,), float(gsd), device=device)
        else:
            t = torch.tensor([float("nan") if g is None else float(g) for g in gsd], device=device)
        if t.numel() == 1 and batch > 1:
            t = t.expand(batch).clone()
        if t.numel() != batch:
            from ..errors import ParameterError

            raise ParameterError(f"got {t.numel()} GSD values for a batch of {batch}; give one value or one per tile.")
        return t

    def forward(self, gsd: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """gsd: (B,) metres, NaN = unknown; drop: optional (B,) bool → use rho_null."""
        unknown = torch.isnan(gsd)
        if drop is not None:
            unknown = unknown | drop.to(unknown.device)
        feats = self.features(torch.where(unknown, torch.ones_like(gsd), gsd))
        rho = self.mlp(feats.to(self.mlp[0].weight.dtype))
        return torch.where(unknown.unsqueeze(-1), self.null.to(rho.dtype).expand_as(rho), rho)
