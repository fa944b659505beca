"""Training of the small networks kept beside a model (the dehazing network, the
super-resolution network): the model stays frozen, one network attached to it as an
attribute learns through the common loop (:func:`geot2e.train.loop._run`: AdamW, EMA,
resumable saves, a time budget), and each save writes the network alone."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .._fs import atomic_folder
from . import loop as L
from .parallel import is_main
from .schema import StageConfig

__all__ = ["train_side_net", "export_side_net"]


def train_side_net(model, attr: str, build: Callable, loss_fn: Callable, dataset, cfg: StageConfig,
                   stage_dir: Path, save: Callable, *, resume: bool, progress: bool, desc: str) -> list:
    """Train ``model.<attr>`` (``build()`` when the model has none) with ``loss_fn(batch, rng)``;
    ``save(net, folder, step)`` writes the network's loadable form to ``stage_dir/net`` (EMA
    weights at every save). Nothing else of ``model`` changes."""
    if getattr(model, attr, None) is None:
        setattr(model, attr, build().to(model.device))
    model.requires_grad_(False)
    getattr(model, attr).requires_grad_(True)
    stage_dir = Path(stage_dir)
    log = L._run(model, dataset, cfg, stage_dir, [attr], loss_fn, use_ema=cfg.ema_decay > 0, resume=resume,
                 progress=progress, desc=desc, extra={},
                 export=lambda m, folder, step: save(getattr(m, attr), Path(folder) / "net", step))
    if is_main() and not (stage_dir / "net").is_dir():
        save(getattr(model, attr), stage_dir / "net", 0)
    return log


def export_side_net(src: str | Path, model_folder: str | Path, name: str) -> Path:
    """Copy a trained network (``src``, a stage's ``net`` folder) into ``model_folder/name``, atomically."""
    import shutil

    dst = Path(model_folder) / name
    with atomic_folder(dst) as tmp:
        for f in Path(src).iterdir():
            shutil.copy2(f, tmp / f.name)
    return dst
