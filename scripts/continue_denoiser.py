#!/usr/bin/env python
"""Continue a trained model's denoiser with another recipe (how v3 was made from v2).

    python scripts/continue_denoiser.py runs/default/final configs/default.yaml runs/v3 \
        --steps 3000 --stop-at 1500 --full 0.5 --p-text 0.3 --lr 1.5e-4 --export runs/v3/export \
        --model-id geot2e-default-v3

Loads the checkpoint folder BASE (VAE and decoder are kept frozen), builds the training
tiles of CONFIG's sources exactly as ``geot2e train`` does (same captioner settings), runs
one more denoiser stage named ``--stage`` in OUT (resumable: run the same command again
after an interruption) and saves the EMA weights to ``OUT/final`` (float32) and, with
``--export``, a float16 copy with the model id set.

The v3 default model is v2 + this stage with the command above: half the training masks
full (text-to-image) and the text dropped for 30 % of the samples, so that the denoiser
must read the GSD from the resolution embedding; the EMA weights at step 1500 of a
3000-step schedule (at step 3000 text control had fallen below chance; docs/model_card.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "scripts"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import _continue as C  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_args(p, base_help="checkpoint folder to continue (e.g. runs/default/final)", seed_offset=7,
                      threads=2)
    p.add_argument("--stage", default="resfocus", help="name of the stage folder in OUT (default: %(default)s)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--stop-at", type=int, default=None,
                   help="stop (after saving) at this step; the learning-rate schedule still spans --steps")
    p.add_argument("--minutes", type=float, default=None, help="time budget (stops after saving)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1.5e-4)
    p.add_argument("--ema-decay", type=float, default=0.998)
    p.add_argument("--p-text", type=float, default=0.3, help="text dropout probability")
    p.add_argument("--p-res", type=float, default=0.1, help="resolution dropout probability")
    p.add_argument("--full", type=float, default=0.5, help="share of full (text-to-image) masks")
    a = p.parse_args(argv)

    from geot2e.train.loop import StageConfig, train_denoiser

    model, cfg = C.load_base(a)
    ds = C.training_data(a, cfg, model)
    k = (1.0 - a.full) / 0.5           # the other masks in the proportions clouds 6 : brush 1 : rect 1 : edge 2
    mask_weights = {"clouds": 0.30 * k, "brush": 0.05 * k, "rectangle": 0.05 * k, "edge": 0.10 * k, "full": a.full}
    st = StageConfig(steps=a.steps, stop_at=a.stop_at, max_minutes=a.minutes, batch_size=a.batch_size, lr=a.lr, warmup=50,
                     ema_decay=a.ema_decay, p_text=a.p_text, p_res=a.p_res, masked_weight=2.0,
                     mask_weights=mask_weights, save_every=100, tile_sizes=[64, 64, 128])
    train_denoiser(model, ds, st, a.out, stage=a.stage, progress=True)
    return C.save(a, model)


if __name__ == "__main__":
    raise SystemExit(main())
