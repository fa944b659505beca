"""Shared pieces of the evaluation protocols: models, generated tiles, tile features, JSON."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..sampling import GUIDANCE, MODEL_SAMPLING

__all__ = ["model_info", "generate_tiles", "standardize", "to_json", "spearman", "seed_spread"]


def model_info(model) -> dict:
    """Identity of a model for a report: source folder, checkpoint hash, model id, and the
    training step when the folder is a training checkpoint (``<stage>/model`` next to
    ``<stage>/state.json``)."""
    info = {"model_id": getattr(model, "model_id", None), "checkpoint_hash": getattr(model, "checkpoint_hash", None),
            "source": getattr(model, "source", None), "step": None, "stage": None,
            "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}
    src = info["source"]
    if src:
        state = Path(src).parent / "state.json"
        if state.is_file():
            try:
                meta = json.loads(state.read_text())
                info["step"] = int(meta.get("step"))
                info["stage"] = Path(src).parent.name
            except (ValueError, TypeError, OSError):
                pass
        step_file = Path(src) / "eval_step.json"  # written by copies made for evaluation
        if step_file.is_file():
            try:
                info.update(json.loads(step_file.read_text()))
            except (ValueError, OSError):
                pass
    return info


def generate_tiles(model, prompts: Sequence[str], gsds: Sequence[float | None], *, size: int = 64,
                   steps: int = MODEL_SAMPLING["steps"], guidance: float = GUIDANCE, seeds: Sequence[int], batch_size: int = 16) -> np.ndarray:
    """Text-to-image tiles from ``model.inpaint`` with an all-ones mask.

    Tile ``i`` uses ``prompts[i]``, ``gsds[i]`` and initial noise drawn from ``seeds[i]``
    (so the same seed gives the same noise under any prompt, GSD or guidance).

    Returns
    -------
    (N, C, size, size) float32 array in the model's [-1, 1] range.
    """
    import torch

    n = len(prompts)
    if not (len(gsds) == len(seeds) == n):
        raise ValueError("prompts, gsds and seeds must have the same length")
    c = model.bands
    lat = model.latent_shape(size, size)
    out = []
    for s in range(0, n, batch_size):
        idx = range(s, min(n, s + batch_size))
        noise = torch.stack([torch.randn(lat, generator=torch.Generator().manual_seed(int(seeds[i]))) for i in idx])
        b = len(idx)
        x = torch.zeros(b, c, size, size)
        m = torch.ones(b, 1, size, size)
        g = [gsds[i] for i in idx]
        y = model.inpaint(x, m, gsd=g, prompts=[prompts[i] for i in idx], guidance=guidance, steps=steps,
                          noise=noise, harmonize=False)
        out.append(y.clamp(-1, 1).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def standardize(tiles: np.ndarray) -> np.ndarray:
    """Per tile and band: zero mean, unit standard deviation (floor 1e-3 of the range)."""
    t = np.asarray(tiles, dtype=np.float32)
    mu = t.mean(axis=(-2, -1), keepdims=True)
    sd = t.std(axis=(-2, -1), keepdims=True)
    return (t - mu) / np.maximum(sd, 1e-3)


def spearman(a, b) -> float:
    """Spearman rank correlation (NaN when either side is constant)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    return float(spearmanr(a, b).statistic)


def seed_spread(values: Sequence[float]) -> dict:
    """Mean, standard deviation (n − 1), minimum and maximum of one score over seeds, with
    the values themselves. A protocol whose score moves with the generation noise (the GSD
    probe, text control) is judged on the mean over seeds, not on one draw."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("seed_spread needs at least one value")
    return {"values": v.tolist(), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}


def to_json(result, path: str | os.PathLike | None = None) -> str:
    """JSON text of a result (inf/NaN written as strings, numpy scalars as numbers);
    written to ``path`` when given."""
    def clean(o):
        if isinstance(o, (np.floating, np.integer, np.bool_)):
            o = o.item()
        if isinstance(o, float) and (math.isinf(o) or math.isnan(o)):
            return str(o)
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, np.ndarray):
            return clean(o.tolist())
        return o

    text = json.dumps(clean(result), indent=1)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    return text
