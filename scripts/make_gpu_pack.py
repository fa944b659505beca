#!/usr/bin/env python
"""Write a self-contained training pack for a GPU machine that has torch but no raster stack.

    python scripts/make_gpu_pack.py geot2e/weights/default configs/default.yaml .gpu

The pack holds what ``scripts/train_gpu.py`` needs besides the repository's code and the
model's own unet/text/resolution weights: the training rasters of CONFIG as raw arrays
(LZMA-compressed, with the same per-band percentiles and nodata as ``geot2e train`` reads
them), the frozen VAE encoder of BASE (the decoder is not needed to train the denoiser),
and a fixed validation set of 64-px tiles of held-out 224/077 (outside 224/078's
footprint; 30 m and 60 m, captions by the automatic captioner). Everything is numpy,
JSON and safetensors: no pickles.
"""
from __future__ import annotations

import argparse
import json
import lzma
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _xz(path: Path, a: np.ndarray) -> dict:
    path.write_bytes(lzma.compress(np.ascontiguousarray(a).tobytes(), preset=6))
    return {"file": path.name, "shape": list(a.shape), "dtype": str(a.dtype)}


def validation_tiles(n_crops: int = 48, seed: int = 7, scene: str | None = None
                     ) -> tuple[np.ndarray, list[float], list[str]]:
    """Per held-out 128-px crop: its top-left 64-px quadrant at 30 m and the whole crop
    area-averaged to 64 px (60 m); each stretched by its own 0.5/99.5 percentiles.
    ``scene``: another (30 m RGB) raster to draw the crops from, all of it allowed."""
    import torch.nn.functional as F

    from geot2e.eval.holdout import heldout_crops
    from geot2e.train.captions import caption_tile

    if scene is None:
        crops = heldout_crops(n_crops, size=128, seed=seed)
    else:
        import rioxarray

        crops = heldout_crops(n_crops, size=128, seed=seed, scene=rioxarray.open_rasterio(scene).load(),
                              exclude=(0, 0, 1, 1))
    imgs, gsds, caps = [], [], []
    for c in crops:
        a = c.values.astype(np.float32)
        for win, g in ((a[:, :64, :64], 30.0),
                       (F.avg_pool2d(torch.from_numpy(a)[None], 2)[0].numpy(), 60.0)):
            lo = np.percentile(win, 0.5, axis=(1, 2))[:, None, None]
            hi = np.percentile(win, 99.5, axis=(1, 2))[:, None, None]
            s = np.clip((win - lo) / np.maximum(hi - lo, 1e-6), 0, 1)
            imgs.append(np.round(s * 255).astype(np.uint8))
            gsds.append(g)
            caps.append(caption_tile(s, None, gsd=None))
    return np.stack(imgs), gsds, caps


SITE_PACKAGES = ("diffusers", "open_clip_torch", "ftfy", "wcwidth")


def write_site(path: Path) -> int:
    """The pure-Python packages a stock torch image lacks (diffusers without its pipelines,
    open_clip, ftfy, wcwidth), from this interpreter's installation, as one .tar.xz to unpack
    onto ``PYTHONPATH`` there."""
    import importlib.metadata as md
    import tarfile

    n = 0
    with tarfile.open(path, "w:xz") as tar:
        for name in SITE_PACKAGES:
            dist = md.distribution(name)
            for f in dist.files or []:
                rel = f.as_posix()
                if "__pycache__" in rel or rel.startswith("..") or rel.endswith(".pyc"):
                    continue
                if rel.startswith("diffusers/pipelines/") and rel != "diffusers/pipelines/__init__.py":
                    continue   # never imported by the UNet/VAE classes; a third of the package
                src = Path(str(dist.locate_file(f)))
                if src.is_file():
                    tar.add(str(src), arcname=rel)
                    n += 1
    return n


def extract_critic(state: Path, dest: Path) -> int:
    """Write the PatchGAN critic saved in a decoder stage's checkpoint (``aux.critic.*``) as a
    plain safetensors file."""
    from safetensors.torch import load_file, save_file

    sd = {k[len("aux.critic."):]: v for k, v in load_file(str(state)).items() if k.startswith("aux.critic.")}
    if not sd:
        raise SystemExit(f"{state} holds no critic (aux.critic.*): pass a decoder stage's state.safetensors")
    save_file(sd, str(dest), metadata={"format": "pt", "component": "critic"})
    return len(sd)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", help="model folder (its VAE encoder goes into the pack)")
    p.add_argument("config", help="training config whose raster sources go into the pack")
    p.add_argument("out", help="pack folder to write")
    p.add_argument("--val-crops", type=int, default=48, help="held-out 128-px crops for validation (2 tiles each)")
    p.add_argument("--val-scene", default=None,
                   help="raster to draw the validation crops from (default: held-out 224/077, fetched)")
    p.add_argument("--critic", default=None, metavar="STATE",
                   help="a decoder stage's state.safetensors: its PatchGAN critic goes into the pack, so that "
                        "train_gpu_decoder.py fine-tunes the decoder against the critic it was trained with")
    p.add_argument("--site", action="store_true",
                   help="also write site.tar.xz: " + ", ".join(SITE_PACKAGES) + " from this installation")
    a = p.parse_args(argv)

    from safetensors.torch import load_file, save_file

    from geot2e.train.config import load_train_config, resolve_source_path
    from geot2e.train.dataset import load_raster_source

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_train_config(a.config)
    meta: dict = {"tile": cfg.tile, "gsd_max": cfg.gsd_max, "caption_scale": cfg.caption_scale, "sources": []}
    for i, s in enumerate(x for x in cfg.sources if x.kind == "raster"):
        src = load_raster_source(resolve_source_path(s.path), bands=s.bands, nodata=s.nodata, nir_band=s.nir_band,
                                 weight=s.weight)
        raw = src.data
        ints = np.array_equal(raw, np.round(raw)) and raw.min() >= 0 and raw.max() < 65536
        arr = raw.astype((np.uint8 if raw.max() < 256 else np.uint16) if ints else np.float32)
        entry = _xz(out / f"source{i}.xz", arr)
        # nodata is folded into a validity mask (bit-packed), so the pack needs no nodata rule
        entry["valid"] = _xz(out / f"source{i}_valid.xz", np.packbits(src.valid))
        entry.update(name=src.name, gsd=src.gsd, nir_band=src.nir_band, weight=src.weight,
                     low=src.low.tolist(), high=src.high.tolist(), path=s.path)
        meta["sources"].append(entry)
        print(f"{s.path}: {arr.shape} {arr.dtype}, gsd {src.gsd:.2f} m, "
              f"{(out / entry['file']).stat().st_size / 1e6:.1f} MB")
    imgs, gsds, caps = validation_tiles(a.val_crops, scene=a.val_scene)
    meta["val"] = _xz(out / "val.xz", imgs) | {"gsd": gsds, "captions": caps}
    vae = load_file(str(Path(a.base) / "vae.safetensors"))
    enc = {k: v for k, v in vae.items() if k.startswith(("encoder.", "quant_conv."))}
    save_file(enc, str(out / "vae_encoder.safetensors"), metadata={"format": "pt", "component": "vae.encoder"})
    if a.critic:
        print(f"critic.safetensors: {extract_critic(Path(a.critic), out / 'critic.safetensors')} tensors")
    meta["base_config"] = json.loads((Path(a.base) / "config.json").read_text())
    (out / "pack.json").write_text(json.dumps(meta, indent=1))
    if a.site:
        print(f"site.tar.xz: {write_site(out / 'site.tar.xz')} files")
    total = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"pack {out}: {len(imgs)} validation tiles, {total / 1e6:.1f} MB in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
