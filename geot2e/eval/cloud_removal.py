"""Cloud-removal protocol: held-out crops, cloud-like masks, methods side by side.

For each held-out crop (:func:`geot2e.eval.holdout.heldout_crops`) a cloud-like mask
(:func:`geot2e.train.masks.cloud_blobs`) covering a coverage drawn uniformly in
[15 %, 40 %] is drawn from a seeded rng; every method fills the same masked pixels, its
fill is cast to the crop's dtype (what a user would write) and scored over the masked
pixels (:func:`geot2e.eval.metrics.masked_metrics`, common scale fitted on the truth crop).

Methods
-------
geot2e, one sample
    ``geot2e.remove_clouds(crop, mask, samples=1)`` (realism).
geot2e, mean of K
    ``geot2e.remove_clouds(crop, mask, samples=K)``: per-pixel mean of K samples (accuracy).
VAE reconstruction (ceiling)
    The model's VAE on the true crop: what a perfect latent fill could reach.
harmonic (Laplace), biharmonic (skimage), Telea (OpenCV), per-band mean of known pixels
    Classical baselines. The membrane (harmonic) fill is the smoothest and, on cloud blobs of
    15–40 %, the most accurate of them (it overshoots less than the biharmonic one).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import xarray as xr

from .fills import (biharmonic_fill, engine_available, geot2e_fill, harmonic_fill, mean_fill, telea_fill,
                    vae_reconstruction)
from .metrics import masked_metrics, robust_range, summarize

__all__ = ["CloudRemovalConfig", "cloud_mask_for", "run_cloud_removal", "cloud_removal_table", "check_targets",
           "targets_table", "METHOD_LABELS", "CLASSICAL"]

METHOD_LABELS = {
    "geot2e_1": "geot2e, one sample",
    "geot2e_k": "geot2e, mean of {k} samples",
    "vae": "VAE reconstruction (ceiling)",
    "harmonic": "harmonic (Laplace)",
    "biharmonic": "biharmonic (skimage)",
    "telea": "Telea (OpenCV)",
    "mean": "per-band mean of known pixels",
}
CLASSICAL = ("harmonic", "biharmonic", "telea", "mean")


@dataclass
class CloudRemovalConfig:
    """Options of the protocol (all recorded in the JSON)."""

    n_crops: int = 32
    size: int = 128
    k: int = 4
    steps: int | None = None       # None: remove_clouds' default for one sample / for the mean of K
    guidance: float | None = None  # (geot2e.sampling.CLOUD_SAMPLERS)
    seed: int = 0
    coverage: tuple[float, float] = (0.15, 0.40)
    methods: tuple[str, ...] = ("geot2e_1", "geot2e_k", "vae", "harmonic", "biharmonic", "telea", "mean")
    use_engine: bool | None = None  # None: the public remove_clouds when importable, else direct model calls
    few_step: bool = False          # the model's few-step student (pass the model loaded with few_step=True)


def cloud_mask_for(i: int, h: int, w: int, *, seed: int = 0, coverage=(0.15, 0.40)) -> np.ndarray:
    """The cloud-like mask of crop ``i`` (deterministic in ``seed`` and ``i``)."""
    from ..train.masks import cloud_blobs

    rng = np.random.default_rng([int(seed), 7919, int(i)])
    cov = float(rng.uniform(*coverage))
    return cloud_blobs(rng, h, w, coverage=cov)


def _cast(fill: np.ndarray, dtype) -> np.ndarray:
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        return np.clip(np.round(fill), info.min, info.max).astype(dt)
    return fill.astype(dt)


def run_cloud_removal(model=None, crops: Sequence[xr.DataArray] | None = None, *,
                      config: CloudRemovalConfig | None = None, data_dir=None,
                      progress: Callable[[str], None] | None = None,
                      partial: Callable[[dict], None] | None = None) -> dict:
    """Run the protocol and return a JSON-friendly result.

    Parameters
    ----------
    model : Text2Earth, optional
        Needed for the geot2e and VAE methods (dropped from ``methods`` when None).
    crops : list of DataArray, optional
        Crops to use instead of ``heldout_crops(config.n_crops, size=config.size, seed=config.seed)``.
    config : CloudRemovalConfig
    data_dir : path, optional
        Folder of the sample rasters (default: the fetched cache).
    progress : callable(str), optional
        Called with a line of progress per crop.
    partial : callable(dict), optional
        Called after each crop with the result over the crops done so far (e.g. to save
        it, so that a long run interrupted still leaves figures).

    Returns
    -------
    dict
        ``config``, ``route`` (how geot2e was called), ``summary`` (method → metric →
        mean/std/median/n), ``per_crop`` rows, ``seconds`` per method, ``labels``.
    """
    cfg = config or CloudRemovalConfig()
    if crops is None:
        from .holdout import heldout_crops

        crops = heldout_crops(cfg.n_crops, size=cfg.size, seed=cfg.seed, data_dir=data_dir)
    methods = [m for m in cfg.methods if model is not None or m in CLASSICAL]
    use_engine = engine_available() if cfg.use_engine is None else cfg.use_engine
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    seconds = {m: 0.0 for m in methods}
    route = None
    coverages = []
    for i, crop in enumerate(crops):
        values = np.asarray(crop.values)
        h, w = values.shape[-2:]
        mask = cloud_mask_for(i, h, w, seed=cfg.seed, coverage=cfg.coverage)
        coverages.append(float(mask.mean()))
        lo, hi = robust_range(values)
        for m in methods:
            t0 = time.perf_counter()
            if m == "geot2e_1":
                fill, route = geot2e_fill(model, crop, mask, samples=1, steps=cfg.steps, guidance=cfg.guidance,
                                          seed=cfg.seed * 100003 + i, use_engine=use_engine, few_step=cfg.few_step)
            elif m == "geot2e_k":
                fill, route = geot2e_fill(model, crop, mask, samples=cfg.k, steps=cfg.steps, guidance=cfg.guidance,
                                          seed=cfg.seed * 100003 + i, use_engine=use_engine, few_step=cfg.few_step)
            elif m == "vae":
                fill = vae_reconstruction(model, values, mask, nodata=crop.rio.nodata)
            elif m == "harmonic":
                fill = harmonic_fill(values, mask)
            elif m == "biharmonic":
                fill = biharmonic_fill(values, mask)
            elif m == "telea":
                fill = telea_fill(values, mask)
            elif m == "mean":
                fill = mean_fill(values, mask)
            else:
                raise ValueError(f"unknown method {m!r}; choose from {sorted(METHOD_LABELS)}")
            seconds[m] += time.perf_counter() - t0
            fill = _cast(fill, values.dtype)
            if not np.array_equal(fill[:, ~mask], values[:, ~mask]):
                raise RuntimeError(f"method {m!r} changed known pixels of crop {i}; this is a bug in the fill.")
            r = masked_metrics(fill, values, mask, lo=lo, hi=hi)
            r.update(crop=i, coverage=float(mask.mean()))
            rows[m].append(r)
        if progress is not None:
            progress(f"crop {i + 1}/{len(crops)}: coverage {mask.mean():.0%}, " + ", ".join(
                f"{m} {rows[m][-1]['psnr']:.1f} dB" for m in methods))
        if partial is not None and i + 1 < len(crops):
            partial(_result(cfg, methods, rows, seconds, route, use_engine, crops[:i + 1], coverages, model))
    return _result(cfg, methods, rows, seconds, route, use_engine, crops, coverages, model)


def _result(cfg, methods, rows, seconds, route, use_engine, crops, coverages, model) -> dict:
    summary = {m: summarize(rows[m]) for m in methods}
    labels = {m: METHOD_LABELS[m].format(k=cfg.k) for m in methods}
    from ..sampling import cloud_sampler

    cfgd = asdict(cfg)
    cfgd["methods"] = list(methods)
    own = getattr(model, "student_steps", None) if cfg.few_step else None
    cfgd["samplers"] = {m: dict(zip(("guidance", "steps"), cloud_sampler(1 if m == "geot2e_1" else cfg.k,
                                                                         cfg.guidance, cfg.steps, cfg.few_step)))
                        for m in ("geot2e_1", "geot2e_k") if m in methods}
    for s in cfgd["samplers"].values():
        s["steps"] = own if s["steps"] is None else s["steps"]
    return {"config": cfgd, "route": route if model is not None else None, "engine": bool(use_engine),
            "n_crops": len(crops), "coverage_mean": float(np.mean(coverages)) if coverages else None,
            "windows": [list(c.attrs.get("eval_window", ())) for c in crops],
            "labels": labels, "summary": summary, "per_crop": {m: list(v) for m, v in rows.items()},
            "seconds": dict(seconds)}


def _fmt(v: float, digits: int) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def cloud_removal_table(result: dict) -> str:
    """Markdown table of the summary (means over crops; ± standard deviation for PSNR)."""
    lines = ["| method | PSNR dB | SSIM | texture ratio | mean-colour error | off-palette excess | s/crop |",
             "|---|---|---|---|---|---|---|"]
    n = max(1, result["n_crops"])
    for m, label in result["labels"].items():
        s = result["summary"][m]
        lines.append(f"| {label} | {_fmt(s['psnr']['mean'], 1)} ± {_fmt(s['psnr']['std'], 1)} | "
                     f"{_fmt(s['ssim']['mean'], 2)} | {_fmt(s['texture_ratio']['mean'], 2)} | "
                     f"{_fmt(s['colour_error']['mean'], 3)} | {_pp(s.get('offpalette', {}).get('mean'))} | "
                     f"{result['seconds'][m] / n:.2f} |")
    return "\n".join(lines)


def _pp(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:+.2f} pp"


def check_targets(result: dict) -> list[dict]:
    """The model's quality targets, each with the measured value, the bound and the margin.

    - one sample: texture ratio in [0.7, 1.3]; PSNR ≥ best classical − 3 dB; colour
      error ≤ Telea's; off-palette excess ≤ 0.5 percentage points.
    - mean of K: PSNR ≥ best classical + 0.5 dB; SSIM ≥ best classical.
    """
    s = result["summary"]
    out: list[dict] = []
    classical = [m for m in CLASSICAL if m in s]
    if not classical:
        return out
    best_psnr = max(s[m]["psnr"]["mean"] for m in classical)
    best_ssim = max(s[m]["ssim"]["mean"] for m in classical)

    def add(name, value, op, bound):
        ok = (value >= bound) if op == ">=" else (value <= bound) if op == "<=" else (bound[0] <= value <= bound[1])
        if op == "in":
            margin = min(value - bound[0], bound[1] - value)
        else:
            margin = value - bound if op == ">=" else bound - value
        out.append({"target": name, "value": value, "op": op, "bound": bound, "met": bool(ok), "margin": margin})

    if "geot2e_1" in s:
        g = s["geot2e_1"]
        add("one sample: texture ratio in 0.7-1.3", g["texture_ratio"]["mean"], "in", (0.7, 1.3))
        add("one sample: PSNR >= best classical - 3 dB", g["psnr"]["mean"], ">=", best_psnr - 3.0)
        if "telea" in s:
            add("one sample: colour error <= Telea's", g["colour_error"]["mean"], "<=", s["telea"]["colour_error"]["mean"])
        if "offpalette" in g:
            add("one sample: off-palette excess <= 0.005", g["offpalette"]["mean"], "<=", 0.005)
    if "geot2e_k" in s:
        g = s["geot2e_k"]
        add("mean of K: PSNR >= best classical + 0.5 dB", g["psnr"]["mean"], ">=", best_psnr + 0.5)
        add("mean of K: SSIM >= best classical", g["ssim"]["mean"], ">=", best_ssim)
    return out


def targets_table(targets: list[dict]) -> str:
    """Markdown table of :func:`check_targets`."""
    lines = ["| target | measured | bound | met | margin |", "|---|---|---|---|---|"]
    for t in targets:
        b = t["bound"]
        bs = f"{b[0]:.2f}-{b[1]:.2f}" if isinstance(b, (tuple, list)) else f"{b:.3f}"
        lines.append(f"| {t['target']} | {t['value']:.3f} | {bs} | {'yes' if t['met'] else 'no'} | {t['margin']:+.3f} |")
    return "\n".join(lines)
