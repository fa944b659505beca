"""Resolution control: does a tile generated "at 120 m" look like 120 m?

A small CNN (the *GSD probe*) learns to predict log2(GSD) from real tiles: windows of the
training scene 224/078 area-averaged to random GSDs (the sampling of
:class:`geot2e.train.TileDataset`), each tile standardised per band so that only spatial
structure, not brightness, carries the answer. It is checked on real held-out tiles of
224/077 at the requested GSDs (its own ceiling), then applied to tiles the model generates
from text alone (all-ones mask) at those GSDs, with the same prompts and noise at every
GSD. The score is the Spearman correlation between requested and predicted GSD
(target ≥ 0.7).

The probe is trained on real tiles *passed through the evaluated model's VAE* (encode, then
decode; ``ProbeConfig.through_vae``, default). A probe trained on raw tiles reads scale
from pixel-level statistics that no autoencoder keeps: on the default model it ranks raw
held-out tiles with Spearman 0.89 but the VAE reconstructions of the same tiles with 0.01,
so it would score the decoder's pixel signature rather than what the denoiser generates.
Trained on reconstructions it reads the scale that survives the decoder; its ceiling is
reported on reconstructions of the held-out tiles (``real_vae``), the same images a perfect
denoiser would produce.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from ..sampling import GUIDANCE, MODEL_SAMPLING
from .common import generate_tiles, seed_spread, spearman, standardize

__all__ = ["ProbeConfig", "GSDProbe", "prepare", "training_tiles", "real_tiles_at_gsd", "train_probe",
           "run_resolution_probe", "resolution_table", "PROBE_PROMPTS", "CAPTIONER_PROMPTS",
           "vae_roundtrip", "vae_fingerprint", "TARGET_SPEARMAN", "resolution_seeds_table"]

#: GSD following's target: Spearman correlation between requested and probed GSD of generated tiles
TARGET_SPEARMAN = 0.8

#: prompts of the generated tiles: the captioner's content and brightness wording, without
#: scale words and without texture words. The captioner's texture word is measured per pixel,
#: so it depends on the GSD: on scene 224/078, "fine texture" labels 32 % of 64-px tiles at 30 m
#: and 89 % at 240 m, "smooth texture" 58 % and 9 %. A prompt that names a texture therefore
#: asks for a scale too, and the same prompt at every requested GSD pulls all tiles towards it.
PROBE_PROMPTS = (
    "satellite image, mostly green vegetation, medium brightness",
    "satellite image, mostly green vegetation, some bare soil, medium brightness",
    "satellite image, some green vegetation, some bare soil, medium brightness",
    "satellite image, mostly green vegetation, a little water, dark",
)
#: the first protocol's prompts (with texture words), kept to compare with earlier figures
CAPTIONER_PROMPTS = (
    "satellite image, mostly green vegetation, medium brightness, fine texture",
    "satellite image, mostly green vegetation, some bare soil, medium brightness, fine texture",
    "satellite image, some green vegetation, some bare soil, medium brightness, rough texture",
    "satellite image, mostly green vegetation, a little water, dark, smooth texture",
)


@dataclass
class ProbeConfig:
    """Options of the resolution-control protocol."""

    gsds: tuple[float, ...] = (30.0, 60.0, 120.0, 240.0)
    size: int = 64                 # tile side (pixels) of probe inputs and generated tiles
    n_per_gsd: int = 8             # generated tiles per requested GSD
    n_real_per_gsd: int = 16       # real held-out tiles per GSD (probe's own check)
    train_tiles: int = 2048        # real training tiles of the probe
    train_steps: int = 600
    batch_size: int = 64
    gsd_range: tuple[float, float] = (30.0, 480.0)
    steps: int = MODEL_SAMPLING["steps"]  # denoising steps of the generation
    guidance: float = GUIDANCE
    seed: int = 0
    prompts: tuple[str, ...] = PROBE_PROMPTS   # cycled over the generated tiles of each GSD
    through_vae: bool = True       # train (and check) the probe on the model's VAE reconstructions


def _stretch(tiles: np.ndarray) -> np.ndarray:
    """Each tile stretched per band by its own 0.5/99.5 percentiles to [0, 1] (clipped)."""
    t = np.asarray(tiles, dtype=np.float32)
    lo = np.percentile(t, 0.5, axis=(-2, -1), keepdims=True)
    hi = np.percentile(t, 99.5, axis=(-2, -1), keepdims=True)
    return np.clip((t - lo) / np.maximum(hi - lo, 1e-6), 0, 1)


def prepare(tiles: np.ndarray) -> np.ndarray:
    """What the probe sees: each tile stretched per band by its own 0.5/99.5 percentiles
    (clipped, as the training tiles are), then standardised per band."""
    return standardize(_stretch(tiles))


class GSDProbe:
    """A small CNN predicting log2(GSD in m) from a standardised (C, size, size) tile."""

    def __init__(self, bands: int = 3, *, width: int = 32, seed: int = 0):
        import torch
        from torch import nn

        torch.manual_seed(seed)
        w = width

        def block(i, o, s):
            return [nn.Conv2d(i, o, 3, stride=s, padding=1), nn.GroupNorm(8, o), nn.SiLU()]

        self.net = nn.Sequential(*block(bands, w, 1), *block(w, w, 2), *block(w, 2 * w, 2), *block(2 * w, 2 * w, 2),
                                 *block(2 * w, 2 * w, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * w, 1))
        self.center, self.scale = 7.0, 2.0
        self.bands, self.width = int(bands), int(width)

    def save(self, path, info: dict | None = None) -> None:
        """Write ``path/probe.safetensors`` + ``path/probe.json`` (weights, shape, training info)."""
        import json
        from pathlib import Path

        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in self.net.state_dict().items()}, str(path / "probe.safetensors"))
        (path / "probe.json").write_text(json.dumps({"bands": self.bands, "width": self.width, "center": self.center,
                                                     "scale": self.scale, "info": info or {}}, default=float))

    @classmethod
    def load(cls, path) -> tuple["GSDProbe", dict]:
        """Inverse of :meth:`save`: ``(probe, info)``."""
        import json
        from pathlib import Path

        from safetensors.torch import load_file

        path = Path(path)
        meta = json.loads((path / "probe.json").read_text())
        probe = cls(meta["bands"], width=meta["width"])
        probe.net.load_state_dict(load_file(str(path / "probe.safetensors")))
        probe.center, probe.scale = meta["center"], meta["scale"]
        probe.net.eval()
        return probe, meta.get("info", {})

    def fit(self, tiles: np.ndarray, log2_gsd: np.ndarray, *, steps: int = 600, batch_size: int = 64,
            lr: float = 2e-3, seed: int = 0) -> list[float]:
        """Train on standardised tiles; returns the loss curve (one value per 50 steps)."""
        import torch

        x = torch.from_numpy(prepare(tiles))
        y = torch.from_numpy(((np.asarray(log2_gsd, np.float32) - self.center) / self.scale))
        opt = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
        g = torch.Generator().manual_seed(seed)
        self.net.train()
        curve, acc = [], []
        for step in range(steps):
            idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=g)
            xb = x[idx]
            k = int(torch.randint(0, 4, (1,), generator=g))
            xb = torch.rot90(xb, k, dims=(2, 3))
            if torch.rand(1, generator=g).item() < 0.5:
                xb = xb.flip(3)
            loss = torch.nn.functional.smooth_l1_loss(self.net(xb)[:, 0], y[idx], beta=0.25)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            acc.append(loss.item())
            if (step + 1) % 50 == 0:
                curve.append(float(np.mean(acc)))
                acc = []
        self.net.eval()
        return curve

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        """Predicted log2(GSD) of (N, C, H, W) tiles (any value scale; standardised here)."""
        import torch

        with torch.no_grad():
            out = [self.net(torch.from_numpy(prepare(tiles[i:i + 256])))[:, 0].numpy()
                   for i in range(0, len(tiles), 256)]
        return np.concatenate(out) * self.scale + self.center


def training_tiles(source, n: int, *, size: int, gsd_range: tuple[float, float], seed: int):
    """``n`` real tiles of a :class:`geot2e.train.RasterSource` at log-uniform GSDs
    (TileDataset's sampling: area-averaged windows, flips and rotations)."""
    from ..train.dataset import TileDataset

    ds = TileDataset([source], size=size, gsd_max=gsd_range[1], bands=source.data.shape[0], window_stretch=1.0,
                     seed=seed, caption_fn=lambda rgb, nir, g: "")
    rng = np.random.default_rng(seed)
    tiles, gsds = [], []
    for _ in range(n):
        s = ds.sample(rng)
        tiles.append(s["image"].numpy())
        gsds.append(s["gsd"])
    return np.stack(tiles).astype(np.float32), np.array(gsds, np.float64)


def real_tiles_at_gsd(gsd: float, n: int, *, size: int = 64, seed: int = 0, scene=None, exclude=None,
                      data_dir=None) -> np.ndarray:
    """``n`` held-out 224/077 tiles area-averaged from 30 m to ``gsd`` (a multiple of 30 m)."""
    import torch
    import torch.nn.functional as F

    from .holdout import heldout_crops

    native = 30.0
    factor = max(1, int(round(gsd / native)))
    crops = heldout_crops(n, size=size * factor, seed=seed, scene=scene, exclude=exclude, data_dir=data_dir,
                          allow_overlap=True)
    arr = torch.from_numpy(np.stack([c.values for c in crops]).astype(np.float32))
    if factor > 1:
        arr = F.avg_pool2d(arr, factor)
    return arr.numpy()


def vae_roundtrip(model, tiles: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """Tiles as the model's VAE gives them back: each tile stretched per band by its own
    0.5/99.5 percentiles to [-1, 1], encoded (latent mean) and decoded. (N, C, H, W) float32."""
    import torch

    x = _stretch(tiles) * 2 - 1
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])).to(model.device)
            z = model.vae.encode(xb).latent_dist.mean
            out.append(model.vae.decode(z).sample.clamp(-1, 1).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def vae_fingerprint(model) -> str:
    """16 hex digits identifying the model's VAE weights (what a ``through_vae`` probe depends on)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.vae.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def train_probe(cfg: ProbeConfig, *, source=None, data_dir=None, progress: Callable[[str], None] | None = None,
                model=None):
    """Train the GSD probe on 224/078 (or ``source``); returns (probe, info). With
    ``cfg.through_vae`` the tiles go through ``model``'s VAE first (``model`` is required)."""
    if cfg.through_vae and model is None:
        raise ValueError("ProbeConfig(through_vae=True) trains the probe on the model's VAE reconstructions; "
                         "pass model=, or set through_vae=False")
    if source is None:
        from ..io.sample_data import LANDSAT_224078
        from ..train.dataset import load_raster_source
        from .holdout import data_paths

        source = load_raster_source(data_paths(data_dir)[LANDSAT_224078], bands=[3, 2, 1], nodata=0)
    t0 = time.perf_counter()
    tiles, gsds = training_tiles(source, cfg.train_tiles, size=cfg.size, gsd_range=cfg.gsd_range, seed=cfg.seed)
    if cfg.through_vae:
        tiles = vae_roundtrip(model, tiles)
    probe = GSDProbe(tiles.shape[1], seed=cfg.seed)
    curve = probe.fit(tiles, np.log2(gsds), steps=cfg.train_steps, batch_size=cfg.batch_size, seed=cfg.seed)
    info = {"train_tiles": len(tiles), "train_gsd_range": [float(gsds.min()), float(gsds.max())],
            "loss_curve": curve, "seconds": time.perf_counter() - t0, "source": getattr(source, "name", None),
            "through_vae": bool(cfg.through_vae), "vae": vae_fingerprint(model) if cfg.through_vae else None}
    if progress:
        progress(f"GSD probe trained on {len(tiles)} real tiles in {info['seconds']:.0f} s "
                 f"(loss {curve[0]:.3f} -> {curve[-1]:.3f})")
    return probe, info


def _per_gsd(requested, predicted, gsds) -> list[dict]:
    rows = []
    for g in gsds:
        sel = np.isclose(requested, g)
        p = predicted[sel]
        rows.append({"gsd": float(g), "n": int(sel.sum()), "predicted_gsd_median": float(2 ** np.median(p)),
                     "predicted_log2_mean": float(p.mean()), "predicted_log2_std": float(p.std())})
    return rows


def run_resolution_probe(model, *, config: ProbeConfig | None = None, probe: GSDProbe | None = None,
                         source=None, scene=None, exclude=None, data_dir=None,
                         progress: Callable[[str], None] | None = None) -> dict:
    """Train (or take) the probe, check it on real held-out tiles, score generated tiles.

    Returns
    -------
    dict
        ``config``, ``probe`` (training info), ``real`` (raw held-out tiles), ``real_vae``
        (their VAE reconstructions, with ``through_vae``: the probe's ceiling) and
        ``generated`` (Spearman, per-GSD medians of the predicted GSD), ``prompts``.
    """
    cfg = config or ProbeConfig()
    out: dict = {"config": asdict(cfg), "prompts": list(cfg.prompts)}
    if probe is None:
        probe, out["probe"] = train_probe(cfg, source=source, data_dir=data_dir, progress=progress, model=model)
    # the probe's own check on real held-out tiles
    if scene is None or exclude is None:
        from .holdout import data_paths, open_heldout_scene, train_scene_bounds

        paths = data_paths(data_dir)
        scene = open_heldout_scene(paths) if scene is None else scene
        exclude = train_scene_bounds(paths) if exclude is None else exclude
    req, pred, pred_v = [], [], []
    for g in cfg.gsds:
        t = real_tiles_at_gsd(g, cfg.n_real_per_gsd, size=cfg.size, seed=cfg.seed, scene=scene, exclude=exclude)
        req += [g] * len(t)
        pred.append(probe.predict(t))
        if cfg.through_vae and model is not None:
            pred_v.append(probe.predict(vae_roundtrip(model, t)))
    req_a, pred_a = np.array(req), np.concatenate(pred)
    out["real"] = {"spearman": spearman(req_a, pred_a), "per_gsd": _per_gsd(req_a, pred_a, cfg.gsds)}
    if pred_v:
        pv = np.concatenate(pred_v)
        out["real_vae"] = {"spearman": spearman(req_a, pv), "per_gsd": _per_gsd(req_a, pv, cfg.gsds)}
    if progress:
        progress(f"probe on real held-out tiles: Spearman {out['real']['spearman']:.3f}"
                 + (f"; on their VAE reconstructions {out['real_vae']['spearman']:.3f}" if pred_v else ""))
    if model is not None:
        t0 = time.perf_counter()
        prompts, gsds, seeds = [], [], []
        for g in cfg.gsds:
            for j in range(cfg.n_per_gsd):
                prompts.append(cfg.prompts[j % len(cfg.prompts)])
                gsds.append(float(g))
                seeds.append(cfg.seed * 100003 + j)  # same noise at every GSD
        tiles = generate_tiles(model, prompts, gsds, size=cfg.size, steps=cfg.steps, guidance=cfg.guidance,
                               seeds=seeds)
        p = probe.predict(tiles)
        req_g = np.array(gsds)
        out["generated"] = {"spearman": spearman(req_g, p), "per_gsd": _per_gsd(req_g, p, cfg.gsds),
                            "seconds": time.perf_counter() - t0, "n": len(tiles)}
        if progress:
            progress(f"generated tiles: Spearman {out['generated']['spearman']:.3f}")
    return out


def resolution_table(result: dict) -> str:
    """Markdown: per requested GSD, the probe's median predicted GSD on real and generated tiles."""
    gen = result.get("generated")
    rv = result.get("real_vae")
    head = "| requested GSD m | probe on real held-out tiles (median m) |"
    if rv:
        head += " same tiles through the model's VAE (ceiling) |"
    lines = [head + " probe on generated tiles (median m) |", "|---" * (4 if rv else 3) + "|"]
    for i, r in enumerate(result["real"]["per_gsd"]):
        g = gen["per_gsd"][i]["predicted_gsd_median"] if gen else math.nan
        mid = f" {rv['per_gsd'][i]['predicted_gsd_median']:.0f} |" if rv else ""
        lines.append(f"| {r['gsd']:.0f} | {r['predicted_gsd_median']:.0f} |{mid} {g:.0f} |")
    sg = gen["spearman"] if gen else math.nan
    mid = f" {rv['spearman']:.3f} |" if rv else ""
    lines.append(f"| **Spearman** | {result['real']['spearman']:.3f} |{mid} {sg:.3f} |")
    return "\n".join(lines)


def resolution_seeds_table(runs: Sequence[dict]) -> str:
    """Markdown: the generated tiles' Spearman of each run (one per seed, :func:`run_resolution_probe`)
    beside the probe's on real held-out tiles (and on their VAE reconstructions, the ceiling),
    their means and spreads, and :data:`TARGET_SPEARMAN` judged on the generated tiles' mean."""
    seeds = [r["config"]["seed"] for r in runs]
    cols = [("generated tiles", [r["generated"]["spearman"] for r in runs]),
            ("real held-out tiles", [r["real"]["spearman"] for r in runs])]
    if all(r.get("real_vae") for r in runs):
        cols.append(("the same through the model's VAE (ceiling)", [r["real_vae"]["spearman"] for r in runs]))
    spreads = [seed_spread(v) for _, v in cols]
    lines = ["| seed | " + " | ".join(f"Spearman, {name}" for name, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for j, s in enumerate(seeds):
        lines.append(f"| {s} | " + " | ".join(f"{sp['values'][j]:.3f}" for sp in spreads) + " |")
    lines.append("| **mean (sd)** | " + " | ".join(f"{sp['mean']:.3f} ({sp['sd']:.3f})" for sp in spreads) + " |")
    gen = spreads[0]
    gap = TARGET_SPEARMAN - gen["mean"]
    verdict = "met" if gap <= 0 else f"missed by {gap:.3f}"
    lines += ["", f"Target Spearman ≥ {TARGET_SPEARMAN:g} on the generated tiles' mean over {len(runs)} seeds: "
              f"**{verdict}** (single seeds {gen['min']:.3f} … {gen['max']:.3f})."]
    return "\n".join(lines)
