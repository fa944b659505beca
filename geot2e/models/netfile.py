"""Small networks kept beside a model: one folder each, the weights as safetensors and what
they were trained with (and their architecture) as JSON. The dehazing network
(:mod:`geot2e.models.haze`) and the super-resolution network (:mod:`geot2e.models.sr`) are
written and read here, never unpickled."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .._fs import atomic_folder

__all__ = ["save_net", "read_net"]


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


def read_net(folder: str | Path, *, weights: str, meta_name: str) -> tuple[dict, dict]:
    """``(state dict in float32, meta)`` of a network written by :func:`save_net`."""
    from safetensors.torch import load_file

    base = Path(folder)
    meta = json.loads((base / meta_name).read_text())
    return {k: v.float() for k, v in load_file(str(base / weights)).items()}, meta
