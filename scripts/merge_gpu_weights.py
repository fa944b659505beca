#!/usr/bin/env python
"""Turn the output of ``scripts/train_gpu.py`` back into a model folder.

    python scripts/merge_gpu_weights.py RUN geot2e/weights/default runs/v5/export --model-id geot2e-default-v5
    python scripts/merge_gpu_weights.py DEC BASE DEST --decoder DEC/decoder.2.safetensors

RUN holds ``unet.N.safetensors``, ``text_encoder.N.safetensors`` and
``resolution.N.safetensors`` shards (float16 EMA weights); BASE supplies the config and the
VAE (frozen during that training). With ``--decoder`` (a snapshot of
``scripts/train_gpu_decoder.py``) the VAE's decoder is that snapshot's — rebuilt with the
widths and depth written in it — and RUN's denoiser shards are optional. The result is
written float16, like the embedded model.
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


def with_decoder(model, path: Path):
    """``model`` with the VAE decoder (and post_quant_conv) of a train_gpu_decoder.py snapshot."""
    import copy
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    from geot2e.models import Text2Earth

    if not path.is_file():
        raise SystemExit(f"{path}: no such decoder snapshot")
    with safe_open(str(path), "pt") as f:
        md = f.metadata() or {}
    if md.get("component") != "vae.decoder":
        raise SystemExit(f"{path} is not a train_gpu_decoder.py snapshot (metadata component={md.get('component')!r})")
    cfg = copy.deepcopy(model.config)
    cfg.vae.decoder_block_out_channels = json.loads(md.get("decoder_block_out_channels", "null"))
    cfg.vae.decoder_layers_per_block = json.loads(md.get("decoder_layers_per_block", "null"))
    new = Text2Earth(cfg)
    new.load_state_dict({k: v for k, v in model.state_dict().items()
                         if not k.startswith(("vae.decoder.", "vae.post_quant_conv."))}, strict=False)
    sd = load_file(str(path))
    own = {k: v for k, v in new.vae.state_dict().items() if k.startswith(("decoder.", "post_quant_conv."))}
    if set(sd) != set(own):
        raise SystemExit(f"{path}: decoder weights do not match the widths/depth written in it")
    new.vae.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=False)
    return new


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="train_gpu.py output folder")
    p.add_argument("base", help="model folder the run started from (config and VAE)")
    p.add_argument("dest", help="model folder to write")
    p.add_argument("--model-id", default=None)
    p.add_argument("--decoder", default=None, metavar="FILE", help="a train_gpu_decoder.py snapshot to use as the decoder")
    a = p.parse_args(argv)

    import torch

    from geot2e.models import from_pretrained, save_pretrained

    model = from_pretrained(a.base, device="cpu")
    if a.decoder:
        model = with_decoder(model, Path(a.decoder))
    comps = COMPONENTS
    if a.decoder:   # a decoder-only run has no denoiser shards: keep the base's
        comps = tuple(c for c in COMPONENTS if any(Path(a.run).glob(f"{c}.*.safetensors")))
    for comp in comps:
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
