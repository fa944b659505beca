#!/usr/bin/env python
"""Continue a trained model's decoder with the decoder stage (how v4's decoder was made from v3's).

    python scripts/continue_decoder.py geot2e/weights/default configs/default.yaml runs/v4 \
        --steps 1500 --adv 1.5 --seed-offset 11
    python scripts/continue_decoder.py geot2e/weights/default configs/default.yaml runs/v4 \
        --steps 2500 --adv 4 --seed-offset 13 --export runs/v4/export --model-id geot2e-default-v4

Loads the checkpoint folder BASE, builds the training tiles of CONFIG's sources exactly as
``geot2e train`` does, and runs the decoder stage (:func:`geot2e.train.train_decoder`:
encoder frozen, so the latents and the denoiser stay valid) in ``OUT/decoder``. Running it
again with a larger ``--steps`` resumes that stage — decoder, its EMA, the critic and both
optimizers — and continues it with the new loss weights. v4's decoder was made that way:
1500 steps from v3's decoder (which is v2's) at ``--adv 1.5``, then the stage resumed at step
1500 for 1000 more at ``--adv 4`` (the cosine schedule spans ``--steps``). The commands above
reproduce it (equivalent, not bitwise: the original run started from v2's float32 checkpoint).
Saves the decoder's EMA weights with the rest of BASE to ``OUT/final`` (float32) and, with
``--export``, a float16 copy with the model id set.

``--new-decoder 64,128,128`` (and ``--decoder-layers``) trains a decoder of other widths/depth
from scratch behind BASE's frozen encoder instead (``vae.decoder_block_out_channels`` in the
model config); ``--disc-start`` lets it learn plain reconstruction before the critic joins.
Repeat the same options when resuming.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "scripts"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import _continue as C  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_args(p, base_help="checkpoint folder whose decoder to continue (e.g. geot2e/weights/default)",
                      seed_offset=11, threads=1)
    p.add_argument("--steps", type=int, default=1500, help="last step of the stage's schedule")
    p.add_argument("--minutes", type=float, default=None, help="time budget of this call (stops after saving)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--adv", type=float, default=1.5, help="weight of the PatchGAN term (times the adaptive weight)")
    p.add_argument("--tex", type=float, default=0.0, help="weight of the local high-frequency energy term")
    p.add_argument("--grad-weight", type=float, default=0.5, help="weight of the image-gradient L1 term")
    p.add_argument("--ema-decay", type=float, default=0.995)
    p.add_argument("--new-decoder", default=None, metavar="W1,W2,...",
                   help="train a new decoder of these block widths (one per VAE level) from scratch")
    p.add_argument("--decoder-layers", type=int, default=None, help="resnet layers per block of the new decoder")
    p.add_argument("--disc-start", type=int, default=0, help="step at which the critic joins")
    a = p.parse_args(argv)

    from geot2e.train.loop import StageConfig, train_decoder

    model, cfg = C.load_base(a)
    if a.new_decoder or a.decoder_layers:
        model = _with_new_decoder(model, a.new_decoder, a.decoder_layers)
    ds = C.training_data(a, cfg, model)
    out = Path(a.out)
    (out / "decoder" / "time_budget_spent").unlink(missing_ok=True)   # a new call brings a new budget
    st = StageConfig(steps=a.steps, max_minutes=a.minutes, batch_size=a.batch_size, lr=a.lr, warmup=20,
                     disc_start=a.disc_start, adv_weight=a.adv, tex_weight=a.tex, grad_weight=a.grad_weight,
                     ema_decay=a.ema_decay, save_every=100)
    train_decoder(model, ds, st, out, progress=True)
    return C.save(a, model)


def _with_new_decoder(model, widths: str | None, layers: int | None):
    """A copy of ``model`` whose VAE decoder has other widths/depth (freshly initialised);
    everything else, the encoder included, keeps ``model``'s weights."""
    import copy

    import torch

    from geot2e.models import Text2Earth

    cfg = copy.deepcopy(model.config)
    if widths:
        cfg.vae.decoder_block_out_channels = [int(w) for w in widths.split(",")]
    if layers:
        cfg.vae.decoder_layers_per_block = int(layers)
    torch.manual_seed(0)
    new = Text2Earth(cfg)
    keep = {k: v for k, v in model.state_dict().items() if not k.startswith("vae.decoder.")}
    missing, unexpected = new.load_state_dict(keep, strict=False)
    assert not unexpected and all(k.startswith("vae.decoder.") for k in missing), (missing, unexpected)
    return new


if __name__ == "__main__":
    raise SystemExit(main())
