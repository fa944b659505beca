"""OpenCLIP text encoder: tokenizer + text transformer, token features for cross-attention."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..errors import CheckpointError, PromptTruncatedWarning
from .config import TextConfig

__all__ = ["TextEncoder"]

_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}


def _tokenizer(context_length: int):
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


class TextEncoder(nn.Module):
    """Wraps an OpenCLIP ``TextTransformer``; returns per-token features (B, L, width).

    ``TextConfig.arch``/``pretrained`` build the text tower of a named OpenCLIP architecture
    (e.g. ``ViT-H-14``) and load its weights from a local ``.safetensors`` file (never a pickle).
    """

    def __init__(self, cfg: TextConfig):
        super().__init__()
        from open_clip.model import CLIPTextCfg, _build_text_tower

        self.cfg = cfg
        if cfg.arch:
            import open_clip

            mcfg = open_clip.get_model_config(cfg.arch)
            if mcfg is None:
                raise CheckpointError(f"unknown OpenCLIP architecture {cfg.arch!r}; see open_clip.list_models().")
            tcfg = dict(mcfg["text_cfg"])
            tcfg["output_tokens"] = True
            embed_dim = mcfg["embed_dim"]
            self.tower = _build_text_tower(embed_dim, CLIPTextCfg(**{k: v for k, v in tcfg.items()
                                                                     if k in CLIPTextCfg.__dataclass_fields__}),
                                           quick_gelu=mcfg.get("quick_gelu", False))
            self.context_length = tcfg.get("context_length", 77)
            self.width = tcfg.get("width", 512)
            if cfg.pretrained:
                self._load_pretrained(Path(cfg.pretrained))
        else:
            tcfg = CLIPTextCfg(context_length=cfg.context_length, vocab_size=cfg.vocab_size, width=cfg.width,
                               heads=cfg.heads, layers=cfg.layers, output_tokens=True, proj_type="none")
            self.tower = _build_text_tower(cfg.width, tcfg)
            self.context_length = cfg.context_length
            self.width = cfg.width
        self.tokenizer = _tokenizer(self.context_length)

    # -------------------------------------------------------------- weights from OpenCLIP
    def _load_pretrained(self, path: Path) -> None:
        if path.suffix.lower() in _PICKLE_SUFFIXES:
            raise CheckpointError(f"{path}: pickle checkpoints are never loaded (they can run code). "
                                  "Convert it once to .safetensors (safetensors.torch.save_file) and name that file.")
        if not path.is_file():
            raise CheckpointError(f"{path}: OpenCLIP text weights not found; give the path of a local .safetensors file.")
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - re-raised typed
            raise CheckpointError(f"{path}: not a readable safetensors file ({e}).") from e
        own = self.tower.state_dict()
        picked = {}
        for k, v in sd.items():
            kk = k[len("text."):] if k.startswith("text.") else k
            if kk in own:
                picked[kk] = v
        missing = [k for k in own if k not in picked]
        if missing:
            raise CheckpointError(f"{path}: text-tower weights missing for {missing[:5]}... "
                                  f"(is this the {self.cfg.arch} checkpoint?)")
        try:
            self.tower.load_state_dict(picked, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: weights do not match {self.cfg.arch}: {e}") from e

    # ------------------------------------------------------------------------ encoding
    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        for p in prompts:
            n = len(self.tokenizer.encode(p)) + 2
            if n > self.context_length:
                warnings.warn(f"prompt of {n} tokens truncated to the text encoder's context of "
                              f"{self.context_length} tokens: {p[:60]!r}...", PromptTruncatedWarning, stacklevel=3)
        return self.tokenizer(list(prompts), context_length=self.context_length)

    def forward(self, prompts: Sequence[str] | torch.Tensor) -> torch.Tensor:
        dev = next(self.tower.parameters()).device
        tokens = prompts if isinstance(prompts, torch.Tensor) else self.tokenize(prompts)
        _, feats = self.tower(tokens.to(dev))
        return feats
