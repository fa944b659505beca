"""Sampler defaults that depend on what a result is for (no heavy imports: the evaluation's
direct route uses them without the geo stack)."""
from __future__ import annotations

import numbers
from typing import Any

__all__ = ["CLOUD_SAMPLERS", "cloud_sampler"]

#: remove_clouds' sampler when ``guidance`` / ``steps`` are None, by the kind of result:
#: one sample (realism: the texture of real ground) or the mean of K samples (accuracy)
CLOUD_SAMPLERS = {"one sample": {"guidance": 0.0, "steps": 60},
                  "mean of K": {"guidance": 3.0, "steps": 25}}


def cloud_sampler(samples, guidance=None, steps=None) -> tuple[Any, Any]:
    """``(guidance, steps)`` that :func:`geot2e.remove_clouds` runs with: the given values, and for
    those left as None the :data:`CLOUD_SAMPLERS` entry of ``samples``: one sample
    (``samples=1``, realism) ω = 0 with 60 steps; a mean of K (accuracy) ω = 3 with 25 steps.

    >>> cloud_sampler(1), cloud_sampler(4), cloud_sampler(1, steps=10)
    ((0.0, 60), (3.0, 25), (0.0, 10))
    """
    mode = CLOUD_SAMPLERS["one sample" if isinstance(samples, numbers.Integral) and samples == 1 else "mean of K"]
    return (mode["guidance"] if guidance is None else guidance), (mode["steps"] if steps is None else steps)
