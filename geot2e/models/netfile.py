"""Small networks kept beside a model: one folder each, the weights as safetensors and what
they were trained with (and their architecture) as JSON. The dehazing network
(:mod:`geot2e.models.haze`) and the super-resolution network (:mod:`geot2e.models.sr`) are
written and read here, never unpickled."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .._fs import atomic_folder

__all__ = ["save_net", "read_net", "attach_net", "has_net", "net_info"]


def save_net(net: torch.nn.Module, folder: str | Path, *, weights: str, meta_name: str, meta: dict,
             dtype: torch.dtype | None = None) -> Path:
    """Write ``net``'s state (``weights``, safetensors, in ``dtype`` when given) and ``meta``
    (``meta_name``, JSON) to ``folder``, atomically: a reader sees the old folder or the new one."""
    from safetensors.torch import save_file

    dst = Path(folder)
    with atomic_folder(dst) as tmp:
        state = {k: (v.to(dtype) if dtype is not None else v).detach().cpu().contiguous()
                 for k, v in net.state_dict().items()}
        save_file(state, str(tmp / weights))
        (tmp / meta_name).write_text(json.dumps(meta, indent=2))
    return dst


def has_net(folder: str | Path, sub: str, meta_name: str) -> bool:
    """True when the model folder carries the network written to ``folder/sub`` by :func:`save_net`."""
    return (Path(folder) / sub / meta_name).is_file()


def net_info(folder: str | Path, sub: str, meta_name: str) -> dict:
    """The meta :func:`save_net` wrote for the network in ``folder/sub`` ({} when there is none)."""
    f = Path(folder) / sub / meta_name
    return json.loads(f.read_text()) if f.is_file() else {}


def read_net(folder: str | Path, *, weights: str, meta_name: str) -> tuple[dict, dict]:
    """``(state dict in float32, meta)`` of a network written by :func:`save_net`."""
    from safetensors.torch import load_file

    base = Path(folder)
    meta = json.loads((base / meta_name).read_text())
    return {k: v.float() for k, v in load_file(str(base / weights)).items()}, meta


def attach_net(model, folder: str | Path | None, *, sub: str, weights: str, meta_name: str, build, attr: str,
               what: str, section: str):
    """Attach the network of ``folder`` (default: ``model.source/<sub>``), built by
    ``build(meta)`` and loaded in float32 and eval mode, to ``model`` as ``model.<attr>``;
    return the model. A :class:`~geot2e.errors.CheckpointError` names ``what`` is missing and
    the training config ``section`` that trains it."""
    from ..errors import CheckpointError

    base = Path(folder) if folder is not None else (Path(model.source) / sub if model.source else None)
    if base is None or not (base / meta_name).is_file():
        raise CheckpointError(f"no {what} in {base}; train one with the {section} stage of `geot2e train` "
                              f"(configs/default.yaml, section {section}:).")
    state, meta = read_net(base, weights=weights, meta_name=meta_name)
    net = build(meta)
    net.load_state_dict(state)
    setattr(model, attr, net.to(getattr(model, "device", "cpu")).eval())
    getattr(model, attr).requires_grad_(False)
    return model
