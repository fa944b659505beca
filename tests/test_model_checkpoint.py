"""Checkpoints: config.json + safetensors per component, bit-identical round trips, content
hash, refusal of pickles and of missing/corrupt/mismatched files, load_model's default and cache."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from geot2e.errors import CheckpointError
from geot2e.models import (Text2Earth, checkpoint_hash, from_pretrained, load_model, save_pretrained,
                           tiny_config)
from geot2e.models import checkpoint as ckpt
from geot2e.models.checkpoint import COMPONENTS


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Text2Earth(tiny_config()).eval()
    with torch.no_grad():  # make the resolution path carry information
        torch.nn.init.normal_(m.resolution.mlp[2].weight, std=0.5)
        torch.nn.init.normal_(m.resolution.null)
    return m


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    return save_pretrained(model, tmp_path_factory.mktemp("ckpt") / "tiny")


def _io():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    m = torch.zeros(2, 1, 32, 32)
    m[..., 8:24, 8:24] = 1
    noise = torch.randn(2, 4, 8, 8, generator=g)
    return x, m, noise


def _run(model):
    x, m, noise = _io()
    return model.inpaint(x, m, gsd=[10.0, None], prompts=["a river", None], steps=2, guidance=2.0, noise=noise)


def _copy(src, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def test_layout_is_config_and_safetensors(saved):
    names = sorted(p.name for p in saved.iterdir())
    assert names == sorted(["config.json"] + [f"{c}.safetensors" for c in COMPONENTS])
    cfg = json.loads((saved / "config.json").read_text())
    assert cfg["bands"] == 3 and cfg["model_id"] == "geot2e-tiny-random"


def test_save_load_gives_bit_identical_outputs(model, saved):
    loaded = from_pretrained(saved)
    assert loaded.checkpoint_hash == checkpoint_hash(saved) and loaded.source == str(saved.resolve())
    for comp in COMPONENTS:
        a, b = getattr(model, comp).state_dict(), getattr(loaded, comp).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), comp
    assert torch.equal(_run(model), _run(loaded))


def test_float16_export_loads_and_is_close(model, saved, tmp_path):
    half = save_pretrained(model, tmp_path / "half", dtype=torch.float16)
    full_size = sum((saved / f"{c}.safetensors").stat().st_size for c in COMPONENTS)
    half_size = sum((half / f"{c}.safetensors").stat().st_size for c in COMPONENTS)
    assert half_size < 0.55 * full_size
    loaded = from_pretrained(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    a, b = _run(model), _run(loaded)
    assert (a - b).abs().max() < 0.02 * (a.abs().max() + 1e-6) + 1e-3


def test_hash_stable_and_sensitive_to_weights(model, saved, tmp_path):
    again = save_pretrained(model, tmp_path / "again")
    assert checkpoint_hash(again) == checkpoint_hash(saved)
    assert checkpoint_hash(saved) == checkpoint_hash(saved) and len(checkpoint_hash(saved)) == 16
    changed = Text2Earth(tiny_config()).eval()
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.unet.conv_out.bias[0] += 1e-3
    assert checkpoint_hash(save_pretrained(changed, tmp_path / "changed")) != checkpoint_hash(saved)


def test_overwrite_replaces_atomically(model, tmp_path):
    dst = save_pretrained(model, tmp_path / "m")
    h = checkpoint_hash(dst)
    save_pretrained(model, dst)
    assert checkpoint_hash(dst) == h
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary or .old leftovers


# ------------------------------------------------------------------ never unpickle
def test_pickle_folder_refused(tmp_path):
    d = tmp_path / "pickled"
    d.mkdir()
    (d / "unet.bin").write_bytes(b"\x80\x04not opened")
    with pytest.raises(CheckpointError, match="pickle"):
        from_pretrained(d)


def test_pickle_file_refused(tmp_path):
    f = tmp_path / "model.ckpt"
    f.write_bytes(b"\x80\x04not opened")
    with pytest.raises(CheckpointError, match="pickle"):
        from_pretrained(f)
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(f, device="cpu")


def test_text_pretrained_pickle_refused(tmp_path):
    from geot2e.models.config import TextConfig
    from geot2e.models.text import TextEncoder

    pt = tmp_path / "open_clip_pytorch_model.pt"
    pt.write_bytes(b"\x80\x04not opened")
    with pytest.raises(CheckpointError, match="pickle"):
        TextEncoder(TextConfig(arch="ViT-B-32", pretrained=str(pt)))


# ------------------------------------------------------------------ broken folders name the file
def test_missing_config_named(saved, tmp_path):
    d = _copy(saved, tmp_path)
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        from_pretrained(d)


@pytest.mark.parametrize("comp", ["unet", "vae"])
def test_missing_component_named(saved, tmp_path, comp):
    d = _copy(saved, tmp_path)
    (d / f"{comp}.safetensors").unlink()
    with pytest.raises(CheckpointError, match=f"{comp}.safetensors"):
        from_pretrained(d)


def test_corrupt_safetensors_named(saved, tmp_path):
    d = _copy(saved, tmp_path)
    f = d / "unet.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="unet.safetensors"):
        from_pretrained(d)


def test_mismatched_config_named(saved, tmp_path):
    d = _copy(saved, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["unet"]["block_out_channels"] = [32, 96]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unet.safetensors"):
        from_pretrained(d)


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.update(evil="x"), "unknown keys"),
    (lambda c: c["scheduler"].update(beta_schedule="os.system"), "beta_schedule"),
    (lambda c: c["scheduler"].update(_target_="os.system"), "unexpected keys"),
    (lambda c: c.update(bands="3"), "bands"),
    (lambda c: c.update(masked_fill="eval"), "masked_fill"),
    (lambda c: c["unet"].update(layers_per_block="x"), "config.json"),
])
def test_bad_config_values_rejected(saved, tmp_path, edit, match):
    d = _copy(saved, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    edit(cfg)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=match):
        from_pretrained(d)


def test_not_json_config(saved, tmp_path):
    d = _copy(saved, tmp_path)
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="JSON"):
        from_pretrained(d)


# ------------------------------------------------------------------ load_model
def test_default_missing_gives_helpful_error(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "DEFAULT_WEIGHTS", tmp_path / "weights" / "default")
    with pytest.raises(CheckpointError, match="default model is missing") as e:
        load_model("default", device="cpu")
    assert "train" in str(e.value) and str(tmp_path) in str(e.value)


def test_load_model_caches_per_path_and_device(saved, monkeypatch):
    monkeypatch.setattr(ckpt, "_CACHE", {})
    a = load_model(saved, device="cpu")
    b = load_model(str(saved), device=torch.device("cpu"))
    assert a is b and not any(p.requires_grad for p in a.parameters())
    assert load_model(a) is a  # a model passes through
    c = load_model(saved, device="cpu", autocast=None)  # explicitly float32
    assert c.autocast_dtype is None
    assert load_model(saved, device="cpu", autocast="bf16").autocast_dtype == torch.bfloat16


def test_saved_checkpoint_does_not_need_the_original_text_weights(tmp_path):
    """A model built from an OpenCLIP arch + local file keeps working after that file is gone."""
    import open_clip
    from safetensors.torch import save_file

    d = tmp_path / "cfg"
    d.mkdir()
    (d / "geot2e-ckpt-tiny-clip.json").write_text(json.dumps({
        "embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(d)
    clip = open_clip.create_model("geot2e-ckpt-tiny-clip", pretrained=None)
    f = tmp_path / "text.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items() if not k.startswith("visual.")}, str(f))
    cfg = tiny_config()
    cfg.text.arch, cfg.text.pretrained = "geot2e-ckpt-tiny-clip", str(f)
    torch.manual_seed(0)
    m = Text2Earth(cfg).eval()
    out = save_pretrained(m, tmp_path / "model")
    f.unlink()
    loaded = from_pretrained(out)
    assert loaded.config.text.pretrained == str(f)  # provenance kept
    assert torch.equal(_run(m), _run(loaded))
