"""Training loops: VAE stage and denoiser stage (with dynamic condition dropout and EMA),
resumable from the last checkpoint. Everything is saved as safetensors + JSON."""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..models.checkpoint import save_pretrained
from ..models.text2earth import Text2Earth, make_scheduler
from .masks import random_mask
from .schema import StageConfig, scheduled

__all__ = ["StageConfig", "train_vae", "train_decoder", "train_denoiser", "calibrate_latent_scale", "EMA"]


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
        mod = model
        for part in c.split("."):          # dotted paths, e.g. "vae.decoder"
            mod = getattr(mod, part)
        for n, p in mod.named_parameters():
            if p.requires_grad:
                out[f"{c}.{n}"] = p
    return out


def _lr_at(step: int, cfg: StageConfig, elapsed_s: float = 0.0) -> float:
    """Warm-up over ``cfg.warmup`` steps, then a cosine to 0.1 x lr over the steps, or over the
    time budget when ``cfg.budget_minutes`` is set."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.budget_minutes:
        prog = elapsed_s / (60.0 * cfg.budget_minutes)
    else:
        prog = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, prog))))


# ----------------------------------------------------------------------------- state I/O
def _aux_tensors(aux: dict | None) -> dict[str, torch.Tensor]:
    """State of auxiliary modules and optimizers (e.g. the decoder stage's critic) as tensors."""
    out: dict[str, torch.Tensor] = {}
    for name, obj in (aux or {}).items():
        if isinstance(obj, torch.optim.Optimizer):
            plist = [p for g in obj.param_groups for p in g["params"]]
            for i, p in enumerate(plist):
                for key, v in obj.state.get(p, {}).items():
                    v = torch.as_tensor(v).detach().float().cpu()
                    out[f"aux.{name}.{i}.{key}"] = (v.reshape(1) if v.ndim == 0 else v).contiguous()
        else:
            for k, v in obj.state_dict().items():
                out[f"aux.{name}.{k}"] = v.detach().cpu().contiguous()
    return out


def _load_aux(aux: dict | None, t: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`_aux_tensors`; a checkpoint without them leaves the objects as they are."""
    for name, obj in (aux or {}).items():
        if isinstance(obj, torch.optim.Optimizer):
            plist = [p for g in obj.param_groups for p in g["params"]]
            for i, p in enumerate(plist):
                pre = f"aux.{name}.{i}."
                st = {k[len(pre):]: v for k, v in t.items() if k.startswith(pre)}
                if st:
                    obj.state[p] = {k: (v.reshape(()) if k == "step" else v.clone().to(p.device)) for k, v in st.items()}
        else:
            pre = f"aux.{name}."
            sd = {k[len(pre):]: v for k, v in t.items() if k.startswith(pre)}
            if sd:
                obj.load_state_dict(sd)


def _save_state(stage_dir: Path, model: Text2Earth, params, opt, ema: EMA | None, step: int,
                rng: np.random.Generator, log: list, cfg: StageConfig, extra: dict, *,
                torch_states: dict | None = None, rng_ranks: list | None = None, aux: dict | None = None,
                export=None) -> None:
    """Write ``state.safetensors`` (params, AdamW moments, EMA, torch RNG states) and ``state.json``.

    The JSON metadata is also stored inside ``state.safetensors`` (key ``geot2e_state``), so a
    crash between the two writes never pairs tensors with the metadata of another step."""
    from safetensors.torch import save_file

    stage_dir.mkdir(parents=True, exist_ok=True)
    meta = {"step": step, "rng": rng.bit_generator.state, "log": log, "config": asdict(cfg), **extra}
    if rng_ranks is not None:
        meta["rng_ranks"] = rng_ranks
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
    for k, v in (torch_states or {}).items():
        tensors[f"rng.{k}"] = v.detach().to(torch.uint8).contiguous().cpu()
    tensors.update(_aux_tensors(aux))
    tmp = stage_dir / "state.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"geot2e_state": json.dumps(meta, default=str)})
    # the exported model carries the EMA weights when there are any
    if ema is not None:
        backup = {k: p.detach().clone() for k, p in params.items()}
        ema.copy_to(params)
    if export is None:
        _export_model(model, stage_dir)
    else:                                  # the stage's own loadable result (e.g. one small network)
        export(model, stage_dir, step)
    if ema is not None:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(backup[k])
    os.replace(tmp, stage_dir / "state.safetensors")
    (stage_dir / "state.json.tmp").write_text(json.dumps(meta, default=str))
    os.replace(stage_dir / "state.json.tmp", stage_dir / "state.json")


def _load_state(stage_dir: Path, params, opt, ema: EMA | None, *, extras: dict | None = None,
                aux: dict | None = None) -> tuple[int, dict, list]:
    """Inverse of :func:`_save_state`. ``extras`` (a dict), when given, receives ``meta`` (the full
    metadata), ``torch_states`` (saved torch RNG states) and ``meta_from`` ("safetensors"/"json")."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    f = str(stage_dir / "state.safetensors")
    with safe_open(f, framework="pt") as fh:
        embedded = (fh.metadata() or {}).get("geot2e_state")
    meta = json.loads(embedded) if embedded else json.loads((stage_dir / "state.json").read_text())
    t = load_file(f)
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(t[f"param.{k}"].to(p.dtype))
    for k, p in params.items():
        if f"opt.{k}.exp_avg" in t:
            opt.state[p] = {"exp_avg": t[f"opt.{k}.exp_avg"].clone().to(p.device),
                            "exp_avg_sq": t[f"opt.{k}.exp_avg_sq"].clone().to(p.device),
                            "step": t[f"opt.{k}.step"].reshape(())}
    if ema is not None:
        for k in ema.shadow:
            if f"ema.{k}" in t:
                ema.shadow[k] = t[f"ema.{k}"].clone().to(ema.shadow[k].device)
    _load_aux(aux, t)
    if extras is not None:
        extras["meta"] = meta
        extras["meta_from"] = "safetensors" if embedded else "json"
        extras["torch_states"] = {k[4:]: v for k, v in t.items() if k.startswith("rng.")}
    return int(meta["step"]), meta["rng"], list(meta.get("log", []))


def _export_model(model: Text2Earth, stage_dir: Path) -> None:
    """The stage's loadable model: a checkpoint folder, or the adapter of a LoRA model."""
    from ..models.adapter import has_lora, save_lora

    if has_lora(model):
        save_lora(model, stage_dir / "adapter")
    else:
        save_pretrained(model, stage_dir / "model")


def _torch_states(generator: torch.Generator | None) -> dict:
    st = {"torch_global": torch.get_rng_state()}
    if generator is not None:
        st["torch_gen"] = generator.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["torch_cuda"] = torch.cuda.get_rng_state()
    return st


def _set_torch_states(st: dict, generator: torch.Generator | None) -> None:
    if "torch_global" in st:
        torch.set_rng_state(st["torch_global"].to(torch.uint8).cpu())
    if generator is not None and "torch_gen" in st:
        generator.set_state(st["torch_gen"].to(torch.uint8).cpu())
    if "torch_cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state(st["torch_cuda"].to(torch.uint8).cpu())


def _to_device(batch: dict, dev: torch.device) -> dict:
    if dev.type == "cpu":
        return batch
    return {k: (v.to(dev, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _masks(rng: np.random.Generator, n: int, size: int, weights: dict) -> torch.Tensor:
    return torch.from_numpy(np.stack([random_mask(rng, size, size, weights=weights) for _ in range(n)])[:, None]
                            .astype(np.float32))


def _run(model, dataset, cfg: StageConfig, stage_dir: Path, components, loss_fn, *, use_ema: bool,
         resume: bool, progress: bool, desc: str, extra: dict, generator: torch.Generator | None = None,
         aux: dict | None = None, val_fn=None, export=None) -> list:
    """The loop every training stage runs: batches, AdamW, EMA, saves, resume. ``export(model, stage_dir,
    step)``: what a save writes as the stage's loadable result, with the EMA weights in place;
    default the whole model (or its LoRA adapter) in ``stage_dir/model``."""
    from . import parallel as D

    stage_dir = Path(stage_dir)
    ctx = D.context()                      # None in a single process
    main = ctx is None or ctx.rank == 0
    torch.manual_seed(D.rank_seed(cfg.seed, ctx))
    if ctx is not None:                    # replicas start identical (rank 0's weights)
        D.broadcast_parameters([*model.parameters(), *model.buffers()])
    params = _named_params(model, components)
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    ema = EMA(params, cfg.ema_decay) if use_ema else None
    rng = D.rank_rng(cfg.seed, ctx)
    bs = D.local_batch_size(cfg.batch_size, ctx)
    step, log = 0, []
    extra = dict(extra)
    extra.setdefault("elapsed_s", 0.0)
    if resume and (stage_dir / "state.json").is_file():
        ex: dict = {}
        step, rng_state, log = _load_state(stage_dir, params, opt, ema, extras=ex, aux=aux)
        for k in ("elapsed_s", "best"):
            if k in ex["meta"]:
                extra[k] = ex["meta"][k]
        saved = _best_on_disk(stage_dir)       # a best saved after the last state save (crash between them)
        if saved is not None and (extra.get("best") is None or saved["val"] < extra["best"]["val"]):
            extra["best"] = saved
        ranks = ex["meta"].get("rng_ranks")
        tstates = ex["torch_states"]
        if ctx is not None and ctx.rank > 0:
            if ranks and len(ranks) == ctx.world_size:
                rng.bit_generator.state = ranks[ctx.rank]
            else:                          # world size changed: fresh, step-dependent stream
                rng = np.random.default_rng([cfg.seed, ctx.rank, step])
            tstates = {k.split(".", 1)[1]: v for k, v in tstates.items() if k.startswith(f"r{ctx.rank}.")}
        else:
            rng.bit_generator.state = rng_state
        torch.manual_seed(D.rank_seed(cfg.seed, ctx) + step)
        _set_torch_states({k: v for k, v in tstates.items() if not k.startswith("r")}, generator)
        if main and ex["meta_from"] == "safetensors":
            js = json.loads((stage_dir / "state.json").read_text())
            if int(js.get("step", -1)) != step:   # crash between the two writes: repair state.json
                (stage_dir / "state.json").write_text(json.dumps(ex["meta"], default=str))
    end = cfg.end_step
    validate = val_fn is not None and cfg.val_every > 0 and ema is not None and main

    def budget_spent() -> bool:
        return bool(cfg.budget_minutes) and extra["elapsed_s"] >= 60.0 * cfg.budget_minutes

    if step >= end or budget_spent() or (stage_dir / "time_budget_spent").exists():
        _finish(params, ema, stage_dir, cfg, extra)
        model.eval()
        return log
    model.train()
    dev = next(iter(params.values())).device if params else torch.device("cpu")
    t0 = time.time()
    seen = 0
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, disable=not (progress and main), dynamic_ncols=True)
    running = None
    elapsed0 = float(extra["elapsed_s"])
    loader = None
    if cfg.workers > 0:
        loader = iter(torch.utils.data.DataLoader(
            _Batches(dataset, bs, cfg.tile_sizes, seed=[cfg.seed, step, 0 if ctx is None else ctx.rank]),
            batch_size=None, num_workers=cfg.workers, persistent_workers=True, prefetch_factor=4,
            pin_memory=dev.type == "cuda"))
    while step < end:
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg, extra["elapsed_s"])
        if loader is not None:
            batch = next(loader)
        elif cfg.tile_sizes:
            size = int(cfg.tile_sizes[step % len(cfg.tile_sizes)])
            n = max(1, int(round(bs * (dataset.size / size) ** 2)))
            batch = dataset.batch(rng, n, size=size)
        else:
            batch = dataset.batch(rng, bs)
        loss = loss_fn(_to_device(batch, dev), rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        extra["elapsed_s"] = elapsed0 + (time.time() - t0)
        timed_out = cfg.max_minutes is not None and (time.time() - t0) / 60 > cfg.max_minutes
        timed_out = timed_out or budget_spent()
        if ctx is not None:                # average gradients (and the loss, and the stop flag) over ranks
            lv, timed_out = D.sync_gradients(list(params.values()), loss, stop=timed_out)
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        if ema is not None:
            ema.update(params, step)
        step += 1
        seen += cfg.batch_size
        if ctx is None:
            lv = float(loss.detach())
        running = lv if running is None else 0.98 * running + 0.02 * lv
        rate = seen / max(1e-6, time.time() - t0)
        bar.set_postfix(loss=f"{running:.4f}", samples_s=f"{rate:.1f}")
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.append({"step": step, "loss": running, "loss_raw": lv, "samples_per_s": rate, "time": time.time()})
        out_of_time = timed_out
        if validate and (step % cfg.val_every == 0 or step == end or out_of_time):
            _validate(model, params, ema, val_fn, stage_dir, step, extra, log)
        if step % cfg.save_every == 0 or step == end or out_of_time:
            tst = _torch_states(generator)
            gathered = D.gather_objects({"rng": rng.bit_generator.state, "torch": tst})
            rng_ranks = None
            if gathered is not None:
                rng_ranks = [g["rng"] for g in gathered]
                for r, g in enumerate(gathered[1:], start=1):
                    tst.update({f"r{r}.{k}": v for k, v in g["torch"].items()})
            if main:
                _save_state(stage_dir, model, params, opt, ema, step, rng, log, cfg, extra, torch_states=tst,
                            rng_ranks=rng_ranks, aux=aux, export=export)
        if out_of_time:
            if main and not budget_spent():   # a spent budget is read from the state: raising it resumes
                (stage_dir / "time_budget_spent").write_text(str(step))
            break
    bar.close()
    D.barrier()
    _finish(params, ema, stage_dir, cfg, extra)
    model.eval()
    return log


class _Batches(torch.utils.data.IterableDataset):
    """Endless batches of a tile dataset for DataLoader workers: each worker has its own
    random stream; tile sizes cycle over the workers' batches (the batch scaled to keep the
    pixels per batch)."""

    def __init__(self, dataset, batch: int, sizes, *, seed):
        self.dataset, self.batch, self.sizes, self.seed = dataset, int(batch), list(sizes or []), list(seed)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        torch.set_num_threads(1)
        rng = np.random.default_rng([*self.seed, wid, 4101])
        i = wid
        while True:
            if self.sizes:
                size = int(self.sizes[i % len(self.sizes)])
                n = max(1, int(round(self.batch * (self.dataset.size / size) ** 2)))
                yield self.dataset.batch(rng, n, size=size)
            else:
                yield self.dataset.batch(rng, self.batch)
            i += nw


def _best_on_disk(stage_dir: Path) -> dict | None:
    """Step and score of ``best.safetensors`` (from its metadata), or None."""
    f = Path(stage_dir) / "best.safetensors"
    if not f.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(f), framework="pt") as fh:
        meta = fh.metadata() or {}
    try:
        return {"step": int(meta["step"]), "val": float(meta["val"])}
    except (KeyError, ValueError):
        return None


def _validate(model, params, ema: EMA, val_fn, stage_dir: Path, step: int, extra: dict, log: list) -> None:
    """Score the EMA weights with ``val_fn(model)``; keep them (``best.safetensors``) when they
    beat the best so far."""
    from safetensors.torch import save_file

    backup = {k: p.detach().clone() for k, p in params.items()}
    ema.copy_to(params)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        val = float(val_fn(model))
    model.train(was_training)
    best = extra.get("best")
    if best is None or val < best["val"]:
        stage_dir.mkdir(parents=True, exist_ok=True)
        tmp = stage_dir / "best.safetensors.tmp"
        save_file({k: v.detach().float().contiguous().cpu() for k, v in ema.shadow.items()}, str(tmp),
                  metadata={"step": str(step), "val": repr(val)})
        os.replace(tmp, stage_dir / "best.safetensors")
        extra["best"] = {"step": step, "val": val}
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(backup[k])
    log.append({"step": step, "val_loss": val, "time": time.time()})


def _finish(params, ema: EMA | None, stage_dir: Path, cfg: StageConfig, extra: dict) -> None:
    """Put the stage's result into the model: the best validated EMA weights when the stage
    validates and ``cfg.keep == "best"``, else the last EMA (or the raw weights without EMA)."""
    best = Path(stage_dir) / "best.safetensors"
    if cfg.val_every > 0 and cfg.keep == "best" and best.is_file():
        from safetensors.torch import load_file

        t = load_file(str(best))
        with torch.no_grad():
            for k, p in params.items():
                if k in t:
                    p.copy_(t[k].to(p.dtype))
        return
    if ema is not None:
        ema.copy_to(params)


def train_vae(model: Text2Earth, dataset, cfg: StageConfig, out_dir: str | Path, *, resume: bool = True,
              progress: bool = True) -> list:
    """Train the VAE on tiles (L1 + gradient L1 + small KL). Returns the loss log."""
    model.autocast_dtype = torch.bfloat16 if cfg.bf16 else None

    def loss_fn(batch, rng):
        x = batch["image"]
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if cfg.bf16 and x.device.type == "cpu" else contextlib.nullcontext()
        with ctx:
            post = model.vae.encode(x).latent_dist
            z = post.sample()
            rec = model.vae.decode(z).sample.float()
        return _rec_loss(rec, x, cfg.grad_weight) + cfg.kl_weight * post.kl().mean()

    return _run(model, dataset, cfg, Path(out_dir) / "vae", ["vae"], loss_fn, use_ema=False, resume=resume,
                progress=progress, desc="vae", extra={})


def _rec_loss(rec: torch.Tensor, x: torch.Tensor, grad_weight: float) -> torch.Tensor:
    gx = lambda a: a[..., :, 1:] - a[..., :, :-1]  # noqa: E731
    gy = lambda a: a[..., 1:, :] - a[..., :-1, :]  # noqa: E731
    lg = (gx(rec) - gx(x)).abs().mean() + (gy(rec) - gy(x)).abs().mean()
    return (rec - x).abs().mean() + 0.5 * F.mse_loss(rec, x) + grad_weight * lg


def _opponent(x: torch.Tensor) -> torch.Tensor:
    """Bands → (their mean, differences of neighbouring bands): brightness and colour contrasts.
    Detail of real ground is mostly brightness; colour detail is small."""
    diffs = x[:, :-1] - x[:, 1:]
    return torch.cat([x.mean(dim=1, keepdim=True), diffs], dim=1)


def _hf_energy_loss(rec: torch.Tensor, x: torch.Tensor, window: int = 8, eps: float = 1e-4) -> torch.Tensor:
    """|log| of the ratio of local Laplacian energies (``window`` px boxes) of ``rec`` and ``x``,
    per channel of the opponent basis (:func:`_opponent`: the bands' mean and the differences of
    neighbouring bands). Blind to where the detail is, it penalises a decoder that returns less
    (or more) pixel-scale detail than the real tile has, which an L1/L2 loss rewards wherever
    the latents do not pin the detail down. Matched per band instead, it lets the decoder add
    detail to each band independently: colour noise, whose off-palette pixels the held-out
    protocol counts (measured: model card, "Sharper decoders"); in the opponent basis colour
    detail must stay as small as the tile's own."""
    rec, x = _opponent(rec), _opponent(x.to(rec.dtype))
    c = x.shape[1]
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=rec.dtype, device=rec.device)
    k = k.expand(c, 1, 3, 3)
    lap = lambda a: F.conv2d(F.pad(a, (1, 1, 1, 1), mode="reflect"), k, groups=c)  # noqa: E731
    e_rec = F.avg_pool2d(lap(rec) ** 2, window)
    e_x = F.avg_pool2d(lap(x) ** 2, window)
    return (torch.log(e_rec + eps) - torch.log(e_x + eps)).abs().mean()


def train_decoder(model: Text2Earth, dataset, cfg: StageConfig, out_dir: str | Path, *, resume: bool = True,
                  progress: bool = True) -> list:
    """Fine-tune the VAE decoder only: reconstruction loss plus a hinge PatchGAN term.

    The encoder is frozen, so the latent space — and a denoiser trained on it — stays valid: this
    stage can run before, after or alongside the denoiser stages. The adversarial term
    (``cfg.adv_weight`` × the adaptive weight of :func:`geot2e.train.gan.adaptive_weight`, from
    step ``cfg.disc_start``) restores the texture an L1 decoder blurs away. The critic and its
    optimizer are saved with the stage's checkpoint, so a resumed run continues the same game (a
    restarted critic set the texture back on the v2 default model; docs/model_card.md). With
    ``cfg.ema_decay > 0`` the exported decoder is an EMA of the generator's weights, which damps
    the adversarial oscillation.
    """
    from .gan import PatchDiscriminator, adversarial_term, critic_step

    model.vae.requires_grad_(False)
    model.vae.decoder.requires_grad_(True)
    model.vae.post_quant_conv.requires_grad_(True)
    model.autocast_dtype = torch.bfloat16 if cfg.bf16 else None
    dev = model.device
    torch.manual_seed(cfg.seed + 7)
    disc = PatchDiscriminator(model.config.bands).to(dev)
    dopt = torch.optim.AdamW(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.9), weight_decay=0.0)
    last = model.vae.decoder.conv_out.weight
    calls = [0]

    def loss_fn(batch, rng):
        x = batch["image"]
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if cfg.bf16 and x.device.type == "cpu" else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            z = model.vae.encode(x).latent_dist.mean    # what the denoiser is trained to produce
        with ctx:
            rec = model.vae.decode(z).sample.float()
        rec_loss = _rec_loss(rec, x, cfg.grad_weight)
        tex, adv = scheduled(cfg.tex_weight, calls[0]), scheduled(cfg.adv_weight, calls[0])   # at this step
        if tex > 0:
            rec_loss = rec_loss + tex * _hf_energy_loss(rec, x)
        calls[0] += 1
        if adv <= 0 or calls[0] <= cfg.disc_start:
            return rec_loss
        critic_step(disc, dopt, x, rec, ctx)            # critic step on real vs. reconstructed tiles
        term, _ = adversarial_term(disc, rec, rec_loss, last, adv, ctx)
        return rec_loss + term

    stage_dir = Path(out_dir) / "decoder"
    if resume and (stage_dir / "state.json").is_file():
        calls[0] = int(json.loads((stage_dir / "state.json").read_text()).get("step", 0))
    return _run(model, dataset, cfg, stage_dir, ["vae.decoder", "vae.post_quant_conv"], loss_fn,
                use_ema=cfg.ema_decay > 0, resume=resume, progress=progress, desc="decoder", extra={},
                aux={"critic": disc, "critic_opt": dopt})


@torch.no_grad()
def calibrate_latent_scale(model: Text2Earth, dataset, *, batches: int = 8, batch_size: int = 32, seed: int = 0) -> float:
    """Set ``config.vae.scaling_factor`` to 1/std of the latents (so z has unit variance)."""
    rng = np.random.default_rng(seed)
    model.config.vae.scaling_factor = 1.0
    zs = [model.encode_images(dataset.batch(rng, batch_size)["image"].to(model.device)) for _ in range(batches)]
    s = 1.0 / float(torch.cat(zs).std())
    model.config.vae.scaling_factor = s
    return s


def denoiser_val_fn(batch: dict, *, masked_weight: float = 2.0, seed: int = 0):
    """A validation score for :func:`train_denoiser`: the denoising loss of ``batch`` (fixed
    tiles, captions, GSDs) with fixed training masks, noise and timesteps and no condition
    dropout, so scores of different weights compare."""
    x, gsd, caps = batch["image"], batch["gsd"], batch["caption"]
    rng = np.random.default_rng(seed)
    m = _masks(rng, x.shape[0], x.shape[-1], StageConfig().mask_weights)

    def score(model: Text2Earth) -> float:
        sched = make_scheduler(model.config, "ddpm")
        gen = torch.Generator(device=model.device).manual_seed(seed)
        tot = 0.0
        for i in range(0, x.shape[0], 32):
            sl = slice(i, i + 32)
            tot += float(model.training_loss(x[sl].to(model.device), m[sl].to(model.device), gsd[sl], caps[sl],
                                             p_text=0.0, p_res=0.0, scheduler=sched, generator=gen,
                                             masked_weight=masked_weight)) * x[sl].shape[0]
        return tot / x.shape[0]

    return score


def train_denoiser(model: Text2Earth, dataset, cfg: StageConfig, out_dir: str | Path, *, resume: bool = True,
                   progress: bool = True, components=("unet", "text_encoder", "resolution"),
                   stage: str = "denoiser", val_batch: dict | None = None) -> list:
    """Train the denoiser (and text tower, resolution embedding) with dynamic condition dropout and EMA.

    With ``val_batch`` (fixed validation tiles) and ``cfg.val_every`` the EMA weights are scored
    every ``val_every`` steps and the best are kept (``cfg.keep``)."""
    model.vae.requires_grad_(False)
    model.autocast_dtype = torch.bfloat16 if cfg.bf16 else None
    sched = make_scheduler(model.config, "ddpm")
    from .parallel import context, rank_seed

    gen = torch.Generator(device=model.device).manual_seed(rank_seed(cfg.seed, context()))

    def loss_fn(batch, rng):
        x = batch["image"]
        m = _masks(rng, x.shape[0], x.shape[-1], cfg.mask_weights).to(x.device)
        return model.training_loss(x, m, batch["gsd"], batch["caption"], p_text=cfg.p_text, p_res=cfg.p_res,
                                   scheduler=sched, generator=gen, masked_weight=cfg.masked_weight,
                                   snr_gamma=cfg.snr_gamma)

    val_fn = None
    if val_batch is not None and cfg.val_every > 0:
        val_fn = denoiser_val_fn(val_batch, masked_weight=cfg.masked_weight, seed=cfg.seed + 99)
    return _run(model, dataset, cfg, Path(out_dir) / stage, list(components), loss_fn, use_ema=True,
                resume=resume, progress=progress, desc=stage, extra={}, generator=gen, val_fn=val_fn)
