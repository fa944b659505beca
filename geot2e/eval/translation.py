"""Translation on held-out crops against classical baselines (:func:`geot2e.translate`).

    python -m geot2e.eval.translation --tasks super_resolution dehaze --n-crops 6

Every task is scored where its truth is known, on crops the model never trained on (the
held-out sets of :mod:`geot2e.eval.holdout`):

``super_resolution``  truth: the crop; input: the crop area-averaged by 2 (a sensor's
                      pixel integrates its footprint). Baselines: bicubic, Lanczos.
``pansharpen``        Wald's protocol: the RGB crop area-averaged by 2 is the multispectral
                      input, a PAN band at the crop's resolution the control, the crop the
                      truth. Real PAN: Landsat 8 B8 (Pensacola; its 30 m bands were training
                      tiles, its PAN never), resampled onto the 30 m grid's refinement then
                      area-averaged to 30 m, on 64-px clear crops (the scene's popcorn clouds
                      leave no larger clear window); elsewhere a synthetic PAN (mean of green and
                      red). Baselines: Brovey, generalised IHS (component substitution).
``nir_to_rgb``        input: the NIR band; truth: the RGB bands. Both sides are compared
                      after each is scaled by its own percentiles (the model outputs RGB as
                      it sees it, stretched; a NIR raster says nothing of the RGB's units).
                      Baseline: per-band linear regression on NIR fitted on the training
                      sources' pixels (Sentinel-2 outside its held-out block, Landsat 8 Pensacola).
``dehaze``            input: the atmospheric scattering model over the crop with a smooth
                      transmission (seeded per crop); truth: the crop. Baseline: the dark
                      channel prior (He et al., 2009) with a guided-filter refinement. The
                      prior works on the hazy image scaled by the clear crop's percentiles
                      (0 and 1 = the clear ground's darkest and brightest); geot2e is given
                      the same scaling as ``radiometry=`` (``dehaze_radiometry="clear"``,
                      the default) or fits its own on the hazy raster (``"hazy"``: it then
                      cannot tell a uniform haze from the ground's own contrast).

Metrics (:mod:`geot2e.eval.metrics`, every pixel, the truth's percentile scale): PSNR,
SSIM, texture ratio, and the spectral angle (SAM, degrees) for pan-sharpening.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Sequence

import numpy as np
import xarray as xr

from .common import to_json
from .metrics import psnr, robust_range, ssim, texture_ratio, to_unit

__all__ = ["bicubic", "lanczos", "brovey", "gihs", "hpf", "dark_channel_dehaze", "nir_regression", "sam",
           "haze", "run_translation", "translation_table", "EVAL_SETS"]

#: held-out sets each task is scored on
EVAL_SETS = {"super_resolution": ("landsat8_224077", "sentinel2_chincoteague", "rgbn_5m"),
             "pansharpen": ("landsat8_pensacola_pan", "sentinel2_chincoteague"),
             "nir_to_rgb": ("sentinel2_chincoteague", "rgbn_5m"),
             "dehaze": ("landsat8_224077", "sentinel2_chincoteague", "rgbn_5m")}


# ----------------------------------------------------------------------------- baselines
def _resize(x: np.ndarray, scale: int, how) -> np.ndarray:
    import cv2

    c, h, w = x.shape
    return np.stack([cv2.resize(b.astype(np.float32), (w * scale, h * scale), interpolation=how) for b in x])


def bicubic(coarse: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic upsampling (OpenCV) of a (band, y, x) array."""
    import cv2

    return _resize(coarse, scale, cv2.INTER_CUBIC)


def lanczos(coarse: np.ndarray, scale: int) -> np.ndarray:
    """Lanczos-4 upsampling (OpenCV) of a (band, y, x) array."""
    import cv2

    return _resize(coarse, scale, cv2.INTER_LANCZOS4)


def _match(pan: np.ndarray, inten: np.ndarray) -> np.ndarray:
    """PAN with the intensity's mean and standard deviation (another band's units and offset)."""
    return (pan - pan.mean()) / max(pan.std(), 1e-9) * inten.std() + inten.mean()


def brovey(ms_up: np.ndarray, pan: np.ndarray) -> np.ndarray:
    """Brovey transform: each upsampled band times PAN (matched to the intensity's mean and
    spread) over the bands' mean intensity."""
    inten = ms_up.mean(0)
    return ms_up * (_match(pan, inten) / np.where(np.abs(inten) > 1e-6, inten, 1e-6))[None]


def gihs(ms_up: np.ndarray, pan: np.ndarray) -> np.ndarray:
    """Generalised IHS (fast component substitution): add ``PAN − I`` to every band, PAN
    matched to the intensity's mean and standard deviation first."""
    inten = ms_up.mean(0)
    return ms_up + (_match(pan, inten) - inten)[None]


def hpf(ms: np.ndarray, pan: np.ndarray, scale: int, iters: int = 3) -> np.ndarray:
    """High-pass-filter injection (Chavez et al., 1991): every band gets the PAN's detail finer
    than the coarse pixels (PAN matched to the intensity, minus its area-averaged and bicubic
    re-upsampled self) in place of the bicubic intensity's own; ``ms`` is the coarse
    (band, y, x) image and ``pan`` the fine one; then iterative back-projection, so the
    result area-averaged by ``scale`` is the multispectral image again. The classical
    counterpart of what ``translate("pansharpen")`` does around its model."""
    def coarse(v):
        return _coarsen(v, scale)

    def fine(v):
        return v - bicubic(coarse(v), scale)

    up = bicubic(ms, scale)
    inten = up.mean(0, keepdims=True)
    x = up + (fine(_match(pan, inten[0])[None]) - fine(inten))
    for _ in range(iters):
        x = x + bicubic(ms - coarse(x), scale)
    return x


def _box(x: np.ndarray, r: int) -> np.ndarray:
    import cv2

    return cv2.boxFilter(x.astype(np.float64), -1, (2 * r + 1, 2 * r + 1), normalize=True,
                         borderType=cv2.BORDER_REFLECT)


def _guided(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter (grey guide)."""
    mi, ms = _box(guide, r), _box(src, r)
    cov = _box(guide * src, r) - mi * ms
    var = _box(guide * guide, r) - mi * mi
    a = cov / (var + eps)
    b = ms - a * mi
    return _box(a, r) * guide + _box(b, r)


def dark_channel_dehaze(hazy: np.ndarray, *, patch: int = 15, omega: float = 0.95, t0: float = 0.1,
                        radius: int = 20, eps: float = 1e-3) -> np.ndarray:
    """Dark channel prior dehazing of a (3, y, x) image in [0, 1]: airlight from the
    brightest 0.1 % of the dark channel, transmission ``1 − ω·dark(I/A)`` refined by a guided
    filter, scene radiance ``(I − A)/max(t, t0) + A``."""
    import cv2

    img = np.clip(hazy.astype(np.float64), 0, 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (patch, patch))
    dark = cv2.erode(img.min(0).astype(np.float32), kernel)
    n = max(1, int(dark.size * 0.001))
    idx = np.argsort(dark.ravel())[-n:]
    air = img.reshape(3, -1)[:, idx].max(1).clip(0.05, 1.0)
    norm = (img / air[:, None, None]).min(0).astype(np.float32)
    t = 1 - omega * cv2.erode(norm, kernel).astype(np.float64)
    t = _guided(img.mean(0), t, radius, eps)
    return (img - air[:, None, None]) / np.maximum(t, t0)[None] + air[:, None, None]


def nir_regression(seed: int = 0, n_pixels: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """Per-band ``(a, b)`` of ``rgb ≈ a·nir + b`` in the model's [-1, 1] scale (each source
    scaled by its own 0.5/99.5 percentiles), fitted by least squares on the valid training
    pixels of the sources with a NIR band (Sentinel-2 outside its held-out block, Landsat 8
    Pensacola's clear pixels)."""
    from ..train.samples import sample_source

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for key in ("sentinel2_chincoteague", "landsat8_pensacola"):
        src = sample_source(key)
        ok = np.flatnonzero(src.valid.ravel())
        pick = rng.choice(ok, size=min(n_pixels, ok.size), replace=False)
        px = src.data.reshape(src.data.shape[0], -1)[:, pick].astype(np.float64)
        lo = np.percentile(px, 0.5, axis=1)[:, None]
        hi = np.percentile(px, 99.5, axis=1)[:, None]
        z = (px - lo) / np.maximum(hi - lo, 1e-9) * 2 - 1
        xs.append(z[3])
        ys.append(z[:3])
    x, y = np.concatenate(xs), np.concatenate(ys, axis=1)
    design = np.stack([x, np.ones_like(x)], 1)
    coef, *_ = np.linalg.lstsq(design, y.T, rcond=None)
    return coef[0], coef[1]


def sam(a: np.ndarray, b: np.ndarray) -> float:
    """Mean spectral angle (degrees) between two (band, y, x) arrays, per pixel."""
    a, b = a.reshape(a.shape[0], -1).astype(np.float64), b.reshape(b.shape[0], -1).astype(np.float64)
    cos = (a * b).sum(0) / np.maximum(np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0), 1e-12)
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean())


def haze(clear01: np.ndarray, seed: int) -> np.ndarray:
    """Synthetic haze over a (3, y, x) image in [0, 1]: ``I = J·t + A·(1 − t)``, ``t`` a smooth
    random field in [0.35, 0.8], ``A`` near white (0.9 ± 0.03 per band)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    h, w = clear01.shape[-2:]
    coarse = rng.random((4, 4))
    t = ndimage.zoom(coarse, (h / 4, w / 4), order=3)[:h, :w]
    t = 0.35 + 0.45 * (t - t.min()) / max(t.max() - t.min(), 1e-9)
    air = 0.9 + rng.uniform(-0.03, 0.03, size=(3, 1, 1))
    return clear01 * t[None] + air * (1 - t[None])


# ----------------------------------------------------------------------------- data
def _crops(name: str, n: int, size: int, seed: int, bands=("red", "green", "blue")) -> list[xr.DataArray]:
    from .holdout import block_crops, heldout_set, unseen_crops

    if name == "sentinel2_chincoteague" and len(bands) > 3:
        from ..io.sample_data import open_sentinel2

        return block_crops(open_sentinel2(bands=bands).load(), name, n, size=size, seed=seed)
    if name == "rgbn_5m" and len(bands) > 3:
        from ..io.sample_data import open_rgbn
        from .holdout import _draw_crops

        da = open_rgbn().load()
        return _draw_crops(da, np.ones(da.shape[-2:], bool), n, size=size, seed=seed, stride=size)
    if name == "rgbn_5m":
        return unseen_crops(n, size=size, seed=seed)
    return heldout_set(name, n, size=size, seed=seed)


def _pensacola_pairs(n: int, size: int, seed: int) -> list[tuple[xr.DataArray, xr.DataArray]]:
    """(RGB crop at 30 m, real PAN at 30 m on the crop's grid) over clear pixels of Pensacola."""
    from ..geo.qa import cloud_mask
    from ..geo.refine import align_to_refinement
    from ..io.sample_data import open_pensacola, open_pensacola_qa
    from ..train.samples import PENSACOLA_CLOUD_BUFFER_M
    from .holdout import _draw_crops

    ms = open_pensacola(bands=("red", "green", "blue")).load()
    pan = align_to_refinement(open_pensacola(bands=("pan",)).load(), ms).astype(np.float64)
    pan30 = pan.coarsen(x=2, y=2).mean()
    ok = ~np.asarray(cloud_mask(open_pensacola_qa().load(), kind="landsat8_bqa",
                                buffer_m=PENSACOLA_CLOUD_BUFFER_M).values)
    crops = _draw_crops(ms, ok, n, size=size, seed=seed)
    out = []
    for c in crops:
        r, col, s = c.attrs["eval_window"]
        p = pan30.isel(y=slice(r, r + s), x=slice(col, col + s)).values[0]
        out.append((c, p))
    return out


def _coarsen(x: np.ndarray, s: int) -> np.ndarray:
    c, h, w = x.shape
    return x.reshape(c, h // s, s, w // s, s).mean((2, 4))


def _as_raster(values: np.ndarray, like: xr.DataArray, scale: int = 1) -> xr.DataArray:
    """``values`` (band, y, x) on ``like``'s bounds with pixels ``scale`` times larger."""
    from affine import Affine

    t = like.rio.transform() * Affine.scale(scale)
    b, h, w = values.shape
    xs = t.c + t.a * (np.arange(w) + 0.5)
    ys = t.f + t.e * (np.arange(h) + 0.5)
    da = xr.DataArray(values, dims=("band", "y", "x"), coords={"band": np.arange(1, b + 1), "y": ys, "x": xs})
    return da.rio.write_crs(like.rio.crs).rio.write_transform(t)


def _scores(fill: np.ndarray, truth: np.ndarray, lo, hi, *, spectral: bool = False) -> dict:
    m = np.ones(truth.shape[-2:], bool)
    f, t = to_unit(fill, lo, hi), to_unit(truth, lo, hi)
    out = {"psnr": psnr(f, t, m), "ssim": ssim(f, t, m), "texture_ratio": texture_ratio(f, t, m)}
    if spectral:
        out["sam"] = sam(fill, truth)
    return out


# ----------------------------------------------------------------------------- protocol
def run_translation(task: str, set_name: str, *, n_crops: int = 6, size: int = 128, samples: Sequence[int] = (1, 4),
                    model="default", steps: int | None = None, seed: int = 0, progress: bool = False,
                    strength: float | None = None, crops: Sequence[xr.DataArray] | None = None,
                    dehaze_radiometry: str = "clear") -> dict:
    """Score geot2e and the task's baselines on ``n_crops`` crops of one held-out set.

    ``crops``: score these georeferenced crops instead (RGB, or RGB + NIR for ``nir_to_rgb``;
    pan-sharpening then uses the synthetic PAN); ``set_name`` only labels them.
    Returns ``{"task", "set", "rows": {method: [per-crop scores]}, "seconds": {method: s}}``;
    geot2e appears as ``geot2e (1 sample)`` and ``geot2e (mean of K)`` for each K in ``samples``.
    """
    from ..api import translate

    rows: dict[str, list] = {}
    secs: dict[str, float] = {}

    def add(name, fill, truth, lo, hi, spectral=False, t=0.0):
        rows.setdefault(name, []).append(_scores(fill, truth, lo, hi, spectral=spectral))
        secs[name] = secs.get(name, 0.0) + t

    def run_model(k, *args, **kw):
        t0 = time.perf_counter()
        out = translate(*args, samples=k, model=model, steps=steps, seed=seed, progress=progress, strength=strength,
                        **kw)
        return np.asarray(out.values, np.float64), time.perf_counter() - t0

    label = {k: "geot2e (1 sample)" if k == 1 else f"geot2e (mean of {k})" for k in samples}
    def pick(bands=("red", "green", "blue")):
        return list(crops) if crops is not None else _crops(set_name, n_crops, size, seed, bands=bands)

    if task == "super_resolution":
        for c in pick():
            truth = np.asarray(c.values, np.float64)
            lo, hi = robust_range(truth)
            coarse = _coarsen(truth, 2)
            inp = _as_raster(coarse.round().astype(c.dtype) if np.issubdtype(c.dtype, np.integer) else coarse, c, 2)
            inp = inp.rio.write_nodata(c.rio.nodata) if c.rio.nodata is not None else inp
            add("bicubic", bicubic(coarse, 2), truth, lo, hi)
            add("Lanczos", lanczos(coarse, 2), truth, lo, hi)
            for k in samples:
                v, t = run_model(k, inp, "super_resolution", scale=2)
                add(label[k], v, truth, lo, hi, t=t)
    elif task == "pansharpen":
        if set_name == "landsat8_pensacola_pan" and crops is None:   # popcorn clouds: only 64-px windows are clear
            pairs = _pensacola_pairs(n_crops, min(size, 64), seed)
        else:
            pairs = [(c, np.asarray(c.values[:2], np.float64).mean(0)) for c in pick()]
        for c, pan in pairs:
            truth = np.asarray(c.values, np.float64)
            lo, hi = robust_range(truth)
            coarse = _coarsen(truth, 2)
            up = bicubic(coarse, 2)
            add("bicubic (no PAN)", up, truth, lo, hi, spectral=True)
            add("Brovey", brovey(up, pan), truth, lo, hi, spectral=True)
            add("GIHS", gihs(up, pan), truth, lo, hi, spectral=True)
            add("HPF", hpf(coarse, pan, 2), truth, lo, hi, spectral=True)
            ms = _as_raster(coarse.round().astype(c.dtype) if np.issubdtype(c.dtype, np.integer) else coarse, c, 2)
            ctrl = _as_raster(pan[None], c)
            for k in samples:
                v, t = run_model(k, ms, "pansharpen", control=ctrl)
                add(label[k], v, truth, lo, hi, spectral=True, t=t)
    elif task == "nir_to_rgb":
        from ..geo import Radiometry

        a, b = nir_regression()
        for c in pick(("red", "green", "blue", "nir")):
            rgb, nir = c.isel(band=[0, 1, 2]), c.isel(band=[3])
            r_rgb, r_nir = Radiometry.fit(rgb), Radiometry.fit(nir)
            truth = r_rgb.to_model(np.asarray(rgb.values))                 # [-1, 1], stretched
            lo, hi = np.full(3, -1.0), np.full(3, 1.0)
            zn = r_nir.to_model(np.asarray(nir.values))[0]
            add("linear regression", np.clip(a[:, None, None] * zn[None] + b[:, None, None], -1, 1), truth, lo, hi)
            for k in samples:
                v, t = run_model(k, nir, "nir_to_rgb")
                rad = Radiometry(lo=r_nir.lo * 3, hi=r_nir.hi * 3, dtype="float64")
                add(label[k], rad.to_model(v), truth, lo, hi, t=t)
    elif task == "dehaze":
        from ..geo import Radiometry

        if dehaze_radiometry not in ("clear", "hazy"):
            from ..errors import ParameterError

            raise ParameterError(f"dehaze_radiometry must be 'clear' or 'hazy', got {dehaze_radiometry!r}")
        for i, c in enumerate(pick()):
            truth = np.asarray(c.values, np.float64)
            lo, hi = robust_range(truth)
            hazy01 = haze(np.clip(to_unit(truth, lo, hi), 0, 1), seed=1000 + i)
            span = (hi - lo).reshape(-1, 1, 1)
            hazy = hazy01 * span + lo.reshape(-1, 1, 1)
            add("hazy input", hazy, truth, lo, hi)
            add("dark channel prior", dark_channel_dehaze(hazy01) * span + lo.reshape(-1, 1, 1), truth, lo, hi)
            inp = c.copy(data=hazy.round().astype(c.dtype) if np.issubdtype(c.dtype, np.integer) else hazy)
            rad = Radiometry.fit(c, nodata=c.rio.nodata) if dehaze_radiometry == "clear" else None
            for k in samples:
                v, t = run_model(k, inp, "dehaze", radiometry=rad)
                add(label[k], v, truth, lo, hi, t=t)
    else:
        from ..errors import ParameterError

        raise ParameterError(f"unknown task {task!r}; choose from {sorted(EVAL_SETS)}")
    return {"task": task, "set": set_name, "n_crops": len(next(iter(rows.values()), [])), "size": size,
            "strength": strength, "dehaze_radiometry": dehaze_radiometry if task == "dehaze" else None,
            "rows": rows, "seconds": secs}


def _mean(rows, key):
    v = [r[key] for r in rows if key in r and math.isfinite(r[key])]
    return float(np.mean(v)) if v else math.nan


def translation_table(results: Sequence[dict]) -> str:
    """A markdown table: one row per (task, set, method), means over crops."""
    lines = ["| task | set | method | PSNR | SSIM | texture | SAM (°) | s/crop |", "|---|---|---|---|---|---|---|---|"]
    for res in results:
        for name, rows in res["rows"].items():
            sam_v = _mean(rows, "sam")
            lines.append(f"| {res['task']} | {res['set']} | {name} | {_mean(rows, 'psnr'):.2f} | "
                         f"{_mean(rows, 'ssim'):.3f} | {_mean(rows, 'texture_ratio'):.2f} | "
                         f"{'' if math.isnan(sam_v) else f'{sam_v:.2f}'} | "
                         f"{res['seconds'].get(name, 0.0) / max(1, len(rows)):.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="+", default=sorted(EVAL_SETS), choices=sorted(EVAL_SETS))
    ap.add_argument("--sets", nargs="+", default=None, help="held-out sets (default: each task's, EVAL_SETS)")
    ap.add_argument("--n-crops", type=int, default=6)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--samples", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--model", default="default")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--strength", type=float, default=None, help="translate's strength (default: the task's)")
    ap.add_argument("--dehaze-radiometry", default="clear", choices=["clear", "hazy"],
                    help="dehaze: scale the hazy input by the clear crop's percentiles, as the dark channel "
                         "prior is given it (default), or by its own")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    results = []
    for task in a.tasks:
        for s in (a.sets or EVAL_SETS[task]):
            if s not in EVAL_SETS[task]:
                continue
            res = run_translation(task, s, n_crops=a.n_crops, size=a.size, samples=a.samples, model=a.model,
                                  steps=a.steps, strength=a.strength, dehaze_radiometry=a.dehaze_radiometry)
            results.append(res)
            print(translation_table([res]).split("\n", 2)[2], flush=True)
    print()
    print(translation_table(results))
    if a.json:
        to_json(results, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
