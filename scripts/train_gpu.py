#!/usr/bin/env python
"""Continue a model's denoiser on a GPU, from a pack written by ``scripts/make_gpu_pack.py``.

    python scripts/train_gpu.py geot2e/weights/default .gpu OUT --stop-by 540

For a lent GPU machine that has torch (and diffusers / open_clip) but no raster stack: the
tiles come from the pack's arrays through the package's own ``TileDataset``, captioner and
training masks, the loss is ``Text2Earth.training_loss`` (dynamic condition dropout), and
the update trains the UNet, the text tower and the resolution embedding with an EMA, as
``train_denoiser`` does. The VAE encoder is the pack's (frozen). Batches are drawn by
DataLoader workers; the learning rate follows warm-up + cosine over the time budget.

Every ``--val-every`` seconds the EMA weights are scored on the pack's held-out tiles (fixed
masks, noise and timesteps, no condition dropout); the EMA weights with the lowest
validation loss are written to OUT as float16 safetensors (the UNet in shards of < 15 MB,
so each file fits a transfer limit), with ``log.json``. ``scripts/merge_gpu_weights.py``
turns OUT back into a model folder.
"""
from __future__ import annotations

import argparse
import json
import lzma
import math
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

T0 = time.time()
ROOT = Path(__file__).resolve().parents[1]


def _block_optional() -> None:
    """Hide optional packages this script never uses (peft, transformers, timm), so that a
    machine's own, possibly mismatched, versions cannot break diffusers' or open_clip's imports:
    with ``sys.modules[name] = None`` both ``find_spec`` and ``import`` report them as absent."""
    for name in ("peft", "transformers", "timm"):
        sys.modules.setdefault(name, None)


def _bare_package() -> None:
    """Import geot2e's model and training modules without the package ``__init__`` files,
    which pull in the geo stack (rasterio, pyproj, xarray) that this machine may not have."""
    for name, sub in (("geot2e", "geot2e"), ("geot2e.train", "geot2e/train")):
        if name not in sys.modules:
            mod = types.ModuleType(name)
            mod.__path__ = [str(ROOT / sub)]
            sys.modules[name] = mod


def _unxz(pack: Path, entry: dict) -> np.ndarray:
    raw = lzma.decompress((pack / entry["file"]).read_bytes())
    return np.frombuffer(raw, dtype=entry["dtype"]).reshape(entry["shape"])


def load_sources(pack: Path, meta: dict):
    from geot2e.train.dataset import RasterSource

    out = []
    for s in meta["sources"]:
        data = _unxz(pack, s).astype(np.float32)
        valid = np.unpackbits(_unxz(pack, s["valid"]))[: data.shape[1] * data.shape[2]]
        out.append(RasterSource(data=data, valid=valid.reshape(data.shape[1:]).astype(bool), gsd=float(s["gsd"]),
                                name=s["name"], nir_band=s["nir_band"], weight=float(s["weight"]),
                                low=np.asarray(s["low"], np.float32), high=np.asarray(s["high"], np.float32)))
    return out


class Batches(torch.utils.data.IterableDataset):
    """Endless batches (tiles, GSDs, captions, training masks); tile sizes cycle, the batch
    is scaled to keep the pixels per batch."""

    def __init__(self, ds, batch: int, sizes, mask_weights: dict, seed: int):
        self.ds, self.batch, self.sizes, self.mask_weights, self.seed = ds, batch, list(sizes), mask_weights, seed

    def __iter__(self):
        from geot2e.train.loop import _masks

        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        torch.set_num_threads(1)
        rng = np.random.default_rng([self.seed, wid, 4101])
        i = wid
        while True:
            size = int(self.sizes[i % len(self.sizes)])
            i += nw
            n = max(1, int(round(self.batch * (self.ds.size / size) ** 2)))
            b = self.ds.batch(rng, n, size=size)
            b["mask"] = _masks(rng, n, size, self.mask_weights)
            yield b


def setup(a):
    """Device (TF32 and cuDNN autotuning on CUDA), the pack's metadata, a ``TileDataset`` over
    its sources, and the number of DataLoader workers; creates ``a.out``."""
    from geot2e.train.captions import caption_tile
    from geot2e.train.dataset import TileDataset

    pack = Path(a.pack)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    meta = json.loads((pack / "pack.json").read_text())
    sources = load_sources(pack, meta)
    cap = None if meta.get("caption_scale", True) else (lambda rgb, nir, g: caption_tile(rgb, nir, gsd=None))
    ds = TileDataset(sources, size=meta["tile"], gsd_max=meta["gsd_max"], bands=3, seed=a.seed, caption_fn=cap,
                     class_balance=getattr(a, "class_balance", 0.0), stretch_word=getattr(a, "stretch_word", None),
                     window_stretch=getattr(a, "window_stretch", 0.5))
    workers = a.workers if a.workers is not None else max(1, min(15, (os.cpu_count() or 2) - 1))
    return dev, meta, ds, workers


def step_and_ema(opt, loss: torch.Tensor, plist, ema, step: int, decay: float) -> None:
    """One optimizer step (gradients clipped to norm 1) and the EMA update (decay warmed up
    as (1 + step) / (10 + step) until it reaches ``decay``)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(plist, 1.0)
    opt.step()
    d = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(ema, [q.detach().float() for q in plist], 1 - d)


def make_loader(ds, batch: int, sizes, mask_weights: dict, seed: int, workers: int, dev: torch.device):
    return torch.utils.data.DataLoader(Batches(ds, batch, sizes, mask_weights, seed), batch_size=None,
                                       num_workers=workers, pin_memory=dev.type == "cuda",
                                       prefetch_factor=6 if workers else None, persistent_workers=bool(workers))


def build_model(base: Path, pack: Path, dev: torch.device):
    from safetensors.torch import load_file

    from geot2e.models.config import Text2EarthConfig
    from geot2e.models.text2earth import Text2Earth

    cfg_dict = json.loads((base / "config.json").read_text())
    build = Text2EarthConfig.from_dict(cfg_dict, source="config.json")
    build.text.pretrained = None
    model = Text2Earth(build)
    model.config = Text2EarthConfig.from_dict(cfg_dict, source="config.json")
    for comp in ("unet", "text_encoder", "resolution"):
        sd = load_file(str(base / f"{comp}.safetensors"))
        getattr(model, comp).load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    enc = load_file(str(pack / "vae_encoder.safetensors"))
    own = model.vae.state_dict()
    need = [k for k in own if k.startswith(("encoder.", "quant_conv."))]
    missing = [k for k in need if k not in enc]
    if missing:
        raise SystemExit(f"the pack's VAE encoder lacks {missing[:3]}: rebuild the pack from this model")
    model.vae.load_state_dict({k: v.float() for k, v in enc.items()}, strict=False)
    model.to(dev)
    model.vae.requires_grad_(False)
    return model


def _cached_tokenizer(te) -> None:
    """Captions repeat (a few hundred distinct ones): tokenize each once."""
    cache: dict[str, torch.Tensor] = {}
    orig = te.tokenize

    def tokenize(prompts):
        new = sorted({p for p in prompts if p not in cache})
        if new:
            for p, row in zip(new, orig(new)):
                cache[p] = row
        return torch.stack([cache[p] for p in prompts])

    te.tokenize = tokenize


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", help="model folder: config.json, unet/text_encoder/resolution safetensors")
    p.add_argument("pack", help="folder written by make_gpu_pack.py")
    p.add_argument("out", help="folder for the EMA weights and log.json")
    p.add_argument("--stop-by", type=float, default=540, help="seconds after start by which to have saved")
    p.add_argument("--batch", type=int, default=256, help="tiles of 64 px per step (128-px steps: a quarter)")
    p.add_argument("--sizes", default="64,64,128", help="tile sizes, cycled")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--ema", type=float, default=0.9995)
    p.add_argument("--p-text", type=float, default=0.15)
    p.add_argument("--p-res", type=float, default=0.1)
    p.add_argument("--full", type=float, default=0.35, help="share of full (text-to-image) masks")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--val-every", type=float, default=45.0, help="seconds between validations")
    p.add_argument("--seed", type=int, default=23)
    p.add_argument("--save-last", action="store_true",
                   help="hand back the last EMA weights, not those of the lowest validation loss (when the "
                        "training distribution differs on purpose from the validation tiles)")
    p.add_argument("--stretch-word", default=None,
                   help="append these words to the captions of windows scaled by their own percentiles")
    p.add_argument("--window-stretch", type=float, default=0.5,
                   help="share of windows scaled by their own percentiles instead of the scene's")
    p.add_argument("--class-balance", type=float, default=0.0,
                   help="rebalance content classes (TileDataset class_balance): 0 as the data come, 1 equal")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke tests)")
    a = p.parse_args(argv)
    _block_optional()
    _bare_package()

    from geot2e.models.text2earth import make_scheduler
    from geot2e.train.loop import _masks

    base, pack, out = Path(a.base), Path(a.pack), Path(a.out)
    dev, meta, ds, workers = setup(a)
    k = (1.0 - a.full) / 0.65
    mask_weights = {"clouds": 0.35 * k, "brush": 0.075 * k, "rectangle": 0.075 * k, "edge": 0.15 * k, "full": a.full}
    loader = make_loader(ds, a.batch, [int(s) for s in a.sizes.split(",")], mask_weights, a.seed, workers, dev)
    model = build_model(base, pack, dev)
    model.autocast_dtype = torch.bfloat16
    _cached_tokenizer(model.text_encoder)
    sched = make_scheduler(model.config, "ddpm")
    params = {f"{c}.{n}": q for c in ("unet", "text_encoder", "resolution")
              for n, q in getattr(model, c).named_parameters() if q.requires_grad}
    plist = list(params.values())
    opt = torch.optim.AdamW(plist, lr=a.lr, weight_decay=0.0, betas=(0.9, 0.99),
                            **({"fused": True} if dev.type == "cuda" else {}))
    ema = [q.detach().clone().float() for q in plist]

    # fixed validation: held-out tiles, masks, noise and timesteps (no condition dropout)
    vmeta = meta["val"]
    vx = torch.from_numpy(_unxz(pack, vmeta).astype(np.float32) / 127.5 - 1.0).to(dev)
    vg = torch.tensor(vmeta["gsd"], dtype=torch.float32, device=dev)
    vm = _masks(np.random.default_rng(99), vx.shape[0], vx.shape[-1], mask_weights).to(dev)
    vcap = list(vmeta["captions"])

    @torch.no_grad()
    def val_loss() -> float:
        live = [q.detach().clone() for q in plist]
        torch._foreach_copy_(plist, ema)
        model.eval()
        tot = 0.0
        for s in range(4):
            g = torch.Generator(device=dev).manual_seed(1000 + s)
            tot += float(model.training_loss(vx, vm, vg, vcap, p_text=0.0, p_res=0.0, scheduler=sched, generator=g,
                                              masked_weight=2.0))
        torch._foreach_copy_(plist, live)
        model.train()
        return tot / 4

    log: dict = {"args": vars(a), "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                 "torch": torch.__version__, "workers": workers, "mask_weights": mask_weights, "val": [], "train": []}
    best = {"loss": val_loss(), "step": 0, "weights": [t.clone() for t in ema]}
    log["val"].append({"step": 0, "loss": best["loss"], "t": time.time() - T0})
    print(f"start: {log['device']}, {workers} workers, val loss {best['loss']:.4f} ({time.time() - T0:.0f} s)",
          flush=True)
    def save(b: dict) -> None:
        _save_weights(model, plist, b["weights"], out)
        (out / "log.json").write_text(json.dumps({**log, "best_step": b["step"], "best_val": b["loss"]},
                                                 indent=1, default=str))

    gen = torch.Generator(device=dev).manual_seed(a.seed)
    save_reserve = 25.0
    t_start = time.time()
    budget = max(10.0, a.stop_by - (t_start - T0) - save_reserve)
    next_val = t_start + a.val_every
    step, seen, running, wait = 0, 0, None, 0.0
    model.train()
    try:
        it = iter(loader)
        while True:
            now = time.time()
            frac = (now - t_start) / budget
            if frac >= 1.0 or (a.max_steps is not None and step >= a.max_steps):
                break
            lr = a.lr * min(1.0, (step + 1) / a.warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
            for grp in opt.param_groups:
                grp["lr"] = lr
            tw = time.time()
            b = next(it)
            wait += time.time() - tw
            x = b["image"].to(dev, non_blocking=True)
            m = b["mask"].to(dev, non_blocking=True)
            loss = model.training_loss(x, m, b["gsd"], b["caption"], p_text=a.p_text, p_res=a.p_res,
                                       scheduler=sched, generator=gen, masked_weight=2.0)
            step_and_ema(opt, loss, plist, ema, step, a.ema)
            step += 1
            seen += x.shape[0] * (x.shape[-1] / 64) ** 2
            if step % 50 == 0:
                lv = float(loss.detach())
                running = lv if running is None else 0.9 * running + 0.1 * lv
                rate = seen / (time.time() - t_start)
                log["train"].append({"step": step, "loss": lv, "lr": lr, "tiles64_per_s": rate,
                                     "data_wait_s": wait, "t": time.time() - T0})
                if step % 500 == 0:
                    print(f"step {step}: loss {running:.4f}, lr {lr:.2e}, {rate:.0f} 64-px tiles/s, "
                          f"waited {wait:.0f} s for data", flush=True)
            if time.time() >= next_val:
                v = val_loss()
                log["val"].append({"step": step, "loss": v, "t": time.time() - T0})
                print(f"step {step}: val {v:.4f} (best {best['loss']:.4f} at {best['step']})", flush=True)
                if v < best["loss"]:
                    best = {"loss": v, "step": step, "weights": [t.clone() for t in ema]}
                    save(best)  # so that a run killed at its time limit still hands back its best
                next_val = time.time() + a.val_every
    except Exception as e:  # noqa: BLE001 - keep what was learned; the log says what broke
        log["error"] = f"{type(e).__name__}: {e}"
        print("training stopped:", log["error"], flush=True)
    if step and "error" not in log:
        v = val_loss()
        log["val"].append({"step": step, "loss": v, "t": time.time() - T0})
        print(f"final step {step}: val {v:.4f}", flush=True)
        if v < best["loss"] or a.save_last:
            best = {"loss": v, "step": step, "weights": [t.clone() for t in ema]}
    log.update(steps=step, tiles64=seen, data_wait_s=wait, train_seconds=time.time() - t_start, best_step=best["step"],
               best_val=best["loss"])
    save(best)
    log["seconds"] = time.time() - T0
    (out / "log.json").write_text(json.dumps(log, indent=1, default=str))
    print(f"saved EMA weights of step {best['step']} (val {best['loss']:.4f}) after {step} steps; "
          f"{log['seconds']:.0f} s", flush=True)
    return 0


def _save_weights(model, plist, weights, out: Path) -> None:
    """Write ``weights`` (aligned with ``plist``) as float16 shards; the live parameters are
    restored afterwards, so this can run in the middle of training."""
    from safetensors.torch import save_file

    live = [q.detach().clone() for q in plist]
    with torch.no_grad():
        torch._foreach_copy_(plist, weights)
    for comp in ("unet", "text_encoder", "resolution"):
        sd = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in getattr(model, comp).state_dict().items()}
        shards, cur, size = [], {}, 0
        for k2, v in sd.items():
            nb = v.numel() * 2
            if cur and size + nb > 14_000_000:
                shards.append(cur)
                cur, size = {}, 0
            cur[k2] = v
            size += nb
        shards.append(cur)
        for i, sh in enumerate(shards):
            tmp = out / f".{comp}.{i}.safetensors.part"
            save_file(sh, str(tmp), metadata={"format": "pt", "component": comp})
            os.replace(tmp, out / f"{comp}.{i}.safetensors")
    with torch.no_grad():
        torch._foreach_copy_(plist, live)


if __name__ == "__main__":
    raise SystemExit(main())
