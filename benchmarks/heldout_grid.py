"""A 1:1 crop grid of cloud fills on every held-out set: masked input | geot2e one sample |
Telea | truth, one row per crop, 128 px crops shown pixel for pixel (no resampling).
``--few-step`` adds the model's few-step student (one sample) after the full sampler's column.

    python benchmarks/heldout_grid.py --out docs/img/heldout_grid_v6.png
    python benchmarks/heldout_grid.py --few-step --out docs/img/few_step_grid.png
    python benchmarks/heldout_grid.py --model runs/default/denoiser/model --out /tmp/grid.png

Crops and masks are those of the evaluation protocol (``geot2e.eval.holdout.heldout_set`` and
``geot2e.eval.cloud_removal.cloud_mask_for`` with the same seed), so the grid shows the
first crops the tables of ``benchmarks/eval_default.py`` score. Every column of a row is
stretched by the truth crop's 0.5/99.5 % percentiles.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SETS = ("landsat8_224077", "sentinel2_chincoteague", "rgbn_5m")


def _rgb8(values: np.ndarray, lo, hi) -> np.ndarray:
    x = (values.astype(np.float64) - lo[:, None, None]) / np.maximum(hi - lo, 1e-9)[:, None, None]
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--per-set", type=int, default=2, help="crops (rows) per held-out set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--few-step", action="store_true", help="add a column: the model's few-step student")
    a = p.parse_args(argv)
    import torch
    from PIL import Image

    from geot2e.eval.cloud_removal import cloud_mask_for
    from geot2e.eval.fills import geot2e_fill, telea_fill
    from geot2e.eval.holdout import heldout_set
    from geot2e.eval.metrics import robust_range
    from geot2e.models import load_model

    if a.threads:
        torch.set_num_threads(a.threads)
    model = load_model(a.model, device="cpu")
    student = load_model(a.model, device="cpu", few_step=True) if a.few_step else None
    rows = []
    for name in SETS:
        crops = heldout_set(name, a.per_set, seed=a.seed)
        for i, crop in enumerate(crops):
            values = np.asarray(crop.values)
            mask = cloud_mask_for(i, *values.shape[-2:], seed=a.seed)
            lo, hi = robust_range(values)
            fill, _ = geot2e_fill(model, crop, mask, samples=1, seed=a.seed * 100003 + i)
            masked = values.astype(np.float64).copy()
            masked[:, mask] = hi[:, None]          # clouds shown white
            cols = [masked, fill]
            if student is not None:
                cols.append(geot2e_fill(student, crop, mask, samples=1, seed=a.seed * 100003 + i, few_step=True)[0])
            tiles = [_rgb8(v, lo, hi) for v in (*cols, telea_fill(values, mask), values)]
            gap = np.full((values.shape[1], 4, 3), 255, np.uint8)
            rows.append(np.concatenate(sum([[t, gap] for t in tiles], [])[:-1], axis=1))
            print(f"{name} crop {i}: done", file=sys.stderr)
    sep = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate(sum([[r, sep] for r in rows], [])[:-1], axis=0)
    Image.fromarray(grid).save(a.out)
    few = " | geot2e few-step" if student is not None else ""
    print(f"{a.out}: columns masked input | geot2e one sample{few} | Telea | truth; rows {a.per_set} per set: "
          + ", ".join(SETS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
