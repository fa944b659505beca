"""The distill stage: a few-step LoRA student trained through `geot2e train`, exported beside the
model as ``few_step/``, loaded with ``load_model(few_step=True)`` and used by the public
functions with ``few_step=True``; its training targets agree with the DDIM sampler it runs."""
from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

import geot2e
from geot2e.errors import CheckpointError, ParameterError
from geot2e.models import load_model
from geot2e.models.adapter import ADAPTER_DIR
from geot2e.models.checkpoint import checkpoint_hash, has_few_step
from geot2e.models.text2earth import make_scheduler
from geot2e.train import run_training
from geot2e.train.distill import _ddim, student_schedule, teacher_substeps
from geot2e.train.schema import load_train_config, scheduled
from engine_helpers import tiny_train_config

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::geot2e.errors.PromptTruncatedWarning")


def _config(tmp_path: Path, **distill) -> Path:
    return tiny_train_config(tmp_path, distill={"steps": 3, "batch_size": 2, "lr": 0.001, "warmup": 1,
                                                "ema_decay": 0.9, "save_every": 2, "student_steps": 2,
                                                "teacher_steps": 4, "rank": 4, **distill})


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """A tiny model trained through every stage including distill (seconds)."""
    tmp = tmp_path_factory.mktemp("distill")
    cfg = _config(tmp)
    run_training(cfg, progress=False)
    return tmp


def test_distill_stage_exports_a_student_beside_the_teacher(distilled):
    exported, final = distilled / "exported", distilled / "run" / "final"
    for folder in (exported, final):
        assert has_few_step(folder)
        meta = json.loads((folder / ADAPTER_DIR / "geot2e_lora.json").read_text())
        assert meta["kind"] == "few_step" and meta["student_steps"] == 2 and meta["teacher_steps"] == 4
        assert meta["base_checkpoint_hash"] == checkpoint_hash(folder)   # names the model it belongs to
    # the exported teacher is a plain checkpoint: no adapter layers left in its UNet
    base = load_model(exported, device="cpu")
    assert not any("lora" in k or "base_layer" in k for k in base.unet.state_dict())
    assert base.student_steps is None
    # ... and it is the denoiser's result: the distill stage did not change it
    from geot2e.models import from_pretrained

    den = from_pretrained(distilled / "run" / "denoiser" / "model")
    tf = from_pretrained(final)
    for k, v in den.unet.state_dict().items():
        assert torch.equal(v, tf.unet.state_dict()[k]), k


def test_student_loads_merged_and_differs_from_the_teacher(distilled):
    folder = distilled / "exported"
    base = load_model(folder, device="cpu")
    student = load_model(folder, device="cpu", few_step=True)
    assert student is not base and student.student_steps == 2
    assert student.model_id.endswith("+few-step")
    assert student.checkpoint_hash.startswith(base.checkpoint_hash + "+")
    diff = max(float((a - b).abs().max()) for a, b in zip(student.unet.parameters(), base.unet.parameters()))
    assert diff > 0
    assert load_model(folder, device="cpu", few_step=True) is student      # cached like any model


@pytest.mark.parametrize("objective", ["epsilon", "v_prediction+zero_snr"])
def test_student_schedule_is_the_ddim_samplers(distilled, objective):
    """The training target (one DDIM step from t to the next timestep) is what diffusers' DDIM
    scheduler does at sampling time with the same number of steps, for an epsilon model and for
    a v-prediction model on a zero-terminal-SNR schedule (whose first step starts at ᾱ = 0)."""
    model = load_model(distilled / "exported", device="cpu")
    config = copy.deepcopy(model.config)
    if objective != "epsilon":
        config.scheduler.prediction_type, config.scheduler.rescale_betas_zero_snr = "v_prediction", True
    model = SimpleNamespace(config=config)
    pred = config.scheduler.prediction_type
    for n in (2, 8):
        ts, a_t, a_next = student_schedule(model, n)
        sched = make_scheduler(config, "ddim")
        sched.set_timesteps(n)
        assert torch.equal(ts, sched.timesteps.long())
        if objective != "epsilon":
            assert float(a_t[0]) == 0.0                  # pure noise at the first step
        g = torch.Generator().manual_seed(0)
        z, out = torch.randn(1, 4, 4, 4, generator=g), torch.randn(1, 4, 4, 4, generator=g)
        for i, t in enumerate(sched.timesteps):
            want = sched.step(out, t, z).prev_sample
            got = _ddim(pred, z, out, a_t[i:i + 1], a_next[i:i + 1])
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_teacher_substeps_split_each_student_step_evenly():
    t = torch.tensor([999, 124])
    subs = teacher_substeps(t, t - 125, 8)
    assert [int(s[0]) for s in subs[:1]] == [999] and int(subs[0][1]) == 124
    steps = torch.stack(subs)                            # (8, 2), strictly decreasing, all >= 0
    assert bool((steps[1:] < steps[:-1]).all()) and int(steps.min()) >= 0
    assert int(steps[-1][0]) > 999 - 125 and int(steps[-1][1]) > -1


def test_public_functions_run_the_student_in_its_own_steps(distilled, landsat_da):
    folder = distilled / "exported"
    da = landsat_da[:, :64, :64]
    mask = np.zeros(da.shape[1:], bool)
    mask[20:40, 16:48] = True
    student = load_model(folder, device="cpu", few_step=True)
    student.unet_calls = 0
    out = geot2e.remove_clouds(da, mask, model=str(folder), few_step=True, tile=64, overlap=0, device="cpu",
                               progress=False)
    assert student.unet_calls == 2                        # one tile, 2 steps, unguided: 2 UNet passes
    keep = ~mask
    assert np.array_equal(out.values[:, keep], da.values[:, keep])
    assert out.attrs["geot2e_model_id"].endswith("+few-step")
    assert out.attrs["geot2e_steps"] == 2
    full = geot2e.remove_clouds(da, mask, model=str(folder), few_step=False, tile=64, overlap=0, device="cpu",
                                progress=False)
    assert not np.array_equal(out.values[:, mask], full.values[:, mask])


def test_few_step_without_a_student_is_a_clear_error(tmp_path, distilled, landsat_da):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(distilled / "exported", bare)
    shutil.rmtree(bare / ADAPTER_DIR)
    da = landsat_da[:, :32, :32]
    mask = np.zeros(da.shape[1:], bool)
    mask[8:16, 8:16] = True
    with pytest.raises(CheckpointError, match="few-step student"):
        geot2e.remove_clouds(da, mask, model=str(bare), few_step=True, tile=32, overlap=0, device="cpu")
    with pytest.raises(ParameterError, match="few_step must be True or False"):
        geot2e.inpaint(da, mask, model=str(bare), few_step="yes", tile=32, overlap=0, device="cpu")
    with pytest.raises(ParameterError, match="has no student"):
        geot2e.inpaint(da, mask, model=load_model(bare, device="cpu"), few_step=True, tile=32, overlap=0,
                       device="cpu")


def test_a_model_reference_keeps_the_student_across_pickling(distilled):
    from geot2e.engine.tiles import ModelRef

    student = load_model(distilled / "exported", device="cpu", few_step=True)
    ref = pickle.loads(pickle.dumps(ModelRef(student, "cpu")))
    assert ref.few_step and ref.get() is student           # a worker loads the student, not the teacher


def test_distill_needs_the_finished_denoiser_and_valid_settings(tmp_path):
    cfg = _config(tmp_path)
    run_training(cfg, progress=False, stages=["vae"])
    with pytest.raises(ParameterError, match="needs the finished denoiser"):
        run_training(cfg, progress=False, stages=["distill"])
    bad = _config(tmp_path / "bad", student_steps=3, teacher_steps=4)
    run_training(bad, progress=False, stages=["vae", "denoiser"])
    with pytest.raises(ParameterError, match="multiple of student_steps"):
        run_training(bad, progress=False, stages=["distill"])


def test_stage_weights_may_be_step_schedules(tmp_path):
    assert scheduled(0.5, 0) == 0.5
    sch = [[0, 0.0], [100, 1.0], [200, 0.25]]
    assert [scheduled(sch, s) for s in (0, 99, 100, 199, 200, 10**6)] == [0.0, 0.0, 1.0, 1.0, 0.25, 0.25]
    d = yaml.safe_load((ROOT / "configs" / "tiny_test.yaml").read_text())
    for bad in ([[100, 1.0], [0, 0.0]], [[0, "x"]], [], True, [[0.5, 1.0]]):
        d["decoder"] = {"tex_weight": bad}
        p = tmp_path / "c.yaml"
        p.write_text(yaml.safe_dump(d))
        with pytest.raises(ParameterError, match="tex_weight must be a number or a list"):
            load_train_config(p)
    d["decoder"] = {"tex_weight": [[0, 0.0], [3719, 1.0]], "adv_weight": 1.5}
    p.write_text(yaml.safe_dump(d))
    assert load_train_config(p).decoder.tex_weight == [[0, 0.0], [3719, 1.0]]


def test_cli_few_step_writes_a_cog_whose_provenance_names_the_student(capsys, tmp_path, distilled, landsat_da):
    from geot2e import cli

    src = tmp_path / "in.tif"
    landsat_da.isel(y=slice(200, 264), x=slice(200, 264)).rio.to_raster(src)
    mask = tmp_path / "mask.tif"
    m = landsat_da.isel(band=0, y=slice(200, 264), x=slice(200, 264)).copy(data=np.zeros((64, 64), np.uint8))
    m.values[20:40, 10:30] = 1
    m.attrs = {}
    m.rio.write_nodata(None, inplace=True).rio.to_raster(mask)
    out = tmp_path / "out.tif"
    code = cli.main(["remove-clouds", str(src), str(out), "--mask", str(mask), "--model", str(distilled / "exported"),
                     "--few-step", "--tile", "64", "--overlap", "0", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    prov = geot2e.io.read_provenance(out)
    assert str(prov["geot2e_model_id"]).endswith("+few-step") and int(prov["geot2e_steps"]) == 2
    res, before = geot2e.io.open_raster(out), geot2e.io.open_raster(src)
    keep = m.values == 0
    np.testing.assert_array_equal(res.values[:, keep], before.values[:, keep])


def test_remove_clouds_uses_the_student_by_default_when_the_model_has_one(distilled, tmp_path, landsat_da):
    import shutil

    from geot2e.api import resolve_few_step

    folder = distilled / "exported"
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    shutil.rmtree(bare / ADAPTER_DIR)
    assert resolve_few_step(str(folder), None) is True
    assert resolve_few_step(str(folder), None, steps=30) is False        # a sampler chosen by hand: the full one
    assert resolve_few_step(str(folder), None, guidance=3.0) is False
    assert resolve_few_step(str(folder), False) is False
    assert resolve_few_step(str(bare), None) is False                    # no student: the full sampler, no error
    da = landsat_da[:, :64, :64]
    mask = np.zeros(da.shape[1:], bool)
    mask[10:30, 10:30] = True
    kw = dict(tile=64, overlap=0, device="cpu", progress=False)
    auto = geot2e.remove_clouds(da, mask, model=str(folder), **kw)
    assert auto.attrs["geot2e_model_id"].endswith("+few-step") and auto.attrs["geot2e_steps"] == 2
    full = geot2e.remove_clouds(da, mask, model=str(folder), few_step=False, **kw)
    assert not full.attrs["geot2e_model_id"].endswith("+few-step") and full.attrs["geot2e_steps"] == 60
    plain = geot2e.remove_clouds(da, mask, model=str(bare), **kw)
    assert plain.attrs["geot2e_steps"] == 60
