#!/usr/bin/env python
"""Turn the output of ``scripts/train_gpu.py`` back into a model folder.

    python scripts/merge_gpu_weights.py RUN geot2e/weights/default runs/v5/export --model-id geot2e-default-v5

RUN holds ``unet.N.safetensors``, ``text_encoder.N.safetensors`` and
``resolution.N.safetensors`` shards (float16 EMA weights); BASE supplies the config and the
VAE (frozen during that training). The result is written float16, like the embedded model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

COMPONENTS = ("unet", "text_encoder", "resolution")


def read_shards(run: Path, comp: str) -> dict:
    from safetensors.torch import load_file

    files = sorted(run.glob(f"{comp}.*.safetensors"), key=lambda f: int(f.name.split(".")[1]))
    if not files:
        raise SystemExit(f"{run}: no {comp}.N.safetensors shards; is this a train_gpu.py output folder?")
    sd: dict = {}
    for f in files:
        sd.update(load_file(str(f)))
    return sd


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="train_gpu.py output folder")
    p.add_argument("base", help="model folder the run started from (config and VAE)")
    p.add_argument("dest", help="model folder to write")
    p.add_argument("--model-id", default=None)
    a = p.parse_args(argv)

    import torch

    from geot2e.models import from_pretrained, save_pretrained

    model = from_pretrained(a.base, device="cpu")
    for comp in COMPONENTS:
        mod = getattr(model, comp)
        own = mod.state_dict()
        sd = read_shards(Path(a.run), comp)
        if set(sd) != set(own):
            raise SystemExit(f"{a.run}: {comp} weights do not match {a.base}'s architecture")
        mod.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)
    if a.model_id:
        model.config.model_id = a.model_id
    save_pretrained(model, a.dest, dtype=torch.float16)
    print(f"wrote {a.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
