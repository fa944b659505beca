"""scripts/continue_decoder.py: more decoder-stage steps on a trained model (how v4's decoder was made)."""
from __future__ import annotations

import json

import pytest
import torch
from script_helpers import load_script, tiny_train_config

from geot2e.models import Text2Earth, from_pretrained, load_model, save_pretrained, tiny_config

pytestmark = pytest.mark.filterwarnings("ignore::geot2e.errors.PromptTruncatedWarning")


def _script():
    return load_script("continue_decoder")


def test_continue_decoder_extends_the_stage_and_trains_the_decoder_only(tmp_path):
    torch.manual_seed(0)
    base = tmp_path / "base"
    save_pretrained(Text2Earth(tiny_config()), base)
    cfg = tiny_train_config(tmp_path)
    out, exp = tmp_path / "run", tmp_path / "export"
    common = [str(base), str(cfg), str(out), "--batch-size", "2", "--threads", "1"]
    assert _script().main([*common, "--steps", "2"]) == 0
    assert json.loads((out / "decoder" / "state.json").read_text())["step"] == 2
    # a second call with more steps resumes the stage with new loss weights
    assert _script().main([*common, "--steps", "3", "--adv", "4", "--tex", "0.1", "--export", str(exp),
                           "--model-id", "decoder-test"]) == 0
    state = json.loads((out / "decoder" / "state.json").read_text())
    assert state["step"] == 3 and state["config"]["adv_weight"] == 4 and state["config"]["tex_weight"] == 0.1
    m0, m1 = from_pretrained(base), from_pretrained(out / "final")
    a, b = m0.unet.state_dict(), m1.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)                      # denoiser untouched
    a, b = m0.vae.encoder.state_dict(), m1.vae.encoder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)                      # encoder (latent space) untouched
    a, b = m0.vae.decoder.state_dict(), m1.vae.decoder.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)                   # the decoder trained
    assert load_model(exp, device="cpu").model_id == "decoder-test"


def test_new_decoder_of_other_widths_behind_the_same_encoder(tmp_path):
    torch.manual_seed(0)
    base = tmp_path / "base"
    save_pretrained(Text2Earth(tiny_config()), base)          # tiny: VAE widths (32, 32, 32)
    cfg = tiny_train_config(tmp_path)
    out = tmp_path / "run"
    assert _script().main([str(base), str(cfg), str(out), "--batch-size", "2", "--threads", "1", "--steps", "2",
                           "--new-decoder", "64,32,32", "--decoder-layers", "2", "--disc-start", "1"]) == 0
    m0, m1 = from_pretrained(base), from_pretrained(out / "final")      # the saved config rebuilds it
    assert m1.config.vae.decoder_block_out_channels == [64, 32, 32] and m1.config.vae.decoder_layers_per_block == 2
    assert m1.vae.decoder.conv_out.in_channels == 64 and len(m1.vae.decoder.up_blocks[0].resnets) == 3
    a, b = m0.vae.encoder.state_dict(), m1.vae.encoder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)                      # same encoder: same latent space
    a, b = m0.unet.state_dict(), m1.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert m1.vae.decode(m1.vae.encode(x).latent_dist.mean).sample.shape == x.shape


def test_decoder_config_validation():
    from geot2e.errors import CheckpointError

    c = tiny_config().to_dict()
    c["vae"]["decoder_block_out_channels"] = [64, 32]                   # one width short
    with pytest.raises(CheckpointError, match="decoder_block_out_channels"):
        type(tiny_config()).from_dict(c)
    c["vae"]["decoder_block_out_channels"] = [64, 32, 33]                # not a multiple of the groups
    with pytest.raises(CheckpointError, match="decoder_block_out_channels"):
        type(tiny_config()).from_dict(c)
    c["vae"]["decoder_block_out_channels"] = None
    c["vae"]["decoder_layers_per_block"] = 0
    with pytest.raises(CheckpointError, match="decoder_layers_per_block"):
        type(tiny_config()).from_dict(c)
