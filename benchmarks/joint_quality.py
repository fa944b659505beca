"""Does a cloud across cell borders fill as well in one window as in two? (issue 23 §2)

The engine runs a hole that crosses cell borders and fits each of those cells' windows whole,
in one window of one cell (:meth:`geot2e.engine.grid.TileGrid.joint_owner`); before, each cell
filled its own part and the pass-B part took the pass-A part's fill as known context. On
held-out crops (:func:`geot2e.eval.holdout.heldout_set`, the three sets) of 256 px run with
128-px cells (overlap 32), round clouds are centred on the cell borders; ``remove_clouds``
(mean of ``--samples``, its default sampler) runs both ways. Printed per crop and as means: PSNR
and SSIM over the hidden pixels (:func:`geot2e.eval.metrics.masked_metrics`), the model calls,
and the *inner seam*: the mean absolute step across the cell borders inside the clouds,
divided by the truth's (1 = as smooth as the ground; a fill cut in two shows a step there).

    OMP_NUM_THREADS=1 python benchmarks/joint_quality.py --per-set 4 --json outputs/joint_quality.json
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

TILE, OVERLAP = 128, 32


@contextlib.contextmanager
def split_holes():
    """Run the engine with every hole split at the cell edges (no joint holes)."""
    from geot2e.engine.grid import TileGrid

    joint = TileGrid.joint_owner
    TileGrid.joint_owner = lambda self, box, cells: None
    try:
        yield
    finally:
        TileGrid.joint_owner = joint


def border_clouds(h: int, w: int, n: int, radius, seed: int) -> np.ndarray:
    """``n`` round clouds, each centred on a random point of a cell border (rows or columns at
    multiples of TILE inside the crop)."""
    rng = np.random.default_rng([seed, 29])
    yy, xx = np.mgrid[:h, :w]
    m = np.zeros((h, w), bool)
    for _ in range(n):
        r = rng.uniform(*radius)
        if rng.random() < 0.5:
            cy, cx = TILE * rng.integers(1, max(2, h // TILE)), rng.uniform(r, w - r)
        else:
            cy, cx = rng.uniform(r, h - r), TILE * rng.integers(1, max(2, w // TILE))
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    return m


def inner_seam(img: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mean |step| across the cell borders at masked pixel pairs, the fill's over the truth's."""
    a, b = np.asarray(img, float), np.asarray(truth, float)
    steps_f, steps_t = [], []
    for k in range(TILE, mask.shape[0], TILE):
        sel = mask[k - 1] & mask[k]
        steps_f.append(np.abs(a[:, k] - a[:, k - 1])[:, sel].ravel())
        steps_t.append(np.abs(b[:, k] - b[:, k - 1])[:, sel].ravel())
    for k in range(TILE, mask.shape[1], TILE):
        sel = mask[:, k - 1] & mask[:, k]
        steps_f.append(np.abs(a[:, :, k] - a[:, :, k - 1])[:, sel].ravel())
        steps_t.append(np.abs(b[:, :, k] - b[:, :, k - 1])[:, sel].ravel())
    f, t = np.concatenate(steps_f), np.concatenate(steps_t)
    return float(f.mean() / max(t.mean(), 1e-9)) if f.size else float("nan")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--per-set", type=int, default=4, help="crops per held-out set")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--clouds", type=int, default=2, help="round clouds per crop, each on a cell border")
    p.add_argument("--radius", type=float, nargs=2, default=(20, 40), help="cloud radii in pixels")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    import torch

    import geot2e
    from geot2e.eval.common import to_json
    from geot2e.eval.holdout import HELDOUT_SETS, heldout_set
    from geot2e.eval.metrics import masked_metrics

    torch.set_num_threads(args.threads)
    model = geot2e.load_model(args.model)
    runs = (("joint", contextlib.nullcontext), ("split", split_holes))
    rows = []
    calls: list = []
    orig = model.inpaint

    def counting(*a, **kw):
        calls.append(1)
        return orig(*a, **kw)

    model.inpaint = counting
    from geot2e.errors import ParameterError

    for name in HELDOUT_SETS:
        n_crops = args.per_set
        while True:               # the 5 m raster holds only two 256-px crops
            try:
                crops = heldout_set(name, n_crops, size=args.size)
                break
            except ParameterError:
                if n_crops == 1:
                    raise
                n_crops -= 1
        for n, crop in enumerate(crops):
            values = np.asarray(crop.values)
            mask = border_clouds(values.shape[-2], values.shape[-1], args.clouds, args.radius, len(rows))
            row = {"set": name, "crop": n, "masked": float(mask.mean())}
            for label, ctx in runs:
                calls.clear()
                with ctx():
                    out = geot2e.remove_clouds(crop, mask, model=model, samples=args.samples, seed=len(rows),
                                               progress=False, threads=args.threads, tile=TILE, overlap=OVERLAP)
                got = np.asarray(out.values)
                met = masked_metrics(got, values, mask)
                row[label] = {"psnr": met["psnr"], "ssim": met["ssim"], "calls": len(calls),
                              "inner_seam": inner_seam(got, values, mask)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {lab: {k: float(np.nanmean([r[lab][k] for r in rows])) for k in ("psnr", "ssim", "calls", "inner_seam")}
               for lab, _ in runs}
    summary["psnr_delta_db"] = summary["joint"]["psnr"] - summary["split"]["psnr"]
    summary["crops"] = len(rows)
    print(to_json(summary))
    if args.json:
        to_json({"rows": rows, "summary": summary}, args.json)
    return summary


if __name__ == "__main__":
    main()
