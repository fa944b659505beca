"""Counter-based initial noise: one seed per (seed, run, slice, tile row, tile col, sample).

The noise of a tile depends only on its key, never on the order tiles are run in, the
dask chunking or the worker that runs it, so results are reproducible everywhere.
"""
from __future__ import annotations

import hashlib

import torch

__all__ = ["noise_seed", "tile_noise"]


def noise_seed(seed: int, *key: int) -> int:
    """A 63-bit generator seed derived from ``(seed, *key)`` by BLAKE2b (stable across
    processes and Python versions, unlike ``hash``)."""
    text = "geot2e-noise/" + "/".join(str(int(k)) for k in (seed, *key))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") & (2**63 - 1)


def tile_noise(shape: tuple[int, ...], seed: int, *key: int) -> torch.Tensor:
    """Standard normal noise of ``shape`` (float32, CPU) for the tile identified by ``key``."""
    g = torch.Generator(device="cpu").manual_seed(noise_seed(seed, *key))
    return torch.randn(shape, generator=g, dtype=torch.float32)
