"""The one table of geot2e's sampling and tiling defaults.

Every default of the public functions' shared options lives here, and every other place
reads it: the signatures of :func:`geot2e.inpaint` and its siblings, the model layer
(:mod:`geot2e.models.defaults`, ``Text2Earth.inpaint``), the engine, the command line's
``--help``, the evaluation configs and the benchmarks. Change a default here and nowhere
else. Pure Python (no numpy, torch or xarray), so any layer may import it.

- :data:`SCHEDULERS`: the samplers geot2e builds from a model's noise schedule;
  :data:`SCHEDULER_CHOICES` adds ``"auto"`` (the model's own).
- :data:`MODEL_SAMPLING`: what geot2e's own models sample with when the caller leaves
  ``steps`` / ``scheduler`` / ``harmonize`` to the model (official Text2Earth folders
  carry their own, see :mod:`geot2e.models.defaults`).
- :data:`OPTIONS`: the shared keyword options of the public functions and their defaults;
  :data:`OPERATIONS`: what one operation does differently; :func:`options` merges them.
- :data:`CLOUD_SAMPLERS`: ``remove_clouds``' sampler by the kind of result
  (:func:`cloud_sampler`).

>>> options("inpaint")["guidance"], options("remove_clouds")["harmonize"]
(3.0, 'lowpass')
"""
from __future__ import annotations

import numbers
from typing import Any

__all__ = ["SCHEDULERS", "SCHEDULER_CHOICES", "GUIDANCE", "MODEL_SAMPLING", "OPTIONS", "OPERATIONS",
           "TRANSLATION_TASKS", "SR_SCALES",
           "CLOUD_SAMPLERS", "options", "cloud_sampler", "fill_doc"]

#: samplers geot2e builds from a model's noise schedule (``scheduler=`` of the public functions)
SCHEDULERS = ("ddim", "dpmsolver++", "euler", "ddpm")
#: what ``scheduler=`` accepts: ``"auto"`` is the model's own sampler
SCHEDULER_CHOICES = ("auto", *SCHEDULERS)
#: classifier-free guidance ω of inpaint, outpaint and generate (and of a mean of K cloud fills)
GUIDANCE = 3.0
#: what geot2e's own models sample with when the caller leaves it to the model
MODEL_SAMPLING: dict[str, Any] = {"steps": 25, "scheduler": "ddim", "harmonize": "boundary"}

#: the shared keyword options of the public functions and their defaults (the signatures read them)
OPTIONS: dict[str, Any] = {
    "model": "default",
    "guidance": GUIDANCE,
    "guidance_interval": 1.0,   # share of the steps, noisiest first, that use guidance
    "steps": None,              # the model's (MODEL_SAMPLING; official folders: their own)
    "seed": 0,
    "samples": 1,
    "tile": 256,
    "overlap": 32,
    "gsd": None,
    "device": "auto",
    "progress": None,
    "scheduler": "auto",        # the model's (MODEL_SAMPLING; official folders: their own)
    "harmonize": "auto",        # the model's (MODEL_SAMPLING; official folders: none)
    "radiometry": None,
    "threads": None,
    "few_step": False,          # the model's few-step student (load_model); operations: ONLY_FOR
    "modality": None,           # the model's modality adapter (geot2e.models.modality); None: RGB
}
#: options that only some operations have (the student is trained on masked edits, unguided;
#: a modality adapter generates other bands, translation works on RGB)
ONLY_FOR: dict[str, tuple[str, ...]] = {"few_step": ("inpaint", "remove_clouds"),
                                        "modality": ("inpaint", "remove_clouds", "outpaint", "generate")}
#: what an operation does differently from :data:`OPTIONS`
OPERATIONS: dict[str, dict[str, Any]] = {
    "inpaint": {},
    "outpaint": {},
    "generate": {},
    # guidance and steps None: by the kind of result (CLOUD_SAMPLERS)
    # few_step None: the model's few-step student when it has one and guidance/steps are left as None
    "remove_clouds": {"guidance": None, "guidance_interval": 0.5, "harmonize": "lowpass", "few_step": None},
    # the input image is the condition (a ControlNet's): unguided, the decoder's output as it is
    "translate": {"guidance": 0.0, "harmonize": "none"},
}

#: remove_clouds' sampler when ``guidance`` / ``steps`` are None, by the kind of result:
#: one sample (realism: the texture of real ground) or the mean of K samples (accuracy)
CLOUD_SAMPLERS = {"one sample": {"guidance": 0.0, "steps": 60},
                  "mean of K": {"guidance": 3.0, "steps": 25}}

#: the tasks of :func:`geot2e.translate` and the scales of its super-resolution (here, not in
#: :mod:`geot2e.translation`, so the command line's parser reads them without importing xarray)
TRANSLATION_TASKS = ("pansharpen", "super_resolution", "nir_to_rgb", "dehaze")
SR_SCALES = (2, 4)


def options(operation: str = "inpaint") -> dict[str, Any]:
    """The defaults of the shared options for ``operation`` (a copy).

    >>> options("remove_clouds")["guidance_interval"], options("generate")["tile"]
    (0.5, 256)
    """
    if operation not in OPERATIONS:
        raise KeyError(f"unknown operation {operation!r}; one of {sorted(OPERATIONS)}")
    return {**OPTIONS, **OPERATIONS[operation]}


def cloud_sampler(samples, guidance=None, steps=None, few_step=False) -> tuple[Any, Any]:
    """``(guidance, steps)`` that :func:`geot2e.remove_clouds` runs with: the given values, and for
    those left as None the :data:`CLOUD_SAMPLERS` entry of ``samples``: one sample
    (``samples=1``, realism) or a mean of K (accuracy). The few-step student samples unguided
    with its own number of steps (None: the model's) for both.

    >>> cloud_sampler(1), cloud_sampler(4), cloud_sampler(1, steps=10), cloud_sampler(4, few_step=True)
    ((0.0, 60), (3.0, 25), (0.0, 10), (0.0, None))
    """
    if few_step:
        return (0.0 if guidance is None else guidance), steps
    mode = CLOUD_SAMPLERS["one sample" if isinstance(samples, numbers.Integral) and samples == 1 else "mean of K"]
    return (mode["guidance"] if guidance is None else guidance), (mode["steps"] if steps is None else steps)


def _fields() -> dict[str, Any]:
    one, k = CLOUD_SAMPLERS["one sample"], CLOUD_SAMPLERS["mean of K"]
    rc = options("remove_clouds")
    return {**{f"default_{n}": v for n, v in OPTIONS.items()},
            **{f"clouds_{n}": v for n, v in rc.items()},
            "model_steps": MODEL_SAMPLING["steps"], "model_scheduler": MODEL_SAMPLING["scheduler"],
            "model_harmonize": MODEL_SAMPLING["harmonize"],
            "schedulers": ", ".join(f'"{s}"' for s in SCHEDULERS),
            "one_guidance": f"{one['guidance']:g}", "one_steps": one["steps"],
            "k_guidance": f"{k['guidance']:g}", "k_steps": k["steps"]}


def fill_doc(text: str) -> str:
    """``text`` with ``{name}`` fields filled from this table, for docstrings and help that
    quote a default (as pandas' and matplotlib's docstring substitution):
    ``{default_<option>}``, ``{clouds_<option>}`` (remove_clouds'), ``{model_steps}``,
    ``{model_scheduler}``, ``{model_harmonize}``, ``{schedulers}``, ``{one_guidance}``,
    ``{one_steps}``, ``{k_guidance}``, ``{k_steps}``.

    >>> fill_doc("ω = {default_guidance}; one cloud sample: {one_steps} steps")
    'ω = 3.0; one cloud sample: 60 steps'
    """
    return text.format(**_fields())
