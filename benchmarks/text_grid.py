"""Text-to-image tiles of one or more models at 1:1: one row per content class of the
text-control protocol (its prompts, :data:`geot2e.eval.text_control.CLASS_PROMPTS`), one
column per noise seed, a block per guidance ω side by side, the models one under the other;
the same seeds for every model, class and ω.

    python benchmarks/text_grid.py --out /tmp/text.png
    python benchmarks/text_grid.py --model default --model runs/other/final --omega 0 3 --out /tmp/text.png

It also prints, per model, ω and class, the generated tiles' mean colour and the share the
protocol's content rule labels with the prompt's class (prompt consistency): whether prompts
move the colour of a tile, which is what the text-control protocol's classifier sees.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=None, help="model folder or 'default' (repeatable)")
    p.add_argument("--omega", type=float, nargs="+", default=[0.0, 3.0], help="guidance values, one block each")
    p.add_argument("--seeds", type=int, default=6, help="tiles (columns) per class; statistics use --n")
    p.add_argument("--n", type=int, default=16, help="tiles per class for the printed statistics")
    p.add_argument("--gsd", type=float, default=30.0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--zoom", type=int, default=2, help="pixel repetition of the figure (1:1 = 1)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, help="PNG to write")
    a = p.parse_args(argv)

    import torch
    from PIL import Image

    import geot2e
    from geot2e.eval.common import generate_tiles
    from geot2e.eval.text_control import CLASS_PROMPTS, content_labels

    if a.threads:
        torch.set_num_threads(a.threads)
    models = a.model or ["default"]
    classes = list(CLASS_PROMPTS)
    n = max(a.n, a.seeds)
    blocks = []
    for name in models:
        model = geot2e.load_model(name)
        for omega in a.omega:
            prompts = [CLASS_PROMPTS[c] for c in classes for _ in range(n)]
            seeds = [j for _ in classes for j in range(n)]
            tiles = generate_tiles(model, prompts, [a.gsd] * len(prompts), size=a.size, steps=a.steps,
                                   guidance=omega, seeds=seeds)
            gen01 = (tiles[:, :3].astype(np.float64) + 1) / 2                # as the protocol reads them
            own = content_labels(gen01)
            rgb = np.clip(gen01, 0, 1)
            print(f"{model.model_id}  ω = {omega:g}")
            for k, c in enumerate(classes):
                sel = slice(k * n, (k + 1) * n)
                mean = rgb[sel].mean((0, 2, 3))
                ok = np.mean([lab == c for lab in own[sel]])
                print(f"  {c:<10} mean RGB {mean[0]:.3f} {mean[1]:.3f} {mean[2]:.3f}   prompt consistency {ok:.0%}")
            rows = [np.concatenate([rgb[k * n + j] for j in range(a.seeds)], axis=2) for k in range(len(classes))]
            blocks.append(np.concatenate(rows, axis=1))                      # (3, classes*s, seeds*s)
    k = len(a.omega)                          # one band per model: its ω blocks side by side
    vgap = np.ones((3, blocks[0].shape[1], 8))
    bands = [np.concatenate([x for b in blocks[i:i + k] for x in (b, vgap)][:-1], axis=2)
             for i in range(0, len(blocks), k)]
    hgap = np.ones((3, 8, bands[0].shape[2]))
    grid = np.concatenate([x for b in bands for x in (b, hgap)][:-1], axis=1)
    img = (grid.transpose(1, 2, 0) * 255).round().astype(np.uint8)
    img = img.repeat(a.zoom, 0).repeat(a.zoom, 1)
    Image.fromarray(img).save(a.out)
    print(f"wrote {a.out}: blocks {[(m, w) for m in models for w in a.omega]}; rows {classes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
