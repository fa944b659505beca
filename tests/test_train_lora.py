"""LoRA fine-tuning with peft: adapters train, base weights stay, safetensors adapter, merge."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from geot2e.errors import CheckpointError, ParameterError
from geot2e.models import Text2Earth, from_pretrained, save_pretrained, tiny_config
from geot2e.train import StageConfig, TileDataset, load_raster_source
from geot2e.train.lora import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, add_lora, has_lora, load_lora, lora_parameters,
                               merge_lora, save_lora, train_lora)

SIZE = 32

# automatic captions are longer than the tiny test models' 16-token context: expected
pytestmark = pytest.mark.filterwarnings("ignore::geot2e.errors.PromptTruncatedWarning")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    torch.manual_seed(0)
    m = Text2Earth(tiny_config())
    d = tmp_path_factory.mktemp("base") / "model"
    save_pretrained(m, d)
    return d


@pytest.fixture(scope="module")
def rgbn_ds(data_dir):
    # "a new sensor/region": the 5 m aerial RGBN raster (RGB for the model, NIR for captions)
    return TileDataset([load_raster_source(data_dir / "rgbn_5m_crop.tif", nir_band=3)], size=SIZE, gsd_max=40.0)


def _probe(model: Text2Earth) -> torch.Tensor:
    """Deterministic UNet output on fixed inputs (no sampling noise)."""
    g = torch.Generator().manual_seed(7)
    c = model.latent_channels
    z = torch.randn(2, c, 8, 8, generator=g)
    zm = torch.randn(2, c, 8, 8, generator=g)
    m = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    t = torch.tensor([100, 700])
    model.autocast_dtype = None
    with torch.no_grad():
        text = model.encode_prompts(["green fields", "a river"])
        res = model.resolution(torch.tensor([5.0, 20.0]))
        return model.predict(z, t, m, zm, text, res).float()


def _base_state(model) -> dict:
    out = {}
    for comp in ("vae", "text_encoder", "resolution", "unet"):
        for k, v in getattr(model, comp).state_dict().items():
            if "lora_" in k:
                continue
            out[f"{comp}.{k.replace('.base_layer', '')}"] = v.detach().clone()
    return out


@pytest.fixture(scope="module")
def trained(base_dir, rgbn_ds, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora_run")
    model = from_pretrained(base_dir)
    before_out = _probe(model)
    before_state = _base_state(model)
    add_lora(model, rank=4, alpha=8)
    torch.testing.assert_close(_probe(model), before_out, atol=1e-6, rtol=0)   # B = 0 at init: same function
    cfg = StageConfig(steps=4, batch_size=2, lr=5e-3, warmup=1, bf16=False, log_every=1, save_every=2,
                      ema_decay=0.5)
    log = train_lora(model, rgbn_ds, cfg, out, progress=False)
    return {"model": model, "out": out, "log": log, "before_out": before_out, "before_state": before_state,
            "cfg": cfg}


def test_only_adapters_are_trainable(base_dir):
    model = from_pretrained(base_dir)
    n_unet = sum(p.numel() for p in model.unet.parameters())
    add_lora(model, rank=4, alpha=8)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and n.startswith("unet.") for n in trainable)
    n_lora = sum(p.numel() for p in lora_parameters(model).values())
    assert 0 < n_lora < 0.1 * n_unet
    with pytest.raises(ParameterError, match="already"):
        add_lora(model)
    with pytest.raises(ParameterError, match="targets"):
        add_lora(from_pretrained(base_dir), targets=("no_such_layer",))


def test_lora_changes_outputs_and_keeps_base_weights(trained):
    model = trained["model"]
    assert [e["step"] for e in trained["log"]] == [1, 2, 3, 4]
    after = _probe(model)
    assert (after - trained["before_out"]).abs().max() > 1e-4    # the adapters learned something
    now = _base_state(model)
    assert now.keys() == trained["before_state"].keys()
    for k, v in trained["before_state"].items():
        assert torch.equal(now[k], v), k                         # every base weight bit-identical


def test_adapter_is_safetensors_with_json(trained):
    from safetensors import safe_open

    d = trained["out"] / "lora" / "adapter"
    f = d / ADAPTER_WEIGHTS
    raw = f.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])                            # the safetensors layout: a JSON header
    keys = [k for k in header if k != "__metadata__"]
    assert keys and all(("lora_A" in k or "lora_B" in k) for k in keys)
    with safe_open(str(f), framework="pt") as fh:
        assert set(fh.keys()) == set(keys)
    cfg = json.loads((d / ADAPTER_CONFIG).read_text())
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8 and set(cfg["target_modules"]) == {"to_q", "to_k", "to_v",
                                                                                        "to_out.0"}
    meta = json.loads((d / "geot2e_lora.json").read_text())
    assert meta["base_model_id"] == "geot2e-tiny-random"
    assert not any(p.suffix in (".bin", ".pt", ".pth", ".pkl") for p in d.iterdir())
    assert sum(p.stat().st_size for p in d.iterdir()) < 1_000_000


def test_load_lora_on_fresh_base_reproduces_outputs(trained, base_dir):
    fresh = from_pretrained(base_dir)
    load_lora(fresh, trained["out"] / "lora" / "adapter")
    torch.testing.assert_close(_probe(fresh), _probe(trained["model"]), atol=1e-6, rtol=0)


def test_merge_equals_lora_and_saves_normal_checkpoint(trained, base_dir, tmp_path):
    m = from_pretrained(base_dir)
    load_lora(m, trained["out"] / "lora" / "adapter")
    lora_out = _probe(m)
    merge_lora(m)
    assert not has_lora(m) and not any("lora_" in k for k in m.unet.state_dict())
    torch.testing.assert_close(_probe(m), lora_out, atol=1e-5, rtol=1e-5)
    save_pretrained(m, tmp_path / "merged")
    back = from_pretrained(tmp_path / "merged")               # a plain checkpoint again
    torch.testing.assert_close(_probe(back), lora_out, atol=1e-5, rtol=1e-5)
    assert back.config.model_id.endswith("+lora")
    with pytest.raises(ParameterError):
        merge_lora(back)


def test_adapter_loading_refuses_pickles_and_junk(tmp_path, base_dir):
    (tmp_path / "adapter_model.bin").write_bytes(b"\x80\x04junk")
    with pytest.raises(CheckpointError, match="pickle"):
        load_lora(from_pretrained(base_dir), tmp_path)
    with pytest.raises(ParameterError):
        save_lora(from_pretrained(base_dir), tmp_path / "x")


def test_lora_stage_resumes(trained, base_dir, rgbn_ds, tmp_path):
    import dataclasses
    import shutil

    shutil.copytree(trained["out"], tmp_path / "run")
    m = add_lora(from_pretrained(base_dir), rank=4, alpha=8)
    log = train_lora(m, rgbn_ds, dataclasses.replace(trained["cfg"], steps=6), tmp_path / "run", progress=False)
    assert [e["step"] for e in log] == [1, 2, 3, 4, 5, 6]      # steps 1-4 from the saved state, then 5-6
    assert log[:4] == trained["log"]


def test_config_driven_lora_run(base_dir, tmp_path, data_dir):
    from geot2e.train import run_training

    cfg = {"out_dir": str(tmp_path / "run"), "base_model": str(base_dir), "tile": SIZE, "gsd_max": 40.0,
           "sources": [{"path": str(data_dir / "rgbn_5m_crop.tif"), "bands": [1, 2, 3, 4], "nir_band": 3}],
           "lora": {"rank": 2, "alpha": 2, "merge": True},
           "denoiser": {"steps": 2, "batch_size": 2, "lr": 1e-3, "warmup": 1, "bf16": False, "save_every": 2}}
    p = tmp_path / "lora.yaml"
    p.write_text(yaml.safe_dump(cfg))
    model = run_training(p, progress=False)
    assert not has_lora(model)
    assert (tmp_path / "run" / "lora" / "adapter" / ADAPTER_WEIGHTS).is_file()
    final = from_pretrained(tmp_path / "run" / "final")
    torch.testing.assert_close(_probe(final), _probe(model), atol=1e-6, rtol=0)
    x = torch.zeros(1, 3, SIZE, SIZE)
    out = final.inpaint(x, torch.ones(1, 1, SIZE, SIZE), gsd=5.0, prompts="green fields", steps=2,
                        generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, SIZE, SIZE) and torch.isfinite(out).all()
    np.testing.assert_array_equal(final.config.unet.block_out_channels, [32, 64])
