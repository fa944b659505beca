"""Noise schedulers of official Text2Earth folders, built from ``scheduler/scheduler_config.json``.

The folder names a diffusers class in ``_class_name``; only the classes in
:data:`ALLOWED_SCHEDULERS` are built (the name is looked up in a fixed table, nothing
from the file is imported or run), and the file's other keys are passed to the class's
``from_config`` as plain values (numbers, strings, booleans, lists of numbers), so
``timestep_spacing``, ``steps_offset``, ``set_alpha_to_one``, the betas ... are those
the folder ships, as in the official pipelines.
"""
from __future__ import annotations

import inspect
import numbers
from typing import Any

from ..errors import CheckpointError, ParameterError

__all__ = ["ALLOWED_SCHEDULERS", "SHORT_NAMES", "scheduler_class", "build_scheduler", "check_scheduler_config",
           "step_kwargs"]

#: diffusers scheduler classes an official folder may name (deterministic and stochastic samplers)
ALLOWED_SCHEDULERS = (
    "DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler",
    "UniPCMultistepScheduler", "LMSDiscreteScheduler", "HeunDiscreteScheduler", "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler", "DEISMultistepScheduler",
)
#: geot2e's scheduler names → the class configured from the folder (the README's swap, e.g.
#: ``EulerDiscreteScheduler.from_pretrained(model_id, subfolder="scheduler")``)
SHORT_NAMES = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler",
               "dpmsolver++": "DPMSolverMultistepScheduler", "ddpm": "DDPMScheduler"}
#: what a folder without scheduler/ gets: the Stable-Diffusion-2 noise schedule, DDIM
FALLBACK_CONFIG: dict[str, Any] = {
    "_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
    "prediction_type": "epsilon",
}


def _plain(v: Any) -> bool:
    if v is None or isinstance(v, (bool, str)):
        return True
    if isinstance(v, numbers.Real):
        return True
    if isinstance(v, list):
        return all(isinstance(e, numbers.Real) and not isinstance(e, bool) for e in v)
    return False


def check_scheduler_config(cfg: dict[str, Any], *, source: str) -> dict[str, Any]:
    """Validate a ``scheduler_config.json`` dict: an allow-listed ``_class_name`` and plain values.

    Returns the dict without the ``_``-prefixed bookkeeping keys plus ``_class_name``.
    Raises :class:`CheckpointError` naming the file.
    """
    name = cfg.get("_class_name", "DDIMScheduler")
    if name not in ALLOWED_SCHEDULERS:
        raise CheckpointError(f"{source}: _class_name {name!r} is not an allowed scheduler; geot2e builds only "
                              f"{', '.join(ALLOWED_SCHEDULERS)} (no class is imported from a file). Edit "
                              "_class_name to one of them, or pass scheduler='ddim' (or 'euler', ...) explicitly.")
    bad = sorted(k for k, v in cfg.items() if not k.startswith("_") and not _plain(v))
    if bad:
        raise CheckpointError(f"{source}: keys {bad} hold objects; a scheduler config holds plain numbers, "
                              "strings, booleans and lists of numbers only.")
    out = {k: v for k, v in cfg.items() if not k.startswith("_")}
    out["_class_name"] = name
    return out


def scheduler_class(name: str):
    """The diffusers class for an allow-listed class name or a geot2e short name."""
    import diffusers

    cls_name = SHORT_NAMES.get(name, name)
    if cls_name not in ALLOWED_SCHEDULERS:
        raise ParameterError(f"unknown scheduler {name!r}; use 'auto' (the model folder's), one of "
                             f"{sorted(SHORT_NAMES)} or one of {', '.join(ALLOWED_SCHEDULERS)}.")
    return getattr(diffusers, cls_name)


def build_scheduler(cfg: dict[str, Any], name: str = "auto"):
    """A fresh scheduler from a checked folder config.

    ``name="auto"``: the folder's ``_class_name``. Any other name (a geot2e short name or an
    allow-listed class) swaps the class and keeps the folder's configuration, as the
    official README does. ``"dpmsolver++"`` also sets ``algorithm_type="dpmsolver++"``.
    """
    cls = scheduler_class(cfg["_class_name"] if name == "auto" else name)
    kw = {k: v for k, v in cfg.items() if not k.startswith("_")}
    if name == "dpmsolver++":
        kw["algorithm_type"] = "dpmsolver++"
    accepted = set(inspect.signature(cls.__init__).parameters)
    return cls.from_config({k: v for k, v in kw.items() if k in accepted})


def step_kwargs(scheduler, generator) -> dict[str, Any]:
    """``eta`` = 0 and the generator where the scheduler's ``step`` takes them (as the
    official pipelines' ``prepare_extra_step_kwargs``)."""
    params = set(inspect.signature(scheduler.step).parameters)
    kw: dict[str, Any] = {}
    if "eta" in params:
        kw["eta"] = 0.0
    if "generator" in params and generator is not None:
        kw["generator"] = generator
    return kw
