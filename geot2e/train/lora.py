"""LoRA fine-tuning of the denoiser with peft, to adapt a model to a new sensor or region.

Low-rank adapters are injected into the UNet's attention projections; every other weight
is frozen, so :func:`~geot2e.train.train_denoiser` with ``components=("unet",)`` trains the
adapters only (:func:`train_lora` does exactly that). The adapter is saved as
``adapter_model.safetensors`` + ``adapter_config.json`` (peft's layout) + ``geot2e_lora.json``
(base model id and checkpoint hash): 0.7 MB for the default model at rank 8.
:func:`merge_lora` bakes it into the base weights, after which the model saves as a normal
checkpoint.

>>> model = geot2e.models.from_pretrained("geot2e/weights/default")     # doctest: +SKIP
>>> add_lora(model, rank=8)                                            # doctest: +SKIP
>>> train_lora(model, dataset, StageConfig(steps=300), "runs/lora")    # doctest: +SKIP
>>> merge_lora(model).save_pretrained("runs/lora/merged")              # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ParameterError
from ..models.adapter import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, DEFAULT_TARGETS, add_lora, has_lora, load_lora,
                      lora_parameters, merge_lora, save_lora)

__all__ = ["add_lora", "has_lora", "lora_parameters", "save_lora", "load_lora", "merge_lora", "train_lora", "export_adapter",
           "DEFAULT_TARGETS", "ADAPTER_WEIGHTS", "ADAPTER_CONFIG"]


def train_lora(model, dataset, cfg, out_dir: str | os.PathLike, *, resume: bool = True, progress: bool = True,
               stage: str = "lora") -> list:
    """Train the adapter of ``model`` (see :func:`add_lora`) with the denoiser loss and save it.

    Runs :func:`~geot2e.train.train_denoiser` on the UNet's adapter parameters only
    (dynamic condition dropout, EMA of the adapter, resume from ``out_dir/<stage>``) and
    writes the adapter to ``out_dir/<stage>/adapter``. Returns the loss log.
    """
    from .loop import train_denoiser

    if not has_lora(model):
        raise ParameterError("train_lora needs a model with an adapter; call add_lora(model) first.")
    log = train_denoiser(model, dataset, cfg, out_dir, resume=resume, progress=progress, components=("unet",),
                         stage=stage)
    from .parallel import is_main

    if is_main():
        save_lora(model, Path(out_dir) / stage / "adapter")
    return log


def export_adapter(adapter: str | os.PathLike, model_folder: str | os.PathLike, subdir: str) -> Path:
    """Copy an adapter folder (:func:`save_lora`'s) into ``model_folder/subdir`` (replacing one
    there; weights as float16, which halves what a clone carries; loading casts back),
    recording the checkpoint hash of the model it belongs to."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from ..models.adapter import ADAPTER_WEIGHTS, GEOT2E_META
    from ..models.checkpoint import checkpoint_hash

    src, parent = Path(adapter), Path(model_folder)
    dst = parent / subdir
    from .._fs import atomic_folder

    with atomic_folder(dst) as tmp:
        if dst.is_dir():                  # what lives beside the adapter (a modality's detail/) stays
            for sub in dst.iterdir():
                if sub.is_dir():
                    shutil.copytree(sub, tmp / sub.name)
        for f in src.iterdir():
            if f.name == ADAPTER_WEIGHTS:
                with safe_open(str(f), framework="pt") as fh:
                    md = fh.metadata()
                save_file({k: v.half() for k, v in load_file(str(f)).items()}, str(tmp / f.name), metadata=md)
            else:
                shutil.copyfile(f, tmp / f.name)
            os.chmod(tmp / f.name, 0o644)
        meta = json.loads((tmp / GEOT2E_META).read_text())
        meta["base_checkpoint_hash"] = checkpoint_hash(parent)
        (tmp / GEOT2E_META).write_text(json.dumps(meta, indent=2))
    return dst
