"""How fast the training data pipeline draws tiles, and which content classes it keeps.

A GPU step of the default recipe waits for tiles drawn by DataLoader processes on the CPU, so
tiles per second per process bounds the GPU's use. Reads the default recipe's sources (or a
tile pack), draws batches at 64 and 128 px in one process and prints tiles/s (median over
batches) and the share of each dominant content class among the kept tiles (with
``class_balance`` > 0 these shares are the rebalanced ones). The rate depends on the seed's
class stream: once the rarest class (built-up) has been drawn, class balancing rejects many
more candidates, the steady state of any long run (seed 1 reaches it in its first tiles,
seed 0 not within 20 batches); report both.

    python benchmarks/bench_tile_draw.py [--config configs/default.yaml] [--pack DIR] [--batches 40]
"""
from __future__ import annotations

import argparse
import collections
import json
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--pack", default=None, help="a tile pack (geot2e train CONFIG --write-pack DIR)")
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from geot2e.train.captions import measure_content
    from geot2e.train.config import build_training_data, load_source, load_train_config

    cfg = load_train_config(args.config)
    if args.pack:
        from geot2e.train.pack import read_pack

        sources = read_pack(args.pack)[0]
    else:
        sources = [load_source(s) for s in cfg.sources if s.kind == "raster"]
    ds = build_training_data(cfg, bands=3, seed=args.seed, sources=sources)
    rng = np.random.default_rng(args.seed)
    result = {}
    for size in (64, 128):
        times, classes = [], collections.Counter()
        for _ in range(args.batches):
            t = time.perf_counter()
            b = ds.batch(rng, args.batch_size, size=size)
            times.append(time.perf_counter() - t)
            for img in b["image"].numpy():
                classes[measure_content((img + 1) / 2).dominant()] += 1
        n = sum(classes.values())
        result[size] = {"tiles_per_s_median": args.batch_size / float(np.median(times)),
                        "tiles_per_s_mean": args.batch_size * len(times) / float(np.sum(times)),
                        "classes": {k: round(v / n, 3) for k, v in sorted(classes.items())}}
        print(f"{size} px: {result[size]['tiles_per_s_median']:.1f} tiles/s (median batch), "
              f"{result[size]['tiles_per_s_mean']:.1f} (mean); classes {result[size]['classes']}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
