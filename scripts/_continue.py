"""What the ``continue_*`` scripts share: their common arguments, loading the base model and
the config's training tiles, and saving the result (float32 ``OUT/final``, float16 export)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_common_args(p: argparse.ArgumentParser, *, base_help: str, seed_offset: int, threads: int) -> None:
    p.add_argument("base", help=base_help)
    p.add_argument("config", help="training config whose sources and captioner to use")
    p.add_argument("out", help="run folder of the stage (run again to resume it)")
    p.add_argument("--threads", type=int, default=threads)
    p.add_argument("--seed-offset", type=int, default=seed_offset, help="tile sampling seed = config seed + this")
    p.add_argument("--export", default=None, help="also write a float16 copy here")
    p.add_argument("--model-id", default=None, help="model id of the exported copy")


def load_base(a):
    """(base model — float32, as ``from_pretrained`` loads it — and the training config), with
    torch's threads set."""
    import torch

    from geot2e.models import from_pretrained
    from geot2e.train.config import load_train_config

    torch.set_num_threads(a.threads)
    return from_pretrained(a.base, device="cpu"), load_train_config(a.config)


def training_data(a, cfg, model):
    """CONFIG's training tiles exactly as ``geot2e train`` builds them, seeded by --seed-offset."""
    from geot2e.train.config import build_training_data

    return build_training_data(cfg, bands=model.config.bands, seed=cfg.seed + a.seed_offset)


def save(a, model) -> int:
    import torch

    from geot2e.models import save_pretrained

    out = Path(a.out)
    save_pretrained(model, out / "final")
    if a.export:
        if a.model_id:
            model.config.model_id = a.model_id
        save_pretrained(model, a.export, dtype=torch.float16)
    print(f"saved {out / 'final'}" + (f" and {a.export}" if a.export else ""))
    return 0
