"""Fixtures and helpers for the engine/API tests (tests/test_engine_*.py, tests/test_api_*.py).

Import the fixtures into a test module with
``from engine_helpers import tiny_model_path, tiny_model  # noqa: F401``.
The model is a random tiny Text2Earth (never the embedded default), saved once per session.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

#: fast engine settings for tests: small tiles, 2 denoising steps, no progress bar
FAST = dict(tile=64, overlap=16, steps=2, progress=False)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """Folder of a random tiny 3-band model (red, green, blue), seeded."""
    from geot2e.models import Text2Earth, save_pretrained, tiny_config

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("engine_models") / "tiny"
    save_pretrained(Text2Earth(tiny_config()), path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    """The tiny model loaded through ``load_model`` (the instance the API's cache returns)."""
    from geot2e.models import load_model

    return load_model(tiny_model_path, device="cpu")


class InpaintSpy:
    """Records every ``model.inpaint`` call (prompts, shapes, masks), then calls through.

    ``fill`` (prompt -> value in [-1, 1]) replaces the model's output by a constant per
    prompt, which makes prompt maps checkable pixel by pixel.
    """

    def __init__(self, model, fill=None):
        self.model = model
        self.original = model.inpaint
        self.fill = fill
        self.calls = []

    def __call__(self, images, masks, **kw):
        self.calls.append(dict(shape=tuple(images.shape), prompts=kw.get("prompts"), images=images.clone(),
                               masks=masks.clone(), gsd=kw.get("gsd")))
        if self.fill is not None:
            value = self.fill[kw.get("prompts")]
            return torch.full(images.shape, float(value))
        return self.original(images, masks, **kw)


def seam_ratio(img: np.ndarray, mask: np.ndarray, tile: int) -> float:
    """Mean |gradient| across tile borders / mean |gradient| inside tiles, over pixel
    pairs whose two pixels are both synthesized (``mask``). ``img`` is (C, H, W)."""
    img = np.asarray(img, dtype=np.float64)
    gx = np.abs(np.diff(img, axis=2)).mean(0)
    gy = np.abs(np.diff(img, axis=1)).mean(0)
    px = mask[:, :-1] & mask[:, 1:]
    py = mask[:-1] & mask[1:]
    bx = np.zeros_like(px)
    bx[:, tile - 1::tile] = True
    by = np.zeros_like(py)
    by[tile - 1::tile, :] = True
    border = np.concatenate([gx[px & bx], gy[py & by]])
    inner = np.concatenate([gx[px & ~bx], gy[py & ~by]])
    return float(border.mean() / inner.mean())


@pytest.fixture(scope="module", autouse=False)
def one_torch_thread():
    """Run a module's model calls on one intra-op thread (restored afterwards): on the shared
    2-core machine, torch's spinning OpenMP threads are many times slower when oversubscribed.
    Results are compared within one setting, so this changes speed only."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_train_config(tmp_path, *, stages=("vae", "denoiser"), **sections):
    """configs/tiny_test.yaml as a file in ``tmp_path``: run and export folders there, source paths
    absolute, no fine-tune, ``stages`` cut to 2 steps of 2 tiles, plus extra ``sections``
    (e.g. ``distill={...}``); returns its path."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    d = yaml.safe_load((root / "configs" / "tiny_test.yaml").read_text())
    d["out_dir"] = str(tmp_path / "run")
    d["export"] = str(tmp_path / "exported")
    for s in d["sources"]:
        s["path"] = str(root / s["path"])
    d.pop("finetune", None)
    for st in stages:
        d[st].update(steps=2, save_every=2, batch_size=2)
    d.update(sections)
    tmp_path.mkdir(parents=True, exist_ok=True)
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def train_beside_unchanged(tmp_path, default, sub: str, stage: str, section: dict):
    """Run a config with only ``stage`` (``section``) on a copy of the model folder ``default``
    without its ``sub`` folder, exporting into that copy (configs/sr.yaml, dehaze.yaml and
    detail.yaml on the default); assert every file that was there keeps its bytes (and the
    checkpoint hash), and return ``(copy, config path)``."""
    import shutil

    import yaml

    from geot2e.models.checkpoint import checkpoint_hash
    from geot2e.train import run_training

    base = tmp_path / "model"
    shutil.copytree(default, base, ignore=shutil.ignore_patterns(sub))
    files = {p.relative_to(base): p.read_bytes() for p in base.rglob("*") if p.is_file()}
    h = checkpoint_hash(base)
    d = yaml.safe_load(tiny_train_config(tmp_path, stages=()).read_text())
    for st in ("vae", "denoiser", "decoder", "model"):     # the base's own architecture and weights
        d.pop(st, None)
    d.update(base_model=str(base), export=str(base), **{stage: section})
    cfg = tmp_path / f"{stage}.yaml"
    cfg.write_text(yaml.safe_dump(d))
    run_training(cfg, progress=False)
    assert checkpoint_hash(base) == h
    for rel, data in files.items():
        assert (base / rel).read_bytes() == data, rel
    return base, cfg
