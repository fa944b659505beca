"""Text side of official Text2Earth folders: the CLIP text tower and the ``tokenizer/`` folder.

The text tower is read from ``text_encoder/*.safetensors`` in OpenCLIP naming
(``token_embedding.weight``, ``transformer.resblocks.N...``, optionally under ``text.``) or
in Hugging Face ``CLIPTextModel`` naming (``text_model.*``, as diffusers pipelines ship it);
the latter is converted to OpenCLIP's tower on load (no ``transformers`` needed). Its token
features (after the final layer norm) are what the official pipelines take as
``text_encoder(ids)[0]``.

Tokens come from OpenCLIP's BPE tokenizer. A ``tokenizer/`` folder (``vocab.json``,
``merges.txt``, ``special_tokens_map.json``, ``tokenizer_config.json`` or ``tokenizer.json``)
is checked against it: the vocabulary, merges, start/end tokens and context length must be
OpenCLIP's (otherwise :class:`CheckpointError`); the padding token may differ (Stable
Diffusion 2 folders pad with ``"!"`` = id 0 like OpenCLIP, version-1 folders with
``<|endoftext|>`` = 49407) and is adopted, because with cross-attention over all token
positions the padding changes the model's input. Special token strings in a prompt (the
start/end tokens, the pad token) are matched as whole tokens, as transformers'
``CLIPTokenizer`` matches them (checked against transformers 5.24): with a ``"!"`` pad token
every ``"!"`` in a prompt becomes id 0, where plain OpenCLIP would give ``"!</w>"``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import CheckpointError
from .config import TextConfig
from .text import TextEncoder

__all__ = ["OfficialTextEncoder", "load_text_encoder", "read_tokenizer_folder", "hf_clip_to_open_clip"]

# keys of a CLIP checkpoint that the text tower does not use (tokens only)
_TEXT_IGNORED = re.compile(r"^(visual\.|logit_scale|logit_bias|text_projection|attn_mask|"
                           r"(text_model\.)?embeddings\.position_ids)")
_HF_SPECIAL = {"<|startoftext|>": "<start_of_text>", "<|endoftext|>": "<end_of_text>"}


class OfficialTextEncoder(TextEncoder):
    """:class:`TextEncoder` that tokenizes as the folder's ``CLIPTokenizer`` does.

    ``pad_id``: the padding token id (0 = OpenCLIP's). ``special_tokens``: token strings
    (``"<|startoftext|>"``, ``"<|endoftext|>"``, the pad token, ...) that transformers' CLIP
    tokenizer matches in the prompt text itself and maps to their ids; with a ``"!"`` pad
    token this turns every ``"!"`` in a prompt into the padding id, and geot2e does the same.
    """

    pad_id: int = 0
    special_tokens: dict[str, int] = {}

    def _encode(self, text: str) -> list[int]:
        if not self.special_tokens:
            return self.tokenizer.encode(text)
        pat = "|".join(re.escape(t) for t in sorted(self.special_tokens, key=len, reverse=True))
        ids: list[int] = []
        pos = 0
        for m in re.finditer(pat, text):
            ids += self.tokenizer.encode(text[pos:m.start()]) + [self.special_tokens[m.group(0)]]
            pos = m.end()
        return ids + self.tokenizer.encode(text[pos:])

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        if self.pad_id == 0 and not self.special_tokens:
            return super().tokenize(prompts)
        import warnings

        from ..errors import PromptTruncatedWarning

        ctx, sot, eot = self.context_length, self.tokenizer.sot_token_id, self.tokenizer.eot_token_id
        rows = []
        for p in prompts:
            ids = [sot] + self._encode(p) + [eot]
            if len(ids) > ctx:
                warnings.warn(f"prompt of {len(ids)} tokens truncated to the text encoder's context of {ctx} "
                              f"tokens: {p[:60]!r}...", PromptTruncatedWarning, stacklevel=3)
                ids = ids[:ctx]
                ids[-1] = eot
            rows.append(ids + [self.pad_id] * (ctx - len(ids)))
        return torch.tensor(rows, dtype=torch.long)


# ----------------------------------------------------------------------------- tokenizer folder
def _token_str(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, dict) and isinstance(v.get("content"), str):
        return v["content"]
    return None


def _json(f: Path) -> dict[str, Any]:
    try:
        d = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f}: not valid JSON ({e}).") from e
    if not isinstance(d, dict):
        raise CheckpointError(f"{f}: expected a JSON object.")
    return d


def read_tokenizer_folder(d: Path, *, context_length: int) -> tuple[int, dict[str, int]]:
    """Check ``tokenizer/`` against OpenCLIP's tokenizer; return the padding token id and the
    special token strings (with their ids) that the folder's tokenizer matches in prompts.

    Raises
    ------
    CheckpointError
        A vocabulary, merges, start/end token or context length that OpenCLIP's tokenizer
        cannot reproduce.
    """
    from open_clip.tokenizer import SimpleTokenizer

    ref = SimpleTokenizer(context_length=context_length)
    special: dict[str, Any] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):  # the latter wins, as in transformers
        if (d / name).is_file():
            special.update({k: v for k, v in _json(d / name).items()})
    vocab = merges = None
    if (d / "vocab.json").is_file():
        vocab = _json(d / "vocab.json")
    if (d / "merges.txt").is_file():
        merges = (d / "merges.txt").read_text(encoding="utf-8").split("\n")
    if (vocab is None or merges is None) and (d / "tokenizer.json").is_file():
        model = _json(d / "tokenizer.json").get("model", {})
        if vocab is None and isinstance(model.get("vocab"), dict):
            vocab = model["vocab"]
        if merges is None and isinstance(model.get("merges"), list):
            merges = ["#version"] + [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    where = d
    if vocab is not None:
        own = {_HF_SPECIAL.get(k, k): v for k, v in vocab.items()}
        if own != ref.encoder:
            diff = sorted(k for k in set(own) ^ set(ref.encoder))[:3] or \
                sorted(k for k in own if own[k] != ref.encoder.get(k))[:3]
            raise CheckpointError(f"{where / 'vocab.json'}: the vocabulary is not OpenCLIP's CLIP BPE vocabulary "
                                  f"({len(vocab)} entries, e.g. {diff} differ); geot2e tokenizes with OpenCLIP "
                                  "only, so this text encoder cannot be used.")
    if merges is not None:
        own_merges = [tuple(m.split()) for m in merges[1:49152 - 256 - 2 + 1] if m.strip()]
        ranks = sorted(ref.bpe_ranks, key=ref.bpe_ranks.get)
        if own_merges != ranks:
            raise CheckpointError(f"{where / 'merges.txt'}: the BPE merges are not OpenCLIP's; geot2e tokenizes "
                                  "with OpenCLIP only, so this text encoder cannot be used.")
    for key, want in (("bos_token", "<|startoftext|>"), ("eos_token", "<|endoftext|>")):
        got = _token_str(special.get(key))
        if got is not None and got != want:
            raise CheckpointError(f"{where}: {key} is {got!r}; OpenCLIP's tokenizer uses {want!r}.")
    mml = special.get("model_max_length")
    if isinstance(mml, (int, float)) and not isinstance(mml, bool) and mml < 1e6 and int(mml) != context_length:
        raise CheckpointError(f"{where / 'tokenizer_config.json'}: model_max_length={mml} but the text encoder "
                              f"has {context_length} positions; the official pipelines pad to model_max_length, "
                              "geot2e to the text encoder's positions. Set it to "
                              f"{context_length} if the folder is otherwise right.")
    pad = _token_str(special.get("pad_token")) or "<|endoftext|>"  # CLIPTokenizer's default
    table = vocab if vocab is not None else {k: ref.encoder[v] for k, v in _HF_SPECIAL.items()} | ref.encoder
    if pad not in table:
        raise CheckpointError(f"{where}: pad_token {pad!r} is not in the vocabulary.")
    strings = [_token_str(special.get(k)) for k in ("bos_token", "eos_token", "unk_token", "pad_token")]
    extra = special.get("additional_special_tokens") or []
    strings += [_token_str(t) for t in extra] if isinstance(extra, list) else []
    specials = {t: int(table[t]) for t in ["<|startoftext|>", "<|endoftext|>", *strings] if t and t in table}
    return int(table[pad]), specials


# ----------------------------------------------------------------------------- text tower
def hf_clip_to_open_clip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``CLIPTextModel`` keys → OpenCLIP ``TextTransformer`` keys."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
    # older transformers save under text_model., newer ones without the prefix
    pre = "text_model." if any(k.startswith("text_model.") for k in sd) else ""
    simple = {"embeddings.token_embedding.weight": "token_embedding.weight",
              "embeddings.position_embedding.weight": "positional_embedding",
              "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}
    layer_map = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
                 "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for k, v in sd.items():
        if not k.startswith(pre):
            out[k] = v  # left for the strict check to report
            continue
        kk = k[len(pre):]
        if kk in simple:
            out[simple[kk]] = v
            continue
        m = re.match(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", kk)
        if m is None:
            out[k] = v
            continue
        i, mod, kind = int(m.group(1)), m.group(2), m.group(3)
        if mod in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            qkv.setdefault(i, {}).setdefault(kind, {})[mod[-6]] = v
        elif mod in layer_map:
            out[f"transformer.resblocks.{i}.{layer_map[mod]}.{kind}"] = v
        else:
            out[k] = v
    for i, kinds in qkv.items():
        for kind, parts in kinds.items():
            if set(parts) != {"q", "k", "v"}:
                raise CheckpointError(f"text encoder layer {i}: incomplete q/k/v {kind} weights")
            out[f"transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def load_text_encoder(d: Path, files: list[Path], *, expect_width: int | None,
                      tokenizer_dir: Path | None = None) -> OfficialTextEncoder:
    """The text tower of ``text_encoder/`` (safetensors ``files``), with the padding of
    ``tokenizer_dir`` when that folder exists."""
    from safetensors.torch import load_file

    cfg = _json(d / "config.json") if (d / "config.json").is_file() else {}
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(str(f)))
    where = files[0] if len(files) == 1 else d
    if any(k.endswith("embeddings.token_embedding.weight") for k in sd):
        sd = hf_clip_to_open_clip(sd)
    elif any(k.startswith("text.") for k in sd):  # OpenCLIP CustomTextCLIP state dict
        sd = {k[len("text."):]: v for k, v in sd.items() if k.startswith("text.")}
    sd = {k: v for k, v in sd.items() if not _TEXT_IGNORED.match(k)}
    if "token_embedding.weight" not in sd or "positional_embedding" not in sd:
        raise CheckpointError(f"{where}: not a CLIP text tower (no token_embedding.weight / positional_embedding; "
                              f"keys start {sorted(sd)[:3]}).")
    vocab, width = sd["token_embedding.weight"].shape
    ctx = sd["positional_embedding"].shape[0]
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))}
    layers = max(blocks) + 1 if blocks else 0
    text_cfg = cfg.get("text_cfg", cfg) if isinstance(cfg.get("text_cfg", cfg), dict) else cfg
    heads = text_cfg.get("heads") or text_cfg.get("num_attention_heads") or max(width // 64, 1)
    quick = bool(cfg.get("quick_gelu", False)) or text_cfg.get("hidden_act") == "quick_gelu"
    if not (isinstance(heads, int) and heads > 0 and width % heads == 0):
        raise CheckpointError(f"{d / 'config.json'}: {heads!r} attention heads do not divide width {width}.")
    if expect_width is not None and width != expect_width:
        raise CheckpointError(f"{where}: text width {width} does not match the UNet's cross_attention_dim "
                              f"{expect_width}; text_encoder/ and unet/ come from different models.")
    mlp_ratio = sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width if layers else 4.0
    tc = TextConfig(width=int(width), layers=int(layers), heads=int(heads), context_length=int(ctx),
                    vocab_size=int(vocab))
    enc = OfficialTextEncoder(tc)
    if quick or mlp_ratio != 4.0:
        from open_clip.model import CLIPTextCfg, _build_text_tower

        enc.tower = _build_text_tower(tc.width, CLIPTextCfg(
            context_length=tc.context_length, vocab_size=tc.vocab_size, width=tc.width, heads=tc.heads,
            layers=tc.layers, mlp_ratio=mlp_ratio, output_tokens=True, proj_type="none"), quick_gelu=quick)
    try:
        enc.tower.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{where}: text-tower weights do not fit a CLIP text transformer of width {width}, "
                              f"{layers} layers, {heads} heads ({e}).") from e
    if tokenizer_dir is not None and tokenizer_dir.is_dir():
        enc.pad_id, enc.special_tokens = read_tokenizer_folder(tokenizer_dir, context_length=int(ctx))
    return enc
