"""Safe checkpoints: a folder with ``config.json`` and one ``*.safetensors`` per component.

A component may also be stored in shards (``unet-00001-of-00003.safetensors`` ...), written
with ``save_pretrained(..., max_shard_mb=...)`` so that each file stays under a size limit
(a transfer limit, a repository's file limit); loading merges them.

Never unpickles: ``.bin/.pt/.pth/.ckpt/.pkl`` files are refused with :class:`CheckpointError`.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import torch

from .._fs import atomic_folder
from ..errors import CheckpointError, ParameterError
from .config import Text2EarthConfig
from .text2earth import Text2Earth

__all__ = ["save_pretrained", "from_pretrained", "load_model", "resolve_device", "checkpoint_hash",
           "available_modalities", "resolve_modality", "DEFAULT_WEIGHTS", "COMPONENTS"]

COMPONENTS = ("vae", "unet", "text_encoder", "resolution")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "default"


def checkpoint_hash(path: str | os.PathLike) -> str:
    """sha256 over config.json and the component files (names and bytes), first 16 hex digits.

    The JSON header of each safetensors file is hashed in canonical form (sorted keys): the
    writer stores its ``__metadata__`` map in arbitrary order, so the same weights saved twice
    would otherwise hash differently.
    """
    p = Path(path)
    h = hashlib.sha256()
    names = ["config.json"]
    for c in COMPONENTS:
        names += [f.name for f in component_files(p, c)] or [f"{c}.safetensors"]
    for name in names:
        f = p / name
        h.update(name.encode())
        with open(f, "rb") as fh:
            if name.endswith(".safetensors"):
                head = fh.read(8)
                n = int.from_bytes(head, "little") if len(head) == 8 else 0
                try:
                    header = json.loads(fh.read(n))
                    h.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
                except (json.JSONDecodeError, UnicodeDecodeError, OverflowError, MemoryError):
                    fh.seek(0)
            for blk in iter(lambda: fh.read(1 << 20), b""):
                h.update(blk)
    return h.hexdigest()[:16]


def component_files(path: Path, comp: str) -> list[Path]:
    """The files of one component: ``[comp.safetensors]``, or its shards in order ([] if none)."""
    single = path / f"{comp}.safetensors"
    if single.is_file():
        return [single]
    shards = sorted(path.glob(f"{comp}-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].safetensors"))
    if not shards:
        return []
    n = int(shards[0].name.rsplit("-of-", 1)[1].split(".")[0])
    want = [path / f"{comp}-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    if shards != want:
        missing = sorted({w.name for w in want} - {q.name for q in shards})
        raise CheckpointError(f"{path}: the shards of {comp} are incomplete (missing {missing[:3]}); copy the "
                              "whole folder again.")
    return want


def _shards(sd: dict, max_bytes: float) -> list[dict]:
    groups, cur, size = [], {}, 0
    for k, v in sd.items():
        n = v.numel() * v.element_size()
        if cur and size + n > max_bytes:
            groups.append(cur)
            cur, size = {}, 0
        cur[k] = v
        size += n
    return groups + [cur] if cur else groups


def save_pretrained(model: Text2Earth, path: str | os.PathLike, *, dtype: torch.dtype | None = None,
                    max_shard_mb: float | None = None) -> Path:
    """Write ``config.json`` and ``{vae,unet,text_encoder,resolution}.safetensors`` to ``path``.

    ``dtype=torch.float16`` halves the size (weights are cast back to float32 on load).
    ``max_shard_mb`` splits a component larger than that into shards
    (``unet-00001-of-00003.safetensors``, ...), each under the limit.
    The folder is written to a temporary sibling and renamed, so a crash leaves no half checkpoint.
    """
    from safetensors.torch import save_file

    dst = Path(path)
    with atomic_folder(dst) as tmp:
        (tmp / "config.json").write_text(model.config.to_json())
        for comp in COMPONENTS:
            sd = getattr(model, comp).state_dict()
            sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
                  for k, v in sd.items()}
            parts = _shards(sd, max_shard_mb * 1e6 * 0.98) if max_shard_mb else [sd]
            for i, part in enumerate(parts, start=1):
                name = f"{comp}.safetensors" if len(parts) == 1 else f"{comp}-{i:05d}-of-{len(parts):05d}.safetensors"
                save_file(part, str(tmp / name), metadata={"format": "pt", "component": comp})
                os.chmod(tmp / name, 0o644)
    return dst


def _refuse_pickles(p: Path) -> None:
    if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{p}: pickle checkpoints are never loaded (unpickling can run arbitrary code). "
                              "Convert the weights to safetensors and a folder with config.json.")
    if p.is_dir():
        pickles = sorted(q.name for q in p.iterdir() if q.suffix.lower() in PICKLE_SUFFIXES)
        have_st = any(q.suffix == ".safetensors" for q in p.rglob("*.safetensors"))
        if pickles and not have_st:
            raise CheckpointError(f"{p}: only pickle weights found ({', '.join(pickles)}); they are never loaded "
                                  "(unpickling can run arbitrary code). Provide safetensors files.")


def _value_fits(value, hint) -> bool:
    """Whether a JSON value has the plain type a config field declares (no objects, no code)."""
    import math
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        return isinstance(value, list) and all(_value_fits(v, args[0]) for v in value)
    if origin in (typing.Union, types.UnionType):
        return any(_value_fits(value, a) for a in args)
    return False


def _check_config_values(d, cls, source: str, prefix: str = "") -> None:
    """Check each known key of a config.json section against its dataclass field type
    (unknown keys are reported by :meth:`Text2EarthConfig.from_dict`)."""
    import dataclasses
    import typing

    if not isinstance(d, dict):
        return
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        hint, value = hints[f.name], d[f.name]
        if dataclasses.is_dataclass(hint):
            if isinstance(value, dict):
                _check_config_values(value, hint, source, f"{prefix}{f.name}.")
            continue  # not a dict: from_dict reports the section
        if not _value_fits(value, hint):
            want = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            raise CheckpointError(f"{source}: {prefix}{f.name} must be {want}, got {value!r}; config values are "
                                  "plain numbers, strings and lists (never objects or class names). Re-save the "
                                  "checkpoint with geot2e.models.save_pretrained.")


def from_pretrained(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> Text2Earth:
    """Load a model folder written by :func:`save_pretrained` (or an official Text2Earth folder)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    _refuse_pickles(p)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint folder. Pass a folder with config.json and *.safetensors, "
                              "or 'default' for the embedded model.")
    if not p.is_dir():
        raise CheckpointError(f"{p}: a checkpoint is a folder (config.json + *.safetensors), not a file.")
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        if (p / "unet" / "config.json").is_file():
            from .official import load_official

            return load_official(p, device=device)
        raise CheckpointError(f"{cfg_file}: missing. A geot2e checkpoint folder holds config.json and "
                              f"{', '.join(c + '.safetensors' for c in COMPONENTS)}.")
    try:
        cfg_dict = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({e}).") from e
    _check_config_values(cfg_dict, Text2EarthConfig, str(cfg_file))
    config = Text2EarthConfig.from_dict(cfg_dict, source=str(cfg_file))
    # The text tower's weights are in text_encoder.safetensors: the OpenCLIP file it was first
    # built from (config.text.pretrained, kept for provenance) is not needed to load the folder.
    build = Text2EarthConfig.from_dict(cfg_dict, source=str(cfg_file))
    build.text.pretrained = None
    try:
        model = Text2Earth(build)
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{cfg_file}: the model it describes cannot be built ({e}).") from e
    model.config = config
    for comp in COMPONENTS:
        files = component_files(p, comp)
        f = files[0] if len(files) == 1 else p / f"{comp}.safetensors"
        if not files:
            raise CheckpointError(f"{f}: missing component file; the checkpoint is incomplete.")
        sd = {}
        for part in files:
            try:
                sd.update(load_file(str(part)))
            except (SafetensorError, OSError, ValueError, RuntimeError) as e:
                raise CheckpointError(f"{part}: corrupt or unreadable safetensors file ({e}).") from e
        module = getattr(model, comp)
        own = module.state_dict()
        bad = [k for k, v in sd.items() if k not in own or tuple(own[k].shape) != tuple(v.shape)]
        missing = [k for k in own if k not in sd]
        if bad or missing:
            raise CheckpointError(f"{f}: weights do not match config.json "
                                  f"(unexpected/mis-shaped: {bad[:3]}, missing: {missing[:3]}). "
                                  "Was config.json edited or copied from another model?")
        module.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)
    model.source = str(p.resolve())
    model.checkpoint_hash = checkpoint_hash(p)
    model.eval()
    return model.to(device)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def _cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
        return "amx_bf16" in flags or "avx512_bf16" in flags
    except OSError:
        return False


_CACHE: dict[tuple[str, str, str], Text2Earth] = {}
_LOCK = threading.Lock()


def _merge_student(model: Text2Earth, path: Path) -> None:
    from .adapter import ADAPTER_DIR, ADAPTER_WEIGHTS, GEOT2E_META, load_lora, merge_lora

    folder = path / ADAPTER_DIR
    if not has_few_step(path):
        raise CheckpointError(f"{path} has no few-step student ({folder} is missing); use the full sampler "
                              "(few_step=False), or train one with the distill stage of `geot2e train`.")
    meta = json.loads((folder / GEOT2E_META).read_text())
    load_lora(model, folder)
    merge_lora(model)
    steps = int(meta.get("student_steps", 8))
    model.config.model_id = f"{meta.get('base_model_id', model.config.model_id)}+few-step"
    model.student_steps = steps
    model.sampling_defaults = {"steps": steps}
    h = hashlib.sha256((folder / ADAPTER_WEIGHTS).read_bytes()).hexdigest()[:8]
    model.checkpoint_hash = f"{model.checkpoint_hash}+{h}"   # provenance names base and student


def has_few_step(name_or_path: "str | os.PathLike" = "default") -> bool:
    """True when the model folder (or ``"default"``) carries a few-step student (``few_step/``)."""
    from .adapter import ADAPTER_DIR, ADAPTER_WEIGHTS

    path = DEFAULT_WEIGHTS if str(name_or_path) == "default" else Path(name_or_path).expanduser()
    return (path / ADAPTER_DIR / ADAPTER_WEIGHTS).is_file()


def available_modalities(name_or_path: "str | os.PathLike" = "default") -> list[str]:
    """The registered modalities (:mod:`geot2e.models.modality`) a model folder (or
    ``"default"``) generates: "rgb" and those whose adapter it carries (``modality/<name>/``)."""
    from .adapter import ADAPTER_WEIGHTS
    from .modality import MODALITIES

    path = DEFAULT_WEIGHTS if str(name_or_path) == "default" else Path(name_or_path).expanduser()
    own = {n for n, m in MODALITIES.items() if not m.composite and (not m.adapter or (path / m.folder / ADAPTER_WEIGHTS).is_file())}
    return sorted(own | {n for n, m in MODALITIES.items() if m.composite and set(m.parts) <= own})


def resolve_modality(modality: str, name_or_path: "str | os.PathLike" = "default") -> str:
    """The registered name of ``modality`` for a model folder: a registered modality, or one the
    folder carries an adapter for (a user's, registered from its metadata); else a ParameterError."""
    from .modality import MODALITIES, MODALITY_DIR, get_modality, modality_from_adapter

    if isinstance(modality, str) and modality not in MODALITIES:
        path = DEFAULT_WEIGHTS if str(name_or_path) == "default" else Path(name_or_path).expanduser()
        if modality.isidentifier() and modality_from_adapter(path / MODALITY_DIR / modality) is not None:
            return modality
    return get_modality(modality).name


def load_model(name_or_path: "str | os.PathLike | Text2Earth" = "default", *, device: str | torch.device = "auto",
               autocast: str | None = "auto", few_step: bool = False, translate: bool = False,
               modality: str | None = None, detail: bool = True) -> Text2Earth:
    """Load a Text2Earth model: ``"default"`` (embedded weights), a local folder, or pass a model through.

    Models are cached per (path, device, autocast, few_step), so dask workers load each
    checkpoint once. ``autocast="auto"`` uses bf16 autocast for the UNet on CUDA and on CPUs
    with AMX (measured ~1.9x faster here), float32 elsewhere; ``None`` forces float32.
    ``few_step=True`` loads the folder's few-step student instead (its ``few_step/`` adapter,
    trained by the distill stage of ``geot2e train``, merged into the UNet; ``model.student_steps``
    says how many steps it samples with); a :class:`CheckpointError` when the folder has none.
    ``translate=True`` attaches the folder's translation ControlNet (``translate/``, trained by
    the control stage; :func:`geot2e.translate`), a :class:`CheckpointError` when it has none,
    and its dehazing and super-resolution networks (``dehaze/``, ``super_resolution/``) where it has them.
    ``detail=True`` attaches the folder's pixel-detail network (``detail/``, trained by the
    detail stage; :mod:`geot2e.models.detail`) where it has one: one-sample RGB fills then get
    the pixel grain the decoder loses, as fine as the ground around them; ``detail=False``
    leaves the decoder's output as it is. Its weights' hash is appended to ``checkpoint_hash``.
    ``modality="nir"`` (or another name of :data:`geot2e.models.modality.MODALITIES`) merges the
    folder's adapter for that modality (``modality/<name>/``, trained by ``geot2e train`` with a
    ``modality:`` config): the model then generates that modality's bands
    (``model.config.band_names``); ``None`` or ``"rgb"`` is the base model. A composite modality
    (``"rgbn"``) is no single model: a ParameterError names its parts.
    """
    if isinstance(name_or_path, Text2Earth):
        if modality not in (None, "rgb", getattr(name_or_path, "modality", None)):
            raise ParameterError(f"modality={modality!r} with a loaded model: load it with "
                                 f"geot2e.load_model(path, modality={modality!r}), or pass the model's folder.")
        return name_or_path
    if modality is not None:
        modality = resolve_modality(modality, name_or_path)
        from .modality import get_modality

        if get_modality(modality).composite:
            parts = get_modality(modality).parts
            raise ParameterError(f"modality {modality!r} is a composite of {' and '.join(map(repr, parts))}, each "
                                 f"its own model: geot2e.generate(..., modality={modality!r}) runs them from the "
                                 f"same noise; load_model loads one part (modality={parts[-1]!r}).")
        if modality == "rgb":
            modality = None
    dev = resolve_device(device)
    if str(name_or_path) == "default":
        path = DEFAULT_WEIGHTS
        if not (path / "config.json").is_file():
            raise CheckpointError(f"the embedded default model is missing from {path}; reinstall geot2e, "
                                  "or train one with `geot2e train configs/default.yaml`.")
    else:
        path = Path(name_or_path).expanduser()
    from .detail import DETAIL_DIR, DETAIL_WEIGHTS, has_detail_net, load_detail_net
    from .modality import get_modality

    # the RGB model's, or the modality's own (beside its adapter); one cache entry for a folder without one
    dfolder = path if modality is None else path / get_modality(modality).folder
    detail = bool(detail) and has_detail_net(dfolder)
    key = (str(path.resolve()), str(dev), str(autocast), bool(few_step), bool(translate), modality, detail)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        model = from_pretrained(path, device=dev)
        if few_step:
            _merge_student(model, path)
        if detail:                            # the pixel detail its decoder loses
            load_detail_net(model, dfolder / DETAIL_DIR)
            h = hashlib.sha256((dfolder / DETAIL_DIR / DETAIL_WEIGHTS).read_bytes()).hexdigest()[:8]
            model.checkpoint_hash = f"{model.checkpoint_hash}+{h}"   # provenance names the detail network too
        if translate:
            from .control import CONTROL_DIR, load_controlnet

            load_controlnet(model, path / CONTROL_DIR)
            from .haze import HAZE_DIR, has_haze_net, load_haze_net

            if has_haze_net(path):            # dehazing by the scattering model's inversion
                load_haze_net(model, path / HAZE_DIR)
            from .sr import SR_DIR, has_sr_net, load_sr_net

            if has_sr_net(path):              # super-resolution's regression network
                load_sr_net(model, path / SR_DIR)
        if modality is not None:
            from .adapter import ADAPTER_WEIGHTS
            from .modality import apply_modality, get_modality

            folder = path / get_modality(modality).folder
            if not (folder / ADAPTER_WEIGHTS).is_file():
                raise CheckpointError(f"{path} has no {modality!r} adapter ({folder} is missing; it generates "
                                      f"{available_modalities(path)}): train one with `geot2e train "
                                      f"configs/modality_{modality}.yaml` or pick another modality.")
            apply_modality(model, modality, folder)
        if autocast == "auto":
            if dev.type == "cuda" or (dev.type == "cpu" and _cpu_has_amx()):
                model.autocast_dtype = torch.bfloat16
        elif autocast in ("bf16", "bfloat16"):
            model.autocast_dtype = torch.bfloat16
        elif autocast in ("fp16", "float16"):
            model.autocast_dtype = torch.float16
        model.requires_grad_(False)
        _CACHE[key] = model
        return model
