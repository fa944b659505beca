"""One table of defaults (geot2e.sampling): the signatures, the model layer, the engine, the
command line and the evaluation configs all read it, so a default changes in one place."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

import geot2e
from geot2e import sampling
from geot2e.sampling import MODEL_SAMPLING, OPTIONS, SCHEDULER_CHOICES, SCHEDULERS


@pytest.mark.parametrize("operation", ["inpaint", "remove_clouds", "outpaint", "generate"])
def test_public_signatures_are_the_table(operation):
    params = inspect.signature(getattr(geot2e, operation)).parameters
    table = sampling.options(operation)
    shared = [n for n in OPTIONS if n in params and not (operation == "generate" and n == "gsd")]
    expected = [n for n in OPTIONS if operation in sampling.ONLY_FOR.get(n, (operation,))
                and not (operation == "generate" and n == "gsd")]
    assert shared == expected
    assert {n: params[n].default for n in shared} == {n: table[n] for n in shared}


def test_remove_clouds_differs_only_where_the_table_says():
    rc, ip = sampling.options("remove_clouds"), sampling.options("inpaint")
    assert {k for k in rc if rc[k] != ip[k]} == set(sampling.OPERATIONS["remove_clouds"])
    assert sampling.cloud_sampler(1) == tuple(sampling.CLOUD_SAMPLERS["one sample"].values())
    with pytest.raises(KeyError):
        sampling.options("sharpen")


def test_model_layer_reads_the_table():
    from geot2e.models import Text2Earth
    from geot2e.models.defaults import GEOT2E_DEFAULTS, resolve_sampling
    from geot2e.models.official_scheduler import SHORT_NAMES

    assert GEOT2E_DEFAULTS == MODEL_SAMPLING
    assert resolve_sampling(object()) == (MODEL_SAMPLING["steps"], MODEL_SAMPLING["scheduler"],
                                          MODEL_SAMPLING["harmonize"])
    assert set(SHORT_NAMES) == set(SCHEDULERS)  # official folders accept the same names
    p = inspect.signature(Text2Earth.inpaint).parameters
    assert (p["guidance"].default, p["steps"].default, p["scheduler"].default) == (
        OPTIONS["guidance"], MODEL_SAMPLING["steps"], MODEL_SAMPLING["scheduler"])


def test_every_scheduler_builds():
    from geot2e.models import make_scheduler, tiny_config

    cfg = tiny_config()
    assert {type(make_scheduler(cfg, name)).__name__ for name in SCHEDULERS} == {
        "DDIMScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler", "DDPMScheduler"}


def test_engine_defaults_are_the_resolved_table():
    from geot2e.engine.raster import Options
    from geot2e.engine.tiles import Job

    o = Options()
    assert (o.guidance, o.steps, o.scheduler, o.harmonize, o.tile, o.overlap, o.seed, o.samples) == (
        OPTIONS["guidance"], MODEL_SAMPLING["steps"], MODEL_SAMPLING["scheduler"], MODEL_SAMPLING["harmonize"],
        OPTIONS["tile"], OPTIONS["overlap"], OPTIONS["seed"], OPTIONS["samples"])
    job = {f.name: f.default for f in dataclasses.fields(Job)}
    assert (job["guidance"], job["steps"], job["scheduler"], job["harmonize"]) == (
        OPTIONS["guidance"], MODEL_SAMPLING["steps"], MODEL_SAMPLING["scheduler"], MODEL_SAMPLING["harmonize"])


def test_cli_help_and_choices_come_from_the_table():
    from geot2e.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["remove-clouds"]
    acts = {a.dest: a for a in sub._actions}
    assert tuple(acts["scheduler"].choices) == SCHEDULER_CHOICES
    assert (acts["tile"].default, acts["overlap"].default, acts["seed"].default) == (
        OPTIONS["tile"], OPTIONS["overlap"], OPTIONS["seed"])
    one, k = sampling.CLOUD_SAMPLERS["one sample"], sampling.CLOUD_SAMPLERS["mean of K"]
    assert f"{one['steps']} for one sample, {k['steps']} for a mean" in acts["steps"].help
    assert f"{sampling.options('remove_clouds')['guidance_interval']} for remove-clouds" in \
        acts["guidance_interval"].help


def test_api_docstring_quotes_the_table():
    import geot2e.api as api

    assert "{" not in api.__doc__  # every field filled
    assert f"tile, overlap : int, default {OPTIONS['tile']}, {OPTIONS['overlap']}" in api.__doc__


def test_eval_configs_read_the_table():
    from geot2e.eval.resolution_probe import ProbeConfig
    from geot2e.eval.text_control import TextControlConfig

    assert (ProbeConfig().steps, ProbeConfig().guidance) == (MODEL_SAMPLING["steps"], OPTIONS["guidance"])
    assert TextControlConfig().steps == MODEL_SAMPLING["steps"]
