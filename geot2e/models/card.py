"""A loaded model's summary: what ``geot2e info`` prints (id, hash, bands, GSD range,
architecture, parameter counts, the files it came from)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["model_card"]


def model_card(model) -> dict[str, Any]:
    """Summary of a loaded model: id, hash, source, bands, GSD range, architecture, parameters.

    Returns
    -------
    dict
        ``model_id``, ``checkpoint_hash``, ``source``, ``bands``, ``gsd_range_m``,
        ``vae_factor``, ``latent_channels``, ``text_encoder``, ``parameters`` (per component
        and ``total``), ``weights_bytes``, ``model_card`` (the folder's card file, if any) and
        ``beside`` (what the folder carries beside the model, by sub-folder: the few-step
        student, the pixel-detail network and whether this model has it attached, the
        translation networks, the modality adapters).
    """
    cfg = model.config
    params = {}
    for comp in ("vae", "unet", "text_encoder", "resolution"):
        module = getattr(model, comp, None)
        if module is not None:
            params[comp] = int(sum(p.numel() for p in module.parameters()))
    params["total"] = int(sum(params.values()))
    src = getattr(model, "source", None)
    size = None
    card = None
    if src and Path(src).is_dir():
        size = int(sum(f.stat().st_size for f in Path(src).glob("*.safetensors")))
        for name in ("MODEL_CARD.md", "README.md", "model_card.md"):
            if (Path(src) / name).is_file():
                card = str(Path(src) / name)
                break
    text = getattr(cfg, "text", None)
    text_d = text if isinstance(text, dict) else getattr(text, "__dict__", {})
    return {
        "model_id": model.model_id,
        "checkpoint_hash": getattr(model, "checkpoint_hash", None),
        "source": src,
        "bands": list(cfg.band_names),
        "gsd_range_m": [float(v) for v in model.gsd_range],
        "vae_factor": int(model.vae_factor),
        "latent_channels": int(model.latent_channels),
        "text_encoder": {k: text_d.get(k) for k in ("arch", "pretrained", "width", "layers", "context_length")
                         if k in text_d},
        "parameters": params,
        "weights_bytes": size,
        "model_card": card,
        "beside": _beside(model, src),
    }


def _beside(model, src) -> dict[str, str]:
    if not src or not Path(src).is_dir():
        return {}
    from .checkpoint import available_modalities, has_few_step
    from .control import has_controlnet
    from .detail import detail_net_info, has_detail_net
    from .haze import has_haze_net
    from .sr import has_sr_net

    p = Path(src)
    out = {}
    if has_few_step(p):
        out["few_step"] = "few-step student (remove_clouds' default sampler)"
    if has_detail_net(p):
        on = "attached" if getattr(model, "detail_net", None) is not None else "not attached (load_model(detail=False))"
        out["detail"] = f"pixel-detail network, {detail_net_info(p).get('steps', '?')} steps: {on}"
    if has_controlnet(p):
        out["translate"] = "translation ControlNet (NIR -> RGB)"
    if has_haze_net(p):
        out["dehaze"] = "dehazing network"
    if has_sr_net(p):
        out["super_resolution"] = "super-resolution network (and pan-sharpening)"
    from .modality import get_modality

    mods = [get_modality(m) for m in available_modalities(p) if m != "rgb"]
    adapters = [m.name + (" (with its pixel-detail network)" if has_detail_net(p / m.folder) else "")
                for m in mods if not m.composite]
    if adapters:
        composites = [f"{m.name} ({' + '.join(m.parts)})" for m in mods if m.composite]
        out["modality"] = "adapters: " + ", ".join(adapters) + ("; composites: " + ", ".join(composites)
                                                                  if composites else "")
    return out
