"""scripts/continue_denoiser.py: one more denoiser stage on a trained model (how v3 was made)."""
from __future__ import annotations

import json

import pytest
import torch
from script_helpers import load_script, tiny_train_config

from geot2e.models import Text2Earth, from_pretrained, load_model, save_pretrained, tiny_config

pytestmark = pytest.mark.filterwarnings("ignore::geot2e.errors.PromptTruncatedWarning")


def _script():
    return load_script("continue_denoiser")


def test_continue_denoiser_trains_the_denoiser_only_and_exports(tmp_path):
    torch.manual_seed(0)
    base = tmp_path / "base"
    save_pretrained(Text2Earth(tiny_config()), base)
    cfg = tiny_train_config(tmp_path)
    out, exp = tmp_path / "run", tmp_path / "export"
    assert _script().main([str(base), str(cfg), str(out), "--steps", "4", "--stop-at", "2", "--batch-size", "2",
                           "--threads", "1", "--export", str(exp), "--model-id", "continued-test"]) == 0
    m0, m1 = from_pretrained(base), from_pretrained(out / "final")
    a, b = m0.vae.state_dict(), m1.vae.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)                      # VAE (and decoder) untouched
    a, b = m0.unet.state_dict(), m1.unet.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)                   # the denoiser trained
    state = json.loads((out / "resfocus" / "state.json").read_text())    # resumable stage folder,
    assert state["step"] == 2 and state["config"]["steps"] == 4           # stopped at --stop-at
    assert load_model(exp, device="cpu").model_id == "continued-test"
    from safetensors import safe_open

    with safe_open(str(exp / "unet.safetensors"), framework="pt") as fh:     # the export is float16
        assert fh.get_tensor(next(iter(fh.keys()))).dtype == torch.float16
