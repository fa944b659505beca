"""Sampling options a model chooses for itself when the caller leaves them out.

geot2e's own models sample with :data:`geot2e.sampling.MODEL_SAMPLING` (DDIM with trailing
timesteps and boundary colour harmonisation; the step count is in that table). Official Text2Earth models (:class:`~geot2e.models.official.OfficialText2Earth`)
carry their own ``sampling_defaults``: the official pipelines' 50 steps, the folder's
scheduler and no harmonisation. The public functions pass ``steps=None``,
``scheduler="auto"`` and ``harmonize="auto"`` through :func:`resolve_sampling`; explicit
values always win.
"""
from __future__ import annotations

from typing import Any

from ..sampling import MODEL_SAMPLING
from .fill import harmonize_mode

__all__ = ["GEOT2E_DEFAULTS", "model_defaults", "resolve_sampling"]

#: what geot2e's own models use (the table: :data:`geot2e.sampling.MODEL_SAMPLING`)
GEOT2E_DEFAULTS: dict[str, Any] = MODEL_SAMPLING


def model_defaults(model) -> dict[str, Any]:
    """``{"steps", "scheduler", "harmonize"}`` the model samples with by default."""
    return {**GEOT2E_DEFAULTS, **dict(getattr(model, "sampling_defaults", None) or {})}


def resolve_sampling(model, *, steps=None, scheduler="auto", harmonize="auto") -> tuple[int, str, str]:
    """``(steps, scheduler, harmonize mode)``: the given values, the model's defaults for
    ``steps=None``, ``scheduler="auto"`` (or None) and ``harmonize="auto"``.

    >>> resolve_sampling(object())
    (25, 'ddim', 'boundary')
    >>> resolve_sampling(object(), steps=10, harmonize=False)
    (10, 'ddim', 'none')
    """
    d = model_defaults(model)
    steps = d["steps"] if steps is None else steps
    scheduler = d["scheduler"] if scheduler in (None, "auto") else scheduler
    harmonize = d["harmonize"] if isinstance(harmonize, str) and harmonize == "auto" else harmonize
    return steps, scheduler, harmonize_mode(harmonize)
