#!/usr/bin/env python
"""Train a model's VAE decoder on a GPU behind its frozen encoder, from a ``make_gpu_pack.py`` pack.

    python scripts/train_gpu_decoder.py geot2e/weights/default .gpu OUT --stop-by 500
    python scripts/train_gpu_decoder.py geot2e/weights/default .gpu OUT --new-decoder 64,128,128

The decoder bounds the pixel-scale texture of every fill (docs/model_card.md: v4/v5 keep 0.73
of the truth's Laplacian energy on held-out reconstructions, and their samples stay below
that). The encoder is frozen, so the latent space, and the denoiser trained on it, stay valid.
The stage is the package's decoder stage (``geot2e.train.loop.train_decoder``): its
reconstruction loss (L1 + MSE + gradient L1, optionally the Laplacian-energy term) and, from
``--disc-start``, a hinge PatchGAN critic with the adaptive weight (for ``--critic-warmup`` steps
before that the critic trains alone against the frozen decoder: on CPU a fresh critic joining at
once took a trained decoder from 20.3 to 18.6 dB and its texture from 0.81 to 0.60 in 200
steps, and reconstruction-only steps while it warmed up blurred it to 0.44), on tiles drawn by the
package's ``TileDataset`` in DataLoader workers; bf16 autocast, an EMA of the decoder.

Which snapshot is best is a texture-against-fidelity choice that the held-out protocol makes
(``benchmarks/eval_default.py``), not this script: it writes the EMA decoder at
``--snapshots`` evenly spaced points of the time budget as ``decoder.K.safetensors``
(float16, with the validation PSNR and texture ratio of each in ``log.json``).
``scripts/merge_gpu_weights.py RUN BASE DEST --decoder RUN/decoder.K.safetensors`` puts one
into a model folder.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_gpu as tg  # noqa: E402  (same folder: pack reading, bare imports, batches)

T0 = time.time()


def build_vae(base: Path, pack: Path, dev: torch.device, widths: str | None, layers: int | None):
    """The base's VAE (decoder from ``base/vae.safetensors`` unless a new one is asked for,
    encoder from the pack) and the model config describing it."""
    from safetensors.torch import load_file

    from geot2e.models.config import Text2EarthConfig
    from geot2e.models.text2earth import Text2Earth

    cfg_dict = json.loads((base / "config.json").read_text())
    cfg = Text2EarthConfig.from_dict(cfg_dict, source="config.json")
    cfg.text.pretrained = None
    fresh = bool(widths or layers)
    if widths:
        cfg.vae.decoder_block_out_channels = [int(w) for w in widths.split(",")]
    if layers:
        cfg.vae.decoder_layers_per_block = int(layers)
    torch.manual_seed(0)
    vae = Text2Earth(cfg).vae
    sd = {k: v.float() for k, v in load_file(str(pack / "vae_encoder.safetensors")).items()}
    path = base / "vae.safetensors"
    if path.is_file():   # a new decoder keeps the base's post_quant_conv (its input layer, 1×1)
        keep = ("post_quant_conv.",) if fresh else ("decoder.", "post_quant_conv.")
        sd.update({k: v.float() for k, v in load_file(str(path)).items() if k.startswith(keep)})
    elif not fresh:
        raise SystemExit(f"{path} is missing: fine-tuning starts from the base's decoder (or pass --new-decoder)")
    missing, unexpected = vae.load_state_dict(sd, strict=False)
    bad = [k for k in missing if not (fresh and k.startswith(("decoder.", "post_quant_conv.")))]
    if bad or unexpected:
        raise SystemExit(f"VAE weights do not match the config: missing {bad[:3]}, unexpected {unexpected[:3]}")
    vae.to(dev)
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    vae.post_quant_conv.requires_grad_(True)
    return vae, cfg


def _laplacian_std(x: torch.Tensor) -> torch.Tensor:
    lap = 4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]
    return lap.flatten(1).std(dim=1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", help="model folder: config.json (+ vae.safetensors to fine-tune its decoder)")
    p.add_argument("pack", help="folder written by make_gpu_pack.py")
    p.add_argument("out", help="folder for the decoder snapshots and log.json")
    p.add_argument("--stop-by", type=float, default=500, help="seconds after start by which to have saved")
    p.add_argument("--new-decoder", default=None, metavar="W1,W2,...",
                   help="train a decoder of these block widths (one per VAE level) from scratch")
    p.add_argument("--decoder-layers", type=int, default=None, help="resnet layers per block of the new decoder")
    p.add_argument("--batch", type=int, default=128, help="tiles per step")
    p.add_argument("--size", type=int, default=64, help="tile side in pixels")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--adv", type=float, default=1.5, help="adversarial weight (0: reconstruction only)")
    p.add_argument("--disc-start", type=int, default=None,
                   help="step from which the adversarial term trains the decoder (default: 300 when "
                        "fine-tuning, 1000 for a new decoder)")
    p.add_argument("--critic", default=None, metavar="FILE",
                   help="critic weights to start from (default: the pack's critic.safetensors when fine-tuning)")
    p.add_argument("--critic-warmup", type=int, default=None,
                   help="steps before --disc-start in which only the critic trains, the decoder frozen "
                        "(a fresh critic's first gradients only damage a trained decoder); default 300, "
                        "0 with a trained critic")
    p.add_argument("--tex", type=float, default=0.0, help="weight of the Laplacian-energy term")
    p.add_argument("--grad-weight", type=float, default=0.5, help="weight of the gradient L1 term")
    p.add_argument("--snapshots", type=int, default=3, help="EMA decoders written, evenly over the budget")
    p.add_argument("--val-every", type=float, default=30.0, help="seconds between validations")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--seed", type=int, default=29)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke tests)")
    a = p.parse_args(argv)
    tg._block_optional()
    tg._bare_package()
    from safetensors.torch import save_file

    from geot2e.train.gan import PatchDiscriminator, adversarial_term, critic_step
    from geot2e.train.loop import _hf_energy_loss, _rec_loss

    base, pack, out = Path(a.base), Path(a.pack), Path(a.out)
    dev, meta, ds, workers = tg.setup(a)
    # the denoiser's batches; the decoder ignores the masks ("full" is the cheapest kind to draw)
    loader = tg.make_loader(ds, a.batch, [a.size], {"full": 1.0}, a.seed, workers, dev)
    vae, cfg = build_vae(base, pack, dev, a.new_decoder, a.decoder_layers)
    fresh = bool(a.new_decoder or a.decoder_layers)

    plist = [q for q in vae.parameters() if q.requires_grad]
    names = [n for n, q in vae.named_parameters() if q.requires_grad]
    opt = torch.optim.AdamW(plist, lr=a.lr, betas=(0.9, 0.99), weight_decay=0.0,   # as train_decoder's
                            **({"fused": True} if dev.type == "cuda" else {}))
    torch.manual_seed(a.seed + 7)
    disc = PatchDiscriminator(cfg.bands).to(dev)
    critic = Path(a.critic) if a.critic else (pack / "critic.safetensors" if not fresh else None)
    if critic is not None and critic.is_file():
        from safetensors.torch import load_file

        disc.load_state_dict({k: v.float() for k, v in load_file(str(critic)).items()}, strict=True)
    elif a.critic:
        raise SystemExit(f"{critic}: no such critic file")
    else:
        critic = None
    if a.critic_warmup is None:
        a.critic_warmup = 0 if critic is not None else 300
    disc_start = a.disc_start if a.disc_start is not None else (1000 if fresh else a.critic_warmup)
    dopt = torch.optim.AdamW(disc.parameters(), lr=a.lr, betas=(0.5, 0.9), weight_decay=0.0)
    ema = [q.detach().clone().float() for q in plist]
    last = vae.decoder.conv_out.weight
    amp = torch.autocast(dev.type, dtype=torch.bfloat16)

    vx = torch.from_numpy(tg._unxz(pack, meta["val"]).astype(np.float32) / 127.5 - 1.0).to(dev)

    @torch.no_grad()
    def validate() -> dict:
        live = [q.detach().clone() for q in plist]
        torch._foreach_copy_(plist, ema)
        vae.eval()
        with amp:
            z = vae.encode(vx).latent_dist.mean
            rec = vae.decode(z).sample.float().clamp(-1, 1)
        torch._foreach_copy_(plist, live)
        vae.train()
        mse = ((rec - vx) ** 2).flatten(1).mean(1) / 4.0          # on the 0-1 scale
        psnr = float((-10 * torch.log10(mse.clamp_min(1e-10))).mean())
        tex = float((_laplacian_std(rec) / _laplacian_std(vx).clamp_min(1e-6)).mean())
        return {"psnr": psnr, "texture": tex}

    def snapshot(k: int, step: int, v: dict) -> None:
        live = [q.detach().clone() for q in plist]
        with torch.no_grad():
            torch._foreach_copy_(plist, ema)
        sd = {k2: t.detach().to("cpu", torch.float16).contiguous() for k2, t in vae.state_dict().items()
              if k2.startswith(("decoder.", "post_quant_conv."))}
        with torch.no_grad():
            torch._foreach_copy_(plist, live)
        md = {"format": "pt", "component": "vae.decoder", "step": str(step), "val_psnr": f"{v['psnr']:.3f}",
              "val_texture": f"{v['texture']:.3f}",
              "decoder_block_out_channels": json.dumps(cfg.vae.decoder_block_out_channels),
              "decoder_layers_per_block": json.dumps(cfg.vae.decoder_layers_per_block)}
        tmp = out / f".decoder.{k}.safetensors.part"
        save_file(sd, str(tmp), metadata=md)
        os.replace(tmp, out / f"decoder.{k}.safetensors")
        log["snapshots"].append({"k": k, "step": step, **v, "t": time.time() - T0})
        (out / "log.json").write_text(json.dumps(log, indent=1, default=str))

    log: dict = {"args": vars(a), "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                 "torch": torch.__version__, "workers": workers, "disc_start": disc_start,
                 "critic": str(critic) if critic is not None else None, "critic_warmup": a.critic_warmup,
                 "decoder_block_out_channels": cfg.vae.decoder_block_out_channels,
                 "decoder_layers_per_block": cfg.vae.decoder_layers_per_block,
                 "decoder_parameters": sum(q.numel() for q in plist), "val": [], "train": [], "snapshots": []}
    v0 = validate()
    log["val"].append({"step": 0, **v0, "t": time.time() - T0})
    print(f"start: {log['device']}, {workers} workers, decoder {log['decoder_parameters'] / 1e6:.2f} M parameters "
          f"({'new' if fresh else 'fine-tuned'}), val PSNR {v0['psnr']:.2f} dB, texture {v0['texture']:.3f} "
          f"({time.time() - T0:.0f} s)", flush=True)
    t_start = time.time()
    budget = max(10.0, a.stop_by - (t_start - T0) - 10.0)
    next_val, next_snap, k_snap = t_start + a.val_every, 1, 0
    step, wait = 0, 0.0
    vae.train()
    try:
        it = iter(loader)
        while True:
            frac = (time.time() - t_start) / budget
            done = frac >= 1.0 or (a.max_steps is not None and step >= a.max_steps)
            if a.max_steps is not None:
                frac = step / a.max_steps
            while k_snap < a.snapshots and (done or frac >= next_snap / a.snapshots):
                v = validate()
                log["val"].append({"step": step, **v, "t": time.time() - T0})
                snapshot(k_snap, step, v)
                print(f"snapshot {k_snap} at step {step}: val PSNR {v['psnr']:.2f} dB, texture {v['texture']:.3f}",
                      flush=True)
                k_snap += 1
                next_snap += 1
            if done:
                break
            lr = a.lr * min(1.0, (step + 1) / a.warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
            for grp in opt.param_groups + dopt.param_groups:
                grp["lr"] = lr
            tw = time.time()
            x = next(it)["image"].to(dev, non_blocking=True)
            wait += time.time() - tw
            with torch.no_grad(), amp:
                z = vae.encode(x).latent_dist.mean
            # while the critic warms up the decoder stays as it is: no graph through it, no update
            critic_alone = a.adv > 0 and disc_start - a.critic_warmup <= step < disc_start
            with torch.set_grad_enabled(not critic_alone), amp:
                rec = vae.decode(z).sample.float()
            loss = _rec_loss(rec, x, a.grad_weight)
            if a.tex > 0:
                loss = loss + a.tex * _hf_energy_loss(rec, x)
            adv_w = 0.0
            if a.adv > 0 and step >= disc_start - a.critic_warmup:
                critic_step(disc, dopt, x, rec, amp)
                if step >= disc_start:
                    term, adv_w = adversarial_term(disc, rec, loss, last, a.adv, amp)
                    loss = loss + term
            if not critic_alone:
                tg.step_and_ema(opt, loss, plist, ema, step, a.ema)
            step += 1
            if step % 50 == 0:
                log["train"].append({"step": step, "loss": float(loss.detach()), "adv_weight": adv_w, "lr": lr,
                                     "tiles_per_s": step * x.shape[0] / (time.time() - t_start), "data_wait_s": wait})
            if time.time() >= next_val:
                v = validate()
                log["val"].append({"step": step, **v, "t": time.time() - T0})
                print(f"step {step}: val PSNR {v['psnr']:.2f} dB, texture {v['texture']:.3f}, "
                      f"{step * a.batch / (time.time() - t_start):.0f} tiles/s", flush=True)
                next_val = time.time() + a.val_every
    except Exception as e:  # noqa: BLE001 - keep the snapshots written so far; the log says what broke
        log["error"] = f"{type(e).__name__}: {e}"
        print("training stopped:", log["error"], flush=True)
    log.update(steps=step, data_wait_s=wait, train_seconds=time.time() - t_start, seconds=time.time() - T0)
    (out / "log.json").write_text(json.dumps(log, indent=1, default=str))
    print(f"{step} steps, {k_snap} snapshots; {log['seconds']:.0f} s", flush=True)
    return 0 if "error" not in log else 1


if __name__ == "__main__":
    raise SystemExit(main())
