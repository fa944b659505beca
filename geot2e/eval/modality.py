"""Held-out checks of the modality adapters: does text → NIR / PAN look like real NIR / PAN?

    python -m geot2e.eval.modality --modalities cir rgbn nir pan --n 32 --json modality.json

NIR (``cir`` gives NIR, red and green of one tile, so NDVI; ``rgbn`` the same from the RGB
model's red and green beside the ``nir`` adapter's band, both sampled from one noise, as
``geot2e.generate(..., modality="rgbn")`` does; ``nir`` the band alone). Real
tiles: 64-px windows of the Sentinel-2 held-out block (10 m), labelled by their own spectra
with the captioner's rules (:func:`geot2e.train.captions.measure_content`: vegetation, water,
...). Generated tiles: the prompts "satellite image, mostly green vegetation" and "satellite
image, mostly water" (the captions' words) at 10 m, mapped to the scene's values with the
scene's percentiles (as training scaled them). Reported per class: NDVI (``cir``, ``rgbn``) or
the scaled NIR level (``nir``) of real and generated pixels (mean, std), the 1-Wasserstein
distance between the two distributions, and the separation vegetation − water (``nir``: also
the texture ratio, std of the Laplacian, generated / real, with and without the band's own
pixel-detail network where it has one). For ``rgbn``
also whether the two models drew one layout: per tile, the correlation between the gradient
magnitudes of the NIR band and of the visible bands' mean (real tiles: the same), median
over the tiles of a class.

PAN: real 64-px windows (15 m, clear pixels) of Landsat 8 Pensacola's held-out PAN quarter;
generated tiles from the real tiles' own captions (their 30 m red/green/blue) at 15 m. Reported:
the texture ratio (std of the Laplacian, generated / real, pooled), the 1-Wasserstein distance
between the value histograms (scene-scaled), with the distance between two halves of the real
tiles as the floor, and the same for the RGB base model's tiles made grey (mean of its bands)
as the baseline an adapter has to beat (and for the adapter without PAN's pixel-detail network
where it has one).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import numpy as np
from scipy import ndimage
from scipy.stats import wasserstein_distance

from .common import generate_tiles, to_json

__all__ = ["PROMPTS", "real_tiles", "nir_report", "pan_report", "run_modality_eval", "modality_table", "main"]

#: the prompts of the NIR check, by content class (the automatic captions' words)
PROMPTS = {"vegetation": "satellite image, mostly green vegetation", "water": "satellite image, mostly water"}
SIZE = 64


def real_tiles(modality: str, n: int, *, size: int = SIZE, seed: int = 0):
    """Held-out real tiles of ``modality``'s bands: ``(tiles (n, C, size, size) scaled to
    [0, 1] by the scene's percentiles, captions, content labels, source)``; the source's
    ``low``/``high`` map them back to the scene's values."""
    from ..train.captions import caption_tile, measure_content
    from ..train.samples import sample_source
    from .holdout import block_mask, window_corners

    if modality == "pan":
        key, bands, block = "landsat8_pensacola", ("pan",), "landsat8_pensacola_pan"
    else:
        key, bands, block = "sentinel2_chincoteague", ("nir", "red", "green"), "sentinel2_chincoteague"
    src = sample_source(key, bands=bands, allow_heldout=True)      # clear pixels, the held-out block kept
    ok = src.valid & block_mask(src.valid.shape, block, buffer=False)
    corners = window_corners(ok, size, size // 4)
    rng = np.random.default_rng(seed)
    taken = np.zeros(ok.shape, bool)
    k = len(bands)
    tiles, captions, labels = [], [], []
    for i in rng.permutation(len(corners)):
        r, c = corners[i]
        if taken[r:r + size, c:c + size].any():
            continue
        taken[r:r + size, c:c + size] = True
        win = src.data[:, r:r + size, c:c + size]
        scaled = np.clip((win - src.low[:, None, None]) / np.maximum(src.high - src.low, 1e-6)[:, None, None], 0, 1)
        rgb, nir = scaled[k:k + 3], scaled[k + 3]
        tiles.append(scaled[:k].astype(np.float32))
        captions.append(caption_tile(rgb, nir, gsd=None))
        labels.append(measure_content(rgb, nir).dominant())
        if len(tiles) == n:
            break
    return np.stack(tiles), captions, labels, src


def _to_values(unit: np.ndarray, src, k: int) -> np.ndarray:
    lo, hi = src.low[:k, None, None], src.high[:k, None, None]
    return lo + unit * (hi - lo)


def _ndvi(values: np.ndarray) -> np.ndarray:
    nir, red = values[:, 0].astype(np.float64), values[:, 1].astype(np.float64)
    return ((nir - red) / np.maximum(nir + red, 1e-6)).ravel()


def _dist(a: np.ndarray, b: np.ndarray) -> dict:
    return {"real_mean": float(np.mean(a)), "real_std": float(np.std(a)), "gen_mean": float(np.mean(b)),
            "gen_std": float(np.std(b)), "wasserstein": float(wasserstein_distance(a[::7], b[::7]))}


def _unit(tiles: np.ndarray) -> np.ndarray:
    return np.clip((tiles + 1) / 2, 0, 1)


def _layout_agreement(tiles: np.ndarray) -> float:
    """Median over (nir, red, green) tiles of the correlation between the gradient magnitudes of
    the NIR band and of the visible bands' mean: how far the bands share one layout."""
    def grad(a):
        return np.hypot(ndimage.sobel(a, 0), ndimage.sobel(a, 1)).ravel()

    r = [np.corrcoef(grad(t[0].astype(np.float64)), grad(t[1:].mean(0).astype(np.float64)))[0, 1] for t in tiles]
    return float(np.nanmedian(r))


def nir_report(modality: str, *, model="default", n: int = 32, steps: int = 25, guidance: float = 3.0,
               seed: int = 0) -> dict:
    """Real vs generated NIR (``cir``, ``rgbn``: NDVI; ``nir``: the scaled NIR level) per content class."""
    from ..models import load_model

    tiles, _, labels, src = real_tiles("cir", 4 * n, seed=seed)
    m = load_model(model, modality="nir" if modality == "rgbn" else modality)
    rgb = load_model(model) if modality == "rgbn" else None     # the base model as generate() runs it
    plain = load_model(model, modality="nir", detail=False) if modality == "nir" and m.detail_net is not None else None
    out = {"modality": modality, "model_id": m.model_id, "gsd": 10.0, "steps": steps, "guidance": guidance,
           "real_tiles": {c: labels.count(c) for c in sorted(set(labels))}, "classes": {}}
    for cls, prompt in PROMPTS.items():
        real = tiles[[i for i, lab in enumerate(labels) if lab == cls]]
        if not len(real):
            continue
        gen = _unit(generate_tiles(m, [prompt] * n, [10.0] * n, steps=steps, guidance=guidance,
                                   seeds=range(seed, seed + n)))
        if rgb is not None:                # nir, red, green: the two models from the same seeds
            vis = _unit(generate_tiles(rgb, [prompt] * n, [10.0] * n, steps=steps, guidance=guidance,
                                       seeds=range(seed, seed + n)))
            gen = np.concatenate([gen, vis[:, :2]], 1)
        if modality in ("cir", "rgbn"):
            r, g = _ndvi(_to_values(real, src, 3)), _ndvi(_to_values(gen, src, 3))
            share = float(np.mean([_label_cir(t) == cls for t in gen]))
        else:
            r, g = real[:, 0].ravel(), gen[:, 0].ravel()
            share = None
            lap = _laplace_std(real[:, :1])
            tex = {"texture_ratio": _laplace_std(gen[:, :1]) / lap}
            if plain is not None:          # the band's own pixel-detail network, and without it
                alone = _unit(generate_tiles(plain, [prompt] * n, [10.0] * n, steps=steps, guidance=guidance,
                                             seeds=range(seed, seed + n)))
                tex["texture_ratio_without_detail"] = _laplace_std(alone[:, :1]) / lap
        out["classes"][cls] = {**_dist(r, g), "n_real": int(len(real)), "n_generated": n,
                               "generated_labelled_as_prompt": share}
        if modality == "nir":
            out["classes"][cls].update(tex)
        if modality == "rgbn":
            out["classes"][cls].update(layout_real=_layout_agreement(real), layout_generated=_layout_agreement(gen))
    c = out["classes"]
    if "vegetation" in c and "water" in c:
        out["separation_real"] = c["vegetation"]["real_mean"] - c["water"]["real_mean"]
        out["separation_generated"] = c["vegetation"]["gen_mean"] - c["water"]["gen_mean"]
    return out


def _label_cir(unit_tile: np.ndarray) -> str:
    """The captioner's content class of a generated (nir, red, green) tile (blue ≈ green)."""
    from ..train.captions import measure_content

    nir, red, green = unit_tile
    return measure_content(np.stack([red, green, green]), nir).dominant()


def _laplace_std(tiles: np.ndarray) -> float:
    return float(np.std(np.concatenate([ndimage.laplace(t[0].astype(np.float64), mode="reflect").ravel()
                                        for t in tiles])))


def pan_report(*, model="default", n: int = 32, steps: int = 25, guidance: float = 3.0, seed: int = 0) -> dict:
    """Real vs generated PAN at 15 m: texture ratio and histogram distance, against the RGB
    base model's grey as a baseline."""
    from ..models import load_model

    tiles, captions, _, _ = real_tiles("pan", n, seed=seed)
    n = len(tiles)
    seeds = range(seed, seed + n)
    adapter = load_model(model, modality="pan")
    pan = _unit(generate_tiles(adapter, captions, [15.0] * n, steps=steps, guidance=guidance, seeds=seeds))
    plain = None
    if adapter.detail_net is not None:     # PAN's own pixel-detail network: the adapter without it beside
        plain = _unit(generate_tiles(load_model(model, modality="pan", detail=False), captions, [15.0] * n,
                                     steps=steps, guidance=guidance, seeds=seeds))
    base = load_model(model)
    grey = _unit(generate_tiles(base, captions, [15.0] * n, steps=steps, guidance=guidance, seeds=seeds)).mean(
        1, keepdims=True)
    real = tiles[:, :1]
    lap = _laplace_std(real)
    half = n // 2
    row = {}
    gens = [("pan adapter", pan)] + ([("pan adapter without its detail network", plain)] if plain is not None else [])
    for name, t in gens + [("RGB model, grey", grey)]:
        row[name] = {"texture_ratio": _laplace_std(t) / lap,
                     "wasserstein": float(wasserstein_distance(real.ravel()[::5], t.ravel()[::5])),
                     "mean": float(t.mean()), "std": float(t.std())}
    return {"modality": "pan", "model_id": base.model_id, "gsd": 15.0, "steps": steps, "guidance": guidance,
            "n_real": n, "real": {"mean": float(real.mean()), "std": float(real.std())},
            "wasserstein_floor": float(wasserstein_distance(real[:half].ravel()[::5], real[half:].ravel()[::5])),
            "generated": row}


def run_modality_eval(modalities: Sequence[str] = ("cir", "rgbn", "nir", "pan"), **kw) -> list[dict]:
    return [pan_report(**kw) if m == "pan" else nir_report(m, **kw) for m in modalities]


def modality_table(results: Sequence[dict]) -> str:
    """Markdown tables of :func:`run_modality_eval`'s results."""
    lines = []
    nir = [r for r in results if r["modality"] != "pan"]
    if nir:
        lines += ["| modality | class | quantity | real mean ± std | generated mean ± std | W1 | generated labelled "
                  "as prompt |", "|---|---|---|---|---|---|---|"]
        for r in nir:
            q = "NDVI" if r["modality"] in ("cir", "rgbn") else "NIR (scaled)"
            for cls, c in r["classes"].items():
                share = "" if c["generated_labelled_as_prompt"] is None else f"{c['generated_labelled_as_prompt']:.2f}"
                lines.append(f"| {r['modality']} | {cls} ({c['n_real']} real) | {q} | {c['real_mean']:.3f} ± "
                             f"{c['real_std']:.3f} | {c['gen_mean']:.3f} ± {c['gen_std']:.3f} | "
                             f"{c['wasserstein']:.3f} | {share} |")
            if "separation_real" in r:
                lines.append(f"| {r['modality']} | vegetation − water | {q} | {r['separation_real']:.3f} | "
                             f"{r['separation_generated']:.3f} | | |")
        tex = [(r, cls, c) for r in nir for cls, c in r["classes"].items() if "texture_ratio" in c]
        if tex:
            lines += ["", "NIR pixel-scale texture, generated / real (std of the Laplacian): " + "; ".join(
                f"{cls} {c['texture_ratio']:.2f}" + (f" (without its detail network "
                                                    f"{c['texture_ratio_without_detail']:.2f})"
                                                    if "texture_ratio_without_detail" in c else "")
                for _, cls, c in tex)]
        lay = [(r, c) for r in nir for c in r["classes"].values() if "layout_real" in c]
        if lay:
            lines += ["", "One layout in all bands (median per-tile correlation of NIR and visible gradient "
                      "magnitudes): " + "; ".join(f"{cls} real {c['layout_real']:.2f}, generated "
                                                  f"{c['layout_generated']:.2f}" for r in nir
                                                  for cls, c in r["classes"].items() if "layout_real" in c)]
    for r in results:
        if r["modality"] != "pan":
            continue
        lines += ["", f"PAN at 15 m, {r['n_real']} held-out tiles (real mean {r['real']['mean']:.3f}, std "
                  f"{r['real']['std']:.3f}; W1 floor between two halves of the real tiles {r['wasserstein_floor']:.3f})",
                  "", "| generator | texture ratio | W1 to real | mean | std |", "|---|---|---|---|---|"]
        for name, g in r["generated"].items():
            lines.append(f"| {name} | {g['texture_ratio']:.2f} | {g['wasserstein']:.3f} | {g['mean']:.3f} | "
                         f"{g['std']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modalities", nargs="+", default=["cir", "rgbn", "nir", "pan"],
                    choices=["cir", "rgbn", "nir", "pan"])
    ap.add_argument("--model", default="default")
    ap.add_argument("--n", type=int, default=32, help="generated tiles per prompt (PAN: real tiles)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    res = run_modality_eval(a.modalities, model=a.model, n=a.n, steps=a.steps, guidance=a.guidance)
    print(modality_table(res))
    if a.json:
        to_json(res, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
