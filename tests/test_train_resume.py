"""Resume after interruption: an interrupted stage resumed from its checkpoint ends with the
same weights as an uninterrupted run; a SIGKILLed training process resumes from its last
checkpoint; the CI config (configs/tiny_test.yaml) trains end to end."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from geot2e.models import Text2Earth, from_pretrained, tiny_config
from geot2e.train import StageConfig, TileDataset, load_raster_source, train_denoiser, train_vae

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32

# automatic captions are longer than the tiny test models' 16-token context: expected
pytestmark = pytest.mark.filterwarnings("ignore::geot2e.errors.PromptTruncatedWarning")


class Interrupt(Exception):
    pass


class Flaky:
    """A dataset that raises on its ``fail_at``-th batch (a crash in the middle of a run)."""

    def __init__(self, ds, fail_at: int):
        self.ds, self.fail_at, self.calls = ds, fail_at, 0
        self.size = ds.size

    def batch(self, rng, n, **kw):
        self.calls += 1
        if self.calls == self.fail_at:
            raise Interrupt
        return self.ds.batch(rng, n, **kw)


@pytest.fixture(scope="module")
def ds(data_dir):
    return TileDataset([load_raster_source(data_dir / "landsat_224078_rgb_crop.tif", nodata=0)], size=SIZE,
                       gsd_max=120.0)


def _model() -> Text2Earth:
    torch.manual_seed(0)
    return Text2Earth(tiny_config())


def _weights(model, comps):
    return {f"{c}.{k}": v.detach().clone() for c in comps for k, v in getattr(model, c).state_dict().items()}


@pytest.mark.parametrize("stage", ["vae", "denoiser"])
def test_interrupted_then_resumed_equals_uninterrupted(ds, tmp_path, stage):
    cfg = StageConfig(steps=4, batch_size=2, lr=2e-3, warmup=1, bf16=False, log_every=1, save_every=2,
                      ema_decay=0.9)
    train = train_vae if stage == "vae" else train_denoiser
    comps = ["vae"] if stage == "vae" else ["unet", "text_encoder", "resolution"]

    ref = _model()
    ref_log = train(ref, ds, cfg, tmp_path / "ref", progress=False)

    crashed = _model()
    with pytest.raises(Interrupt):       # crash while computing step 4 (last checkpoint: step 2)
        train(crashed, Flaky(ds, fail_at=4), cfg, tmp_path / "run", progress=False)
    st = json.loads((tmp_path / "run" / stage / "state.json").read_text())
    assert st["step"] == 2

    resumed = _model()
    log = train(resumed, ds, cfg, tmp_path / "run", progress=False)
    assert [e["step"] for e in log] == [1, 2, 3, 4]
    np.testing.assert_allclose([e["loss_raw"] for e in log], [e["loss_raw"] for e in ref_log], rtol=1e-5)
    a, b = _weights(ref, comps), _weights(resumed, comps)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)
    # the optimizer state continued (AdamW step counters at 4, not restarted)
    from safetensors.torch import load_file

    t = load_file(str(tmp_path / "run" / stage / "state.safetensors"))
    steps = {float(v) for k, v in t.items() if k.startswith("opt.") and k.endswith(".step")}
    assert steps == {4.0}


def test_state_json_repaired_from_embedded_metadata(ds, tmp_path):
    # a crash between writing state.safetensors and state.json leaves state.json one save behind
    cfg = StageConfig(steps=4, batch_size=2, lr=1e-3, warmup=1, bf16=False, log_every=1, save_every=2)
    train_vae(_model(), ds, cfg, tmp_path, progress=False)
    f = tmp_path / "vae" / "state.json"
    stale = json.loads(f.read_text())
    stale["step"], stale["log"] = 2, stale["log"][:2]
    f.write_text(json.dumps(stale))
    log = train_vae(_model(), ds, cfg, tmp_path, progress=False)   # finds the stage complete
    assert [e["step"] for e in log] == [1, 2, 3, 4]
    assert json.loads(f.read_text())["step"] == 4


SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from geot2e.train import run_training
run_training({cfg!r}, progress=False)
print("FINISHED")
"""


def _tiny_config(tmp_path: Path, **stage_overrides) -> Path:
    d = yaml.safe_load((ROOT / "configs" / "tiny_test.yaml").read_text())
    d["out_dir"] = str(tmp_path / "run")
    for s in d["sources"]:
        s["path"] = str(ROOT / s["path"])
    for k, v in stage_overrides.items():
        d[k].update(v)
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def test_sigkilled_run_resumes_from_last_checkpoint(tmp_path):
    cfg = _tiny_config(tmp_path, vae={"steps": 2, "save_every": 2},
                       denoiser={"steps": 12, "save_every": 2, "batch_size": 2})
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(root=str(ROOT), cfg=str(cfg)))
    state = tmp_path / "run" / "denoiser" / "state.json"
    logf = open(tmp_path / "train.log", "w")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=logf, stderr=subprocess.STDOUT)
    killed_at = None
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                step = json.loads(state.read_text())["step"]
            except (OSError, ValueError, KeyError):
                step = 0
            if step >= 4:
                os.kill(proc.pid, signal.SIGKILL)           # the process this test started
                killed_at = step
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None and killed_at is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        logf.close()
    assert killed_at is not None, "the training subprocess ended before it could be killed"
    saved = json.loads(state.read_text())["step"]
    assert saved >= killed_at and saved < 12

    # resume in this process: it continues from the last checkpoint and finishes every stage
    from geot2e.train import run_training

    model = run_training(cfg, progress=False)
    st = json.loads(state.read_text())
    steps = [e["step"] for e in st["log"]]
    assert st["step"] == 12 and steps == list(range(1, 13))   # no step lost or repeated
    from safetensors.torch import load_file

    t = load_file(str(tmp_path / "run" / "denoiser" / "state.safetensors"))
    assert {float(v) for k, v in t.items() if k.startswith("opt.") and k.endswith(".step")} == {12.0}
    # the CI config's full pipeline: VAE, denoiser, quality-filtered fine-tune, final checkpoint
    assert json.loads((tmp_path / "run" / "finetune" / "state.json").read_text())["step"] == 2
    final = from_pretrained(tmp_path / "run" / "final")
    assert final.config.model_id == "geot2e-tiny-test"
    x = torch.zeros(1, 3, SIZE, SIZE)
    out = final.inpaint(x, torch.ones(1, 1, SIZE, SIZE), gsd=30.0, prompts="green fields", steps=2,
                        generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all() and model is not None
