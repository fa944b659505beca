"""Counter-based initial noise: one seed per (seed, run, slice, tile row, tile col, sample).

The noise of a tile depends only on its key, never on the order tiles are run in, the
dask chunking or the worker that runs it, so results are reproducible everywhere.

Samples come in antithetic pairs (:func:`sample_noise`): sample 2k + 1 starts from the
negated noise of sample 2k. Each sample is still a draw of the model (−z is as standard normal
as z), but the pair's errors partly cancel, so the mean of K samples is closer to the mean of
many (a textbook variance reduction for Monte Carlo means; measured in the model card).
"""
from __future__ import annotations

import hashlib

import torch

__all__ = ["noise_seed", "tile_noise", "sample_noise", "ANTITHETIC"]

#: samples 2k and 2k + 1 of a tile start from z and −z (:func:`sample_noise`)
ANTITHETIC = True


def noise_seed(seed: int, *key: int) -> int:
    """A 63-bit generator seed derived from ``(seed, *key)`` by BLAKE2b (stable across
    processes and Python versions, unlike ``hash``)."""
    text = "geot2e-noise/" + "/".join(str(int(k)) for k in (seed, *key))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") & (2**63 - 1)


def tile_noise(shape: tuple[int, ...], seed: int, *key: int) -> torch.Tensor:
    """Standard normal noise of ``shape`` (float32, CPU) for the tile identified by ``key``."""
    g = torch.Generator(device="cpu").manual_seed(noise_seed(seed, *key))
    return torch.randn(shape, generator=g, dtype=torch.float32)


def sample_noise(shape: tuple[int, ...], seed: int, *key: int, sample: int) -> torch.Tensor:
    """The initial noise of sample ``sample`` of the tile ``key``: :func:`tile_noise` of
    ``(*key, sample)``, or with :data:`ANTITHETIC` the negated noise of the even sample before
    it for an odd ``sample``."""
    if ANTITHETIC and sample % 2:
        return -tile_noise(shape, seed, *key, sample - 1)
    return tile_noise(shape, seed, *key, sample)
