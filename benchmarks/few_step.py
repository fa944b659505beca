"""The few-step sampler against the full one: time of ``remove_clouds`` side by side in one run.

    python benchmarks/few_step.py                     # both cases, 3 runs each, 2 threads
    python benchmarks/few_step.py --cases demo --repeat 5

Cases (real rasters, the default model):

demo    the README demo's fill (``make demo``: the 1024 x 1024 crop of Landsat 8 224/078 with
        the simulated clouds of ``examples/data/clouds_224078.gpkg``)
scene   the whole Landsat 8 224/078 scene (1860 x 2041 px, about 2048²) with 10 % of its valid
        pixels under cloud (blobs of smoothed noise, σ = 60 px, seed 0)

Each case runs ``remove_clouds(..., few_step=False)`` (one sample: 60 unguided DDIM steps)
and ``few_step=True`` (the student: 8 steps) alternately, ``--repeat`` times each, and
reports the median, the spread and every run, the UNet passes and the ratio of medians.
The fills are the same call a user makes (engine, tiling, harmonisation, COG-ready result);
time only on an idle machine.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _demo():
    spec = importlib.util.spec_from_file_location("demo01", ROOT / "examples" / "01_cloud_removal.py")
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    import geopandas as gpd

    da, _ = ex.load_scene(ex.parse_args([]))
    clouds = gpd.read_file(ex.CLOUDS)
    return ex.simulate_clouds(da, clouds), clouds


def _scene():
    from scipy import ndimage

    from geot2e.io import sample_data

    da = sample_data.open_landsat_rgb(sample_data.fetch())
    valid = (da.values != 0).all(axis=0)
    # cloud-like blobs (smoothed noise, σ = 60 px) over the brightest 10 % of the field's valid pixels
    field = ndimage.gaussian_filter(np.random.default_rng(0).standard_normal(valid.shape), 60.0, mode="wrap")
    mask = valid & (field > np.quantile(field[valid], 0.90))
    import xarray as xr

    ydim, xdim = da.dims[-2:]
    return da, xr.DataArray(mask, dims=(ydim, xdim), coords={ydim: da[ydim], xdim: da[xdim]})


def run(case: str, repeat: int, threads: int) -> dict:
    import torch

    import geot2e
    from geot2e.models import load_model

    torch.set_num_threads(threads)
    da, mask = _demo() if case == "demo" else _scene()
    full, student = load_model("default"), load_model("default", few_step=True)
    runs: dict[str, list[float]] = {"full": [], "few_step": []}
    passes = {}
    for r in range(repeat + 1):                       # run 0 warms up both (not counted)
        for name, few in (("full", False), ("few_step", True)):
            m = student if few else full
            m.unet_calls = 0
            t0 = time.perf_counter()
            out = geot2e.remove_clouds(da, mask, few_step=few, progress=False, threads=threads)
            dt = time.perf_counter() - t0
            if r:
                runs[name].append(dt)
            passes[name] = m.unet_calls
            n_filled = int(out.synthesized.values.sum())
            print(f"  {case} {name} run {r}{' (warm-up)' if not r else ''}: {dt:.1f} s, {m.unet_calls} UNet "
                  f"passes", file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {"case": case, "shape": list(da.shape), "filled_pixels": n_filled, "threads": threads,
            "runs_s": runs, "median_s": med, "spread_s": {k: [min(v), max(v)] for k, v in runs.items()},
            "unet_passes": passes, "ratio_of_medians": med["few_step"] / med["full"],
            "speedup": med["full"] / med["few_step"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=["demo", "scene"], choices=("demo", "scene"))
    p.add_argument("--repeat", type=int, default=3, help="timed runs per sampler and case (after a warm-up)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    a = p.parse_args(argv)
    res = [run(c, a.repeat, a.threads) for c in a.cases]
    print("| case | pixels filled | full sampler s (median, spread) | few-step s | UNet passes full / few | "
          "time ratio | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for r in res:
        f, s = r["spread_s"]["full"], r["spread_s"]["few_step"]
        print(f"| {r['case']} {r['shape'][-2]}×{r['shape'][-1]} | {r['filled_pixels']:,} | "
              f"{r['median_s']['full']:.1f} ({f[0]:.1f}-{f[1]:.1f}) | {r['median_s']['few_step']:.1f} "
              f"({s[0]:.1f}-{s[1]:.1f}) | {r['unet_passes']['full']} / {r['unet_passes']['few_step']} | "
              f"{r['ratio_of_medians']:.3f} | {r['speedup']:.1f}× |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
