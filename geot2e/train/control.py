"""The translation ControlNet's training stage (``control:`` in a training config).

The denoiser stays frozen; one :class:`diffusers.ControlNetModel` (initialised from its UNet,
:func:`geot2e.models.control.build_controlnet`) learns every task, the task being part of its
conditioning image. Training pairs are made from the config's real tiles, degraded the way
each task's input is:

``super_resolution``  the tile area-averaged by 2 or 4 (a coarser sensor's pixel integrates
                      its footprint), replicated back onto the tile's grid
``pansharpen``        the same, plus a panchromatic band at the tile's resolution: a random
                      positive mix of the tile's bands (Landsat 8's PAN spans green and red;
                      the control image matches its mean and spread to the intensity, so
                      only its pattern matters)
``nir_to_rgb``        the NIR band of four-band tiles (Sentinel-2, Landsat 8)
``dehaze``            the atmospheric scattering model ``I = J·t + A·(1 − t)`` over the
                      clear tile ``J``: a smooth random transmission ``t`` and a near-white
                      airlight ``A``; input and target then stretched by the hazy tile's
                      percentiles, as the engine scales a hazy raster by its own

Each batch is one task (drawn by the section's ``tasks`` weights); masks are mostly "full"
(everything synthesized) with some edge and rectangle masks, whose known pixels stand for
the neighbouring windows' results that the tiled engine passes as context. The loss is the
denoiser's (:meth:`~geot2e.models.Text2Earth.training_loss`, with condition dropout) with the
ControlNet's residuals added.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ParameterError
from ..models.control import CONTROL_DIR, NIR_LINEAR, TASKS, build_controlnet, control_image, save_controlnet
from . import loop as L
from .parallel import context, is_main, rank_seed
from .haze import synthetic_haze
from .schema import StageConfig

__all__ = ["DEFAULT_TASK_WEIGHTS", "CONTROL_MASKS", "degrade", "train_control", "fit_nir_linear",
           "export_controlnet"]

DEFAULT_TASK_WEIGHTS = {"super_resolution": 0.3, "pansharpen": 0.25, "nir_to_rgb": 0.2, "dehaze": 0.25}
#: masks of the control stage: mostly whole tiles, some with neighbours' pixels as context
CONTROL_MASKS = {"full": 0.7, "edge": 0.15, "rectangle": 0.15}
SCALES = (2, 4)


def _replicate(x: torch.Tensor, s: int) -> torch.Tensor:
    """``x`` area-averaged by ``s`` and each coarse pixel replicated over ``s × s``."""
    return F.avg_pool2d(x, s).repeat_interleave(s, -2).repeat_interleave(s, -1)


def degrade(task: str, x: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                            torch.Tensor | None, int]:
    """A training pair's input from clear tiles ``x`` (B, C, H, W) in [-1, 1] (C = 4 with NIR
    last for ``nir_to_rgb``; RGB first). Returns ``(target RGB, guide, aux, scale)`` as
    :func:`~geot2e.models.control.control_image` takes them."""
    rgb = x[:, :3]
    b, _, h, w = rgb.shape
    if task == "super_resolution":
        s = int(rng.choice(SCALES))
        return rgb, _replicate(rgb, s), None, s
    if task == "pansharpen":
        s = int(rng.choice(SCALES))
        wts = torch.from_numpy(rng.dirichlet([4.0, 4.0, 1.0], size=b).astype(np.float32)).view(b, 3, 1, 1)
        pan = (rgb * wts).sum(1, keepdim=True)
        return rgb, _replicate(rgb, s), pan, s
    if task == "nir_to_rgb":
        if x.shape[1] < 4:
            raise ParameterError("nir_to_rgb pairs need four-band tiles (RGB + NIR)")
        return rgb, None, x[:, 3:4], 1
    if task == "dehaze":
        hazy = synthetic_haze(rgb, rng)
        # the engine scales a raster by its own percentiles (geot2e.geo.radiometry), a hazy one
        # too: stretch each hazy tile the same way and carry the target along
        q = torch.quantile(hazy.flatten(2), torch.tensor([0.01, 0.99]), dim=2)      # (2, B, 3)
        lo, hi = q[0][..., None, None], q[1][..., None, None]
        gain = 1.8 / (hi - lo).clamp_min(0.05)

        def stretch(v):
            return ((v - lo) * gain - 0.9).clamp(-1, 1)

        return stretch(rgb), stretch(hazy), None, 1
    raise ParameterError(f"unknown translation task {task!r}; choose one of {list(TASKS)}.")


class _TaskBatches:
    """Batches of one task each: RGB tiles, or RGB+NIR tiles for ``nir_to_rgb``."""

    def __init__(self, rgb, rgbn, weights: dict):
        self.rgb, self.rgbn = rgb, rgbn
        self.size = rgb.size
        self.tasks = [t for t in TASKS if weights.get(t, 0) > 0]
        p = np.array([weights[t] for t in self.tasks], dtype=np.float64)
        self.p = p / p.sum()

    def batch(self, rng, n, size=None):
        task = self.tasks[int(rng.choice(len(self.tasks), p=self.p))]
        ds = self.rgbn if task == "nir_to_rgb" else self.rgb
        out = ds.batch(rng, n, size=size)
        out["task"] = task
        return out


def _task_weights(cfg: StageConfig, have_nir: bool) -> dict:
    w = dict(cfg.tasks) if cfg.tasks else dict(DEFAULT_TASK_WEIGHTS)
    bad = set(w) - set(TASKS)
    if bad:
        raise ParameterError(f"control.tasks: unknown tasks {sorted(bad)}; choose from {list(TASKS)}.")
    if w.get("nir_to_rgb", 0) > 0 and not have_nir:
        raise ParameterError("control.tasks asks for nir_to_rgb but no source has a NIR band (four bands); "
                             "add one (e.g. sentinel2_chincoteague) or drop the task.")
    return w


def train_control(model, rgb_dataset, rgbn_dataset, cfg: StageConfig, out_dir: str | Path, *,
                  resume: bool = True, progress: bool = True) -> list:
    """Train the translation ControlNet on the frozen ``model`` and write it to
    ``out_dir/control/controlnet``. ``rgbn_dataset`` (four-band tiles) feeds ``nir_to_rgb``;
    None without one. The model carries the trained ControlNet afterwards
    (``model.controlnet``)."""
    weights = _task_weights(cfg, rgbn_dataset is not None)
    prev = dict(model.controlnet_meta or {}) if model.controlnet is not None else None   # a ControlNet continued
    model.requires_grad_(False)
    model.autocast_dtype = torch.bfloat16 if cfg.bf16 else None
    if model.controlnet is None:
        model.controlnet = build_controlnet(model)
    model.controlnet.requires_grad_(True)
    gen = torch.Generator(device=model.device).manual_seed(rank_seed(cfg.seed, context()))
    from ..models.text2earth import make_scheduler

    sched = make_scheduler(model.config, "ddpm")
    data = _TaskBatches(rgb_dataset, rgbn_dataset, weights)

    def loss_fn(batch, rng):
        x = batch["image"]
        task = batch["task"]
        target, guide, aux, scale = degrade(task, x, rng)
        dev = target.device
        m = L._masks(rng, target.shape[0], target.shape[-1], CONTROL_MASKS).to(dev)
        cond = control_image(task, guide, aux, scale)
        return model.training_loss(target, m, batch["gsd"], batch["caption"], p_text=cfg.p_text, p_res=cfg.p_res,
                                   scheduler=sched, generator=gen, masked_weight=0.0, control=cond)

    stage_dir = Path(out_dir) / "control"
    log = L._run(model, data, cfg, stage_dir, ["controlnet"], loss_fn, use_ema=cfg.ema_decay > 0, resume=resume,
                 progress=progress, desc="control", extra={}, generator=gen)
    if is_main():
        import json

        state = stage_dir / "state.json"
        steps = int(json.loads(state.read_text())["step"]) if state.is_file() else 0
        meta = {"tasks": [t for t in TASKS if weights.get(t, 0) > 0], "task_weights": weights,
                "steps": steps, "base_model": model.model_id}
        if prev is not None:
            meta["continued_from"] = {"base_model": prev.get("base_model"), "steps": prev.get("steps")}
        if weights.get("nir_to_rgb", 0) > 0:
            meta[NIR_LINEAR] = fit_nir_linear(rgbn_dataset, seed=cfg.seed)
        save_controlnet(model.controlnet, stage_dir / "controlnet", meta=meta)
        model.controlnet_meta = meta
    return log


def fit_nir_linear(rgbn_dataset, *, tiles: int = 512, seed: int = 0) -> dict:
    """``{"a": [3], "b": [3]}``: RGB ≈ a·NIR + b per band, least squares over ``tiles`` four-band
    training tiles on the model's [-1, 1] scale (the ``nir_to_rgb`` pairs of the control stage):
    the colours ``translate(..., "nir_to_rgb")`` starts sampling from (:data:`NIR_LINEAR`)."""
    rng = np.random.default_rng([int(seed), 4242])
    nir, rgb = [], []
    for _ in range(0, int(tiles), 32):
        x = torch.as_tensor(rgbn_dataset.batch(rng, 32)["image"]).double()
        nir.append(x[:, 3].reshape(-1))
        rgb.append(x[:, :3].transpose(0, 1).reshape(3, -1))
    n = torch.cat(nir)
    coef = torch.linalg.lstsq(torch.stack([n, torch.ones_like(n)], 1), torch.cat(rgb, 1).T).solution
    return {"a": [round(float(v), 6) for v in coef[0]], "b": [round(float(v), 6) for v in coef[1]]}


def export_controlnet(src: str | Path, model_folder: str | Path) -> Path:
    """Copy the trained ControlNet into ``model_folder/translate`` (float16), recording the
    checkpoint hash of the model it belongs to."""
    import json

    from diffusers import ControlNetModel

    from ..models.checkpoint import checkpoint_hash
    from ..models.control import CONTROL_META

    src = Path(src)
    meta = json.loads((src / CONTROL_META).read_text())
    meta["base_checkpoint_hash"] = checkpoint_hash(model_folder)
    cn = ControlNetModel.from_pretrained(str(src), use_safetensors=True)
    return save_controlnet(cn, Path(model_folder) / CONTROL_DIR, meta=meta, dtype=torch.float16)
