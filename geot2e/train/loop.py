"""Training loops: VAE stage and denoiser stage (with dynamic condition dropout and EMA),
resumable from the last checkpoint. Everything is saved as safetensors + JSON."""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..models.checkpoint import from_pretrained, save_pretrained
from ..models.text2earth import Text2Earth, make_scheduler
from ..train.masks import random_mask

__all__ = ["StageConfig", "train_vae", "train_denoiser", "calibrate_latent_scale", "EMA"]


@dataclass
class StageConfig:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 100
    ema_decay: float = 0.999
    p_text: float = 0.1          # dynamic condition dropout: text
    p_res: float = 0.1           # dynamic condition dropout: resolution
    masked_weight: float = 1.0   # extra loss weight on masked latents
    kl_weight: float = 1e-6      # VAE only
    grad_weight: float = 0.5     # VAE only: L1 on image gradients (keeps texture)
    log_every: int = 50
    save_every: int = 250
    seed: int = 0
    bf16: bool = True            # bf16 autocast (AMX CPUs / GPUs)
    mask_weights: dict = field(default_factory=lambda: {"clouds": 0.45, "brush": 0.15, "rectangle": 0.15,
                                                          "edge": 0.15, "full": 0.10})
    max_minutes: float | None = None  # stop (after saving) when this much wall time has passed
    tile_sizes: list | None = None    # e.g. [64, 128]: alternate tile sizes (batch scaled to keep pixels/batch)


class EMA:
    """Exponential moving average of a set of parameters."""

    def __init__(self, params: dict[str, torch.nn.Parameter], decay: float):
        self.decay = decay
        self.shadow = {k: p.detach().clone().float() for k, p in params.items()}

    @torch.no_grad()
    def update(self, params: dict[str, torch.nn.Parameter], step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, p in params.items():
            self.shadow[k].lerp_(p.detach().float(), 1 - d)

    @torch.no_grad()
    def copy_to(self, params: dict[str, torch.nn.Parameter]) -> None:
        for k, p in params.items():
            p.copy_(self.shadow[k].to(p.dtype))


def _named_params(model: Text2Earth, components: Iterable[str]) -> dict[str, torch.nn.Parameter]:
    out = {}
    for c in components:
        for n, p in getattr(model, c).named_parameters():
            if p.requires_grad:
                out[f"{c}.{n}"] = p
    return out


def _lr_at(step: int, cfg: StageConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    prog = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, prog))))


# ----------------------------------------------------------------------------- state I/O
def _save_state(stage_dir: Path, model: Text2Earth, params, opt, ema: EMA | None, step: int,
                rng: np.random.Generator, log: list, cfg: StageConfig, extra: dict) -> None:
    from safetensors.torch import save_file

    stage_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"param.{k}": p.detach().float().contiguous().cpu() for k, p in params.items()}
    names = list(params)
    for i, name in enumerate(names):
        st = opt.state.get(params[name], {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                tensors[f"opt.{name}.{key}"] = st[key].detach().float().contiguous().cpu()
        if "step" in st:
            tensors[f"opt.{name}.step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
    if ema is not None:
        for k, v in ema.shadow.items():
            tensors[f"ema.{k}"] = v.contiguous().cpu()
    tmp = stage_dir / "state.safetensors.tmp"
    save_file(tensors, str(tmp))
    # the exported model carries the EMA weights when there are any
    if ema is not None:
        backup = {k: p.detach().clone() for k, p in params.items()}
        ema.copy_to(params)
        save_pretrained(model, stage_dir / "model")
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(backup[k])
    else:
        save_pretrained(model, stage_dir / "model")
    os.replace(tmp, stage_dir / "state.safetensors")
    meta = {"step": step, "rng": rng.bit_generator.state, "log": log, "config": asdict(cfg), **extra}
    (stage_dir / "state.json.tmp").write_text(json.dumps(meta, default=str))
    os.replace(stage_dir / "state.json.tmp", stage_dir / "state.json")


def _load_state(stage_dir: Path, params, opt, ema: EMA | None) -> tuple[int, dict, list]:
    from safetensors.torch import load_file

    meta = json.loads((stage_dir / "state.json").read_text())
    t = load_file(str(stage_dir / "state.safetensors"))
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(t[f"param.{k}"].to(p.dtype))
    for k, p in params.items():
        if f"opt.{k}.exp_avg" in t:
            opt.state[p] = {"exp_avg": t[f"opt.{k}.exp_avg"].clone(), "exp_avg_sq": t[f"opt.{k}.exp_avg_sq"].clone(),
                            "step": t[f"opt.{k}.step"].reshape(())}
    if ema is not None:
        for k in ema.shadow:
            if f"ema.{k}" in t:
                ema.shadow[k] = t[f"ema.{k}"].clone()
    return int(meta["step"]), meta["rng"], list(meta.get("log", []))


def _masks(rng: np.random.Generator, n: int, size: int, weights: dict) -> torch.Tensor:
    return torch.from_numpy(np.stack([random_mask(rng, size, size, weights=weights) for _ in range(n)])[:, None]
                            .astype(np.float32))


def _run(model, dataset, cfg: StageConfig, stage_dir: Path, components, loss_fn, *, use_ema: bool,
         resume: bool, progress: bool, desc: str, extra: dict) -> list:
    stage_dir = Path(stage_dir)
    torch.manual_seed(cfg.seed)
    params = _named_params(model, components)
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    ema = EMA(params, cfg.ema_decay) if use_ema else None
    rng = np.random.default_rng(cfg.seed)
    step, log = 0, []
    if resume and (stage_dir / "state.json").is_file():
        step, rng_state, log = _load_state(stage_dir, params, opt, ema)
        rng.bit_generator.state = rng_state
        torch.manual_seed(cfg.seed + step)
    if step >= cfg.steps or (stage_dir / "time_budget_spent").exists():
        if ema is not None:
            ema.copy_to(params)
        model.eval()
        return log
    model.train()
    t0 = time.time()
    seen = 0
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, disable=not progress, dynamic_ncols=True)
    running = None
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        if cfg.tile_sizes:
            size = int(cfg.tile_sizes[step % len(cfg.tile_sizes)])
            n = max(1, int(round(cfg.batch_size * (dataset.size / size) ** 2)))
            batch = dataset.batch(rng, n, size=size)
        else:
            batch = dataset.batch(rng, cfg.batch_size)
        loss = loss_fn(batch, rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        if ema is not None:
            ema.update(params, step)
        step += 1
        seen += cfg.batch_size
        lv = float(loss.detach())
        running = lv if running is None else 0.98 * running + 0.02 * lv
        rate = seen / max(1e-6, time.time() - t0)
        bar.set_postfix(loss=f"{running:.4f}", samples_s=f"{rate:.1f}")
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.append({"step": step, "loss": running, "samples_per_s": rate, "time": time.time()})
        out_of_time = cfg.max_minutes is not None and (time.time() - t0) / 60 > cfg.max_minutes
        if step % cfg.save_every == 0 or step == cfg.steps or out_of_time:
            _save_state(stage_dir, model, params, opt, ema, step, rng, log, cfg, extra)
        if out_of_time:
            (stage_dir / "time_budget_spent").write_text(str(step))
            break
    bar.close()
    if ema is not None:
        ema.copy_to(params)
    model.eval()
    return log


def train_vae(model: Text2Earth, dataset, cfg: StageConfig, out_dir: str | Path, *, resume: bool = True,
              progress: bool = True) -> list:
    """Train the VAE on tiles (L1 + gradient L1 + small KL). Returns the loss log."""
    model.autocast_dtype = torch.bfloat16 if cfg.bf16 else None

    def loss_fn(batch, rng):
        x = batch["image"]
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if cfg.bf16 and x.device.type == "cpu" else _null()
        with ctx:
            post = model.vae.encode(x).latent_dist
            z = post.sample()
            rec = model.vae.decode(z).sample.float()
        l1 = (rec - x).abs().mean()
        gx = lambda a: a[..., :, 1:] - a[..., :, :-1]  # noqa: E731
        gy = lambda a: a[..., 1:, :] - a[..., :-1, :]  # noqa: E731
        lg = (gx(rec) - gx(x)).abs().mean() + (gy(rec) - gy(x)).abs().mean()
        kl = post.kl().mean()
        return l1 + 0.5 * F.mse_loss(rec, x) + cfg.grad_weight * lg + cfg.kl_weight * kl

    return _run(model, dataset, cfg, Path(out_dir) / "vae", ["vae"], loss_fn, use_ema=False, resume=resume,
                progress=progress, desc="vae", extra={})


@torch.no_grad()
def calibrate_latent_scale(model: Text2Earth, dataset, *, batches: int = 8, batch_size: int = 32, seed: int = 0) -> float:
    """Set ``config.vae.scaling_factor`` to 1/std of the latents (so z has unit variance)."""
    rng = np.random.default_rng(seed)
    model.config.vae.scaling_factor = 1.0
    zs = [model.encode_images(dataset.batch(rng, batch_size)["image"]) for _ in range(batches)]
    s = 1.0 / float(torch.cat(zs).std())
    model.config.vae.scaling_factor = s
    return s


def train_denoiser(model: Text2Earth, dataset, cfg: StageConfig, out_dir: str | Path, *, resume: bool = True,
                   progress: bool = True, components=("unet", "text_encoder", "resolution"),
                   stage: str = "denoiser") -> list:
    """Train the denoiser (and text tower, resolution embedding) with dynamic condition dropout and EMA."""
    model.vae.requires_grad_(False)
    model.autocast_dtype = torch.bfloat16 if cfg.bf16 else None
    sched = make_scheduler(model.config, "ddpm")
    gen = torch.Generator().manual_seed(cfg.seed)

    def loss_fn(batch, rng):
        x = batch["image"]
        m = _masks(rng, x.shape[0], x.shape[-1], cfg.mask_weights)
        return model.training_loss(x, m, batch["gsd"], batch["caption"], p_text=cfg.p_text, p_res=cfg.p_res,
                                   scheduler=sched, generator=gen, masked_weight=cfg.masked_weight)

    return _run(model, dataset, cfg, Path(out_dir) / stage, list(components), loss_fn, use_ema=True,
                resume=resume, progress=progress, desc=stage, extra={})


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
