"""LoRA adapters on a model's UNet with peft: add, save, load, merge and unload them.

The model side of LoRA (peft, no training loop): :mod:`geot2e.train.lora` trains adapters and
re-exports these names, :mod:`geot2e.train.distill` trains the few-step student as one, and
:func:`geot2e.models.load_model` (``few_step=True``) merges a model's student at load time.
Adapters are saved in peft's layout plus a ``geot2e_lora.json`` naming the base model (its id
and checkpoint hash).
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Sequence

import torch

from .._fs import atomic_folder
from ..errors import CheckpointError, Geot2eWarning, ParameterError

__all__ = ["add_lora", "has_lora", "annotate_lora", "lora_parameters", "save_lora", "load_lora", "merge_lora", "unload_lora",
           "DEFAULT_TARGETS", "ADAPTER_DIR",
           "ADAPTER_WEIGHTS", "ADAPTER_CONFIG"]

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
GEOT2E_META = "geot2e_lora.json"
#: the sub-folder of a model folder that holds its few-step student (an adapter)
ADAPTER_DIR = "few_step"
_ATTR = "_geot2e_lora"


def has_lora(model) -> bool:
    """True when ``model`` carries an (unmerged) LoRA adapter added by :func:`add_lora`."""
    return bool(getattr(model, _ATTR, None))


def add_lora(model, rank: int = 8, alpha: float = 8, targets: Sequence[str] = DEFAULT_TARGETS, *,
             dropout: float = 0.0, init: str | bool = True):
    """Inject LoRA adapters into ``model.unet`` and freeze every other weight (in place).

    Parameters
    ----------
    model : :class:`~geot2e.models.Text2Earth`.
    rank, alpha : LoRA rank r and scaling α (the update is ``(α / r) · B A``).
    targets : names of the UNet linear layers to adapt (peft ``target_modules``); the
        default covers the query, key, value and output projections of all attention layers.
    dropout : LoRA dropout.
    init : peft ``init_lora_weights`` (True: B = 0, so the adapted model starts equal to
        the base; ``"gaussian"`` also starts equal).

    Returns
    -------
    The same model, with only the adapter parameters trainable.
    """
    from peft import LoraConfig

    if has_lora(model):
        raise ParameterError("the model already carries a LoRA adapter; merge_lora() it or start from the base model.")
    if int(rank) < 1:
        raise ParameterError(f"LoRA rank must be at least 1, got {rank!r}")
    targets = list(targets)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.unet.named_modules()} | {n for n, _ in model.unet.named_modules()}
    if not any(t in names or any(n.endswith("." + t) for n in names) for t in targets):
        raise ParameterError(f"none of the LoRA targets {targets} names a layer of the UNet "
                             "(try the default: to_q, to_k, to_v, to_out.0).")
    cfg = LoraConfig(r=int(rank), lora_alpha=float(alpha), target_modules=targets, lora_dropout=float(dropout),
                     init_lora_weights=init)
    model.requires_grad_(False)
    model.unet.add_adapter(cfg)
    n = 0
    for name, p in model.unet.named_parameters():
        if "lora_" in name:
            p.requires_grad_(True)
            n += p.numel()
    setattr(model, _ATTR, {"rank": int(rank), "alpha": float(alpha), "targets": targets, "dropout": float(dropout),
                           "base_model_id": model.config.model_id,
                           "base_checkpoint_hash": getattr(model, "checkpoint_hash", "unsaved"),
                           "trainable_parameters": n})
    return model


def annotate_lora(model, **fields) -> None:
    """Add ``fields`` to the adapter's metadata (written to ``geot2e_lora.json`` by
    :func:`save_lora`), e.g. what kind of adapter it is."""
    if not has_lora(model):
        raise ParameterError("the model carries no LoRA adapter; call add_lora() first.")
    getattr(model, _ATTR).update(fields)


def lora_parameters(model) -> dict[str, torch.nn.Parameter]:
    """The adapter parameters (names as in ``model.unet``)."""
    return {n: p for n, p in model.unet.named_parameters() if "lora_" in n}


def save_lora(model, path: str | os.PathLike) -> Path:
    """Write the adapter to the folder ``path``: ``adapter_model.safetensors`` (peft keys),
    ``adapter_config.json`` (peft's LoraConfig) and ``geot2e_lora.json`` (base model)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    if not has_lora(model):
        raise ParameterError("the model carries no LoRA adapter; call add_lora() first.")
    dst = Path(path)
    with atomic_folder(dst) as tmp:
        sd = get_peft_model_state_dict(model.unet)
        sd = {k: v.detach().float().contiguous().cpu() for k, v in sd.items()}
        meta = dict(getattr(model, _ATTR))
        save_file(sd, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt", "component": "unet",
                                                             "base_model_id": str(meta["base_model_id"])})
        model.unet.peft_config["default"].save_pretrained(str(tmp))
        (tmp / GEOT2E_META).write_text(json.dumps(meta, indent=2))
    return dst


def load_lora(model, path: str | os.PathLike):
    """Add the adapter saved in ``path`` to ``model`` (in place; safetensors only, never pickles)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    p = Path(path)
    if p.is_dir() and not (p / ADAPTER_WEIGHTS).is_file():
        if any(q.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl") for q in p.iterdir()):
            raise CheckpointError(f"{p}: only pickle adapter weights found; they are never loaded. "
                                  "Save adapters with geot2e.train.lora.save_lora (safetensors).")
    if not (p / ADAPTER_WEIGHTS).is_file() or not (p / ADAPTER_CONFIG).is_file():
        raise CheckpointError(f"{p}: not a LoRA adapter folder ({ADAPTER_WEIGHTS} + {ADAPTER_CONFIG} expected).")
    try:
        cfg = json.loads((p / ADAPTER_CONFIG).read_text())
        meta = json.loads((p / GEOT2E_META).read_text()) if (p / GEOT2E_META).is_file() else {}
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p}: adapter config is not valid JSON ({e}).") from e
    base = meta.get("base_checkpoint_hash")
    own = getattr(model, "checkpoint_hash", "unsaved")
    if base not in (None, "unsaved") and own not in (None, "unsaved") and base != own:
        warnings.warn(f"the LoRA adapter in {p} was trained on checkpoint {base}, this model is {own}; "
                      "outputs may be off.", Geot2eWarning, stacklevel=2)
    add_lora(model, rank=int(cfg["r"]), alpha=float(cfg["lora_alpha"]),
             targets=sorted(cfg["target_modules"]) if not isinstance(cfg["target_modules"], str)
             else cfg["target_modules"], dropout=float(cfg.get("lora_dropout", 0.0)))
    sd = load_file(str(p / ADAPTER_WEIGHTS))
    res = set_peft_model_state_dict(model.unet, sd)
    unexpected = list(getattr(res, "unexpected_keys", []) or [])
    if unexpected:
        raise CheckpointError(f"{p}: adapter weights do not match this UNet (unexpected: {unexpected[:3]}).")
    if meta:
        getattr(model, _ATTR).update({k: meta[k] for k in ("base_model_id", "base_checkpoint_hash") if k in meta})
    return model


def unload_lora(model):
    """Remove the adapter without merging it (in place): the model computes what the base did."""
    if not has_lora(model):
        raise ParameterError("the model carries no LoRA adapter to unload.")
    _strip_tuners(model, merge=False)
    setattr(model, _ATTR, None)
    return model


@torch.no_grad()
def _strip_tuners(model, *, merge: bool) -> None:
    """Replace every peft tuner layer of the UNet by its base layer (merged into it first when
    ``merge``) and forget the adapter's config."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    unet = model.unet
    tuners = [(name, m) for name, m in unet.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, m in tuners:
        if merge:
            m.merge()
        parent_name, _, child = name.rpartition(".")
        parent = unet.get_submodule(parent_name) if parent_name else unet
        setattr(parent, child, m.get_base_layer())
    if hasattr(unet, "peft_config"):
        delattr(unet, "peft_config")
    if hasattr(unet, "_hf_peft_config_loaded"):
        unet._hf_peft_config_loaded = False


@torch.no_grad()
def merge_lora(model):
    """Bake the adapter into the UNet's weights and remove the LoRA layers (in place).

    The merged model computes the same outputs as the adapted one (up to float rounding)
    and saves as a normal checkpoint (:func:`~geot2e.models.save_pretrained`). All weights
    stay frozen (``requires_grad=False``).
    """
    if not has_lora(model):
        raise ParameterError("the model carries no LoRA adapter to merge.")
    _strip_tuners(model, merge=True)
    meta = getattr(model, _ATTR)
    model.config.model_id = f"{meta['base_model_id']}+lora"
    setattr(model, _ATTR, None)
    model.requires_grad_(False)
    return model

