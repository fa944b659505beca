"""Does a context margin that scales with the hole keep the fill quality? (issue 23 §2)

On held-out crops (:func:`geot2e.eval.holdout.heldout_set`, the three sets) with a few compact
round clouds each, ``remove_clouds(samples=4)`` (the mean of 4, its default sampler) runs with
the engine's margin (:func:`geot2e.engine.grid.context_margin`, scaled with the hole; ``--context``
tries other scale factors beside the engine's ``CONTEXT``) and with the fixed margin every hole got
before (``max(overlap, tile // 4)``). PSNR and SSIM over the hidden pixels
(:func:`geot2e.eval.metrics.masked_metrics`) are printed per crop and as means; the target is a
mean PSNR within 0.1 dB of the fixed margin's.

    OMP_NUM_THREADS=1 python benchmarks/margin_quality.py --per-set 2 --json outputs/margin_quality.json
    OMP_NUM_THREADS=1 python benchmarks/margin_quality.py --per-set 4 --context 0.35 0.25
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@contextlib.contextmanager
def scaled_margin(factor: float):
    """Run the engine with a context margin of ``factor`` x the hole's extent (its other rules kept)."""
    import geot2e.engine.grid as grid

    engine = grid.CONTEXT
    grid.CONTEXT = float(factor)
    try:
        yield
    finally:
        grid.CONTEXT = engine


@contextlib.contextmanager
def fixed_margin():
    """Run the engine with the fixed context margin of earlier versions."""
    import geot2e.engine.grid as grid

    scaled = grid.context_margin
    grid.context_margin = lambda extent, overlap, tile: max(int(overlap), int(tile) // 4)
    try:
        yield
    finally:
        grid.context_margin = scaled


def round_clouds(h, w, n, radius, seed):
    rng = np.random.default_rng([seed, 23])
    yy, xx = np.mgrid[:h, :w]
    m = np.zeros((h, w), bool)
    for _ in range(n):
        r = rng.uniform(*radius)
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    return m


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--per-set", type=int, default=2, help="crops per held-out set")
    p.add_argument("--sets", default=None, help="held-out sets (comma-separated; default: all three)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--clouds", type=int, default=2, help="round clouds per crop")
    p.add_argument("--radius", type=float, nargs=2, default=(20, 40), help="cloud radii in pixels")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--context", type=float, nargs="+", default=None,
                   help="margin scale factors to try (default: the engine's CONTEXT only)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    import torch

    import geot2e
    from geot2e.eval.holdout import HELDOUT_SETS, heldout_set
    from geot2e.eval.metrics import masked_metrics

    import geot2e.engine.grid as grid

    torch.set_num_threads(args.threads)
    model = geot2e.load_model(args.model)
    factors = args.context or [grid.CONTEXT]
    runs = [(f"scaled {f:g}" if args.context else "scaled", lambda f=f: scaled_margin(f)) for f in factors]
    runs.append(("fixed", fixed_margin))
    labels = [lab for lab, _ in runs]
    rows = []
    for name in (args.sets.split(",") if args.sets else HELDOUT_SETS):
        for n, crop in enumerate(heldout_set(name, args.per_set, size=args.size)):
            values = np.asarray(crop.values)
            mask = round_clouds(values.shape[-2], values.shape[-1], args.clouds, args.radius, len(rows))
            row = {"set": name, "crop": n, "masked": float(mask.mean())}
            for label, ctx in runs:
                with ctx():
                    out = geot2e.remove_clouds(crop, mask, model=model, samples=args.samples, seed=len(rows),
                                               progress=False, threads=args.threads)
                met = masked_metrics(np.asarray(out.values), values, mask)
                row[label] = {"psnr": met["psnr"], "ssim": met["ssim"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
            summary = {lab: {k: float(np.mean([r[lab][k] for r in rows])) for k in ("psnr", "ssim")}
                       for lab in labels}
            for lab in labels[:-1]:
                key = "psnr_delta_db" if lab == "scaled" else f"psnr_delta_db {lab}"
                summary[key] = summary[lab]["psnr"] - summary["fixed"]["psnr"]
            summary["crops"] = len(rows)
            if args.json:
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
