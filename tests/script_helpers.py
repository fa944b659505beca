"""Shared set-up of the tests of scripts/: load a script as a module, a tiny training config."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tiny_train_config(tmp_path: Path) -> Path:
    """configs/tiny_test.yaml with absolute source paths, written to ``tmp_path/cfg.yaml``."""
    d = yaml.safe_load((ROOT / "configs" / "tiny_test.yaml").read_text())
    for s in d["sources"] + d.get("validation", []):
        s["path"] = str(ROOT / s["path"])
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(d))
    return cfg
