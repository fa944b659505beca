"""Training configs (YAML/TOML): the repo's configs load; unknown keys are rejected."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from geot2e.errors import ParameterError
from geot2e.train.config import TrainConfig, load_train_config
from geot2e.train.loop import StageConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["default.yaml", "tiny_test.yaml", "lora_example.yaml"])
def test_repo_configs_load(name):
    cfg = load_train_config(ROOT / "configs" / name)
    assert isinstance(cfg, TrainConfig) and cfg.sources
    assert isinstance(cfg.denoiser, StageConfig)


def test_tiny_test_config_points_at_committed_crops():
    cfg = load_train_config(ROOT / "configs" / "tiny_test.yaml")
    for s in cfg.sources:
        assert (ROOT / s.path).is_file(), s.path
    assert cfg.tile == 32 and cfg.vae.steps <= 10 and cfg.denoiser.steps <= 10


def _write(tmp_path, d, name="c.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d))
    return p


BASE = {"out_dir": "x", "sources": [{"path": "a.tif"}], "denoiser": {"steps": 3}}


@pytest.mark.parametrize("bad,where", [
    ({"learning_rate": 1.0}, "learning_rate"),                                  # top level
    ({"denoiser": {"steps": 3, "lr_max": 1.0}}, "lr_max"),                      # stage section
    ({"sources": [{"path": "a.tif", "band": [1]}]}, "band"),                    # source entry
    ({"sources": [{"path": "a.tif", "kind": "hdf"}]}, "kind"),                  # source kind
    ({"world_size": 0}, "world_size"),
])
def test_unknown_or_bad_keys_rejected(tmp_path, bad, where):
    with pytest.raises(ParameterError, match=where):
        load_train_config(_write(tmp_path, {**BASE, **bad}))


def test_toml_and_missing_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('out_dir = "x"\ntile = 32\n[[sources]]\npath = "a.tif"\nweight = 2.0\n'
                 '[denoiser]\nsteps = 4\nlr = 0.001\n')
    cfg = load_train_config(p)
    assert cfg.tile == 32 and cfg.sources[0].weight == 2.0 and cfg.denoiser.steps == 4
    with pytest.raises(ParameterError, match="not found"):
        load_train_config(tmp_path / "nope.yaml")


def test_new_sections_parse(tmp_path):
    cfg = load_train_config(_write(tmp_path, {
        **BASE, "caption_table": {"path": "t.csv", "crs": "EPSG:4326"}, "world_size": 2, "device": "cpu",
        "base_model": "default", "lora": {"rank": 4},
        "sources": [{"path": "a.tif"}, {"path": "shards/", "kind": "git10m", "weight": 0.5}]}))
    assert cfg.world_size == 2 and cfg.lora == {"rank": 4} and cfg.sources[1].kind == "git10m"
    assert cfg.caption_table["crs"] == "EPSG:4326"


@pytest.mark.parametrize("scale", [True, False])
def test_caption_scale_switch(scale):
    """caption_scale: false leaves the GSD to the resolution embedding (no scale words in captions)."""
    import numpy as np

    from geot2e.train.config import build_training_data

    cfg = load_train_config(ROOT / "configs" / "tiny_test.yaml")
    cfg.caption_scale = scale
    for s in cfg.sources:
        s.path = str(ROOT / s.path)
    caps = build_training_data(cfg, bands=3, seed=0).batch(np.random.default_rng(0), 12)["caption"]
    assert all(c.startswith("satellite image") for c in caps)
    assert all(c.endswith(" scale") for c in caps) == scale
    assert not any("scale" in c for c in caps) or scale


def test_class_balance_stretch_word_and_window_stretch_reach_the_dataset(tmp_path):
    """``class_balance``, ``stretch_word`` and ``window_stretch`` in a config reach the raster
    tiles; values out of [0, 1] are refused."""
    from geot2e.train.config import build_training_data

    cfg = load_train_config(ROOT / "configs" / "tiny_test.yaml")
    assert cfg.class_balance == 0.0 and cfg.window_stretch == 0.5
    for s in cfg.sources:
        s.path = str(ROOT / s.path)
    cfg.class_balance, cfg.stretch_word, cfg.window_stretch = 0.5, "contrast stretched", 0.0
    ds = build_training_data(cfg, bands=3, seed=0)
    assert ds.class_balance == 0.5 and ds.stretch_word == "contrast stretched" and ds.window_stretch == 0.0
    cfg.window_stretch = 1.2
    with pytest.raises(ParameterError, match="window_stretch"):
        build_training_data(cfg, bands=3, seed=0)
    cfg.window_stretch, cfg.class_balance = 0.5, 2.0
    with pytest.raises(ParameterError, match="class_balance"):
        build_training_data(cfg, bands=3, seed=0)


@pytest.mark.parametrize("name", ["default.yaml", "default_v8_from_v7.yaml"])
def test_the_recipe_describes_the_shipped_default(name):
    """configs/default.yaml is the shipped default's recipe (and default_v8_from_v7.yaml the
    shortcut that made it from v7): the same name, architecture and final objective as the
    embedded weights' config, so a user who reruns it trains that model."""
    import json

    shipped = json.loads((ROOT / "geot2e" / "weights" / "default" / "config.json").read_text())
    cfg = load_train_config(ROOT / "configs" / name)
    assert cfg.model["model_id"] == shipped["model_id"]
    for part in ("vae", "unet", "text", "resolution"):
        for k, v in (cfg.model.get(part) or {}).items():
            assert shipped[part][k] == v, (part, k)
    objective = dict(cfg.model.get("scheduler") or {})
    if cfg.finetune is not None and cfg.finetune.scheduler:
        objective.update(cfg.finetune.scheduler)
    for k, v in objective.items():
        assert shipped["scheduler"].get(k) == v, k
    assert cfg.export == "geot2e/weights/default"
