"""Few-step distillation of the denoiser: a LoRA student that does in ``n`` DDIM steps what the
model does in ``n × k``.

The teacher is the trained model itself with its one-sample sampler (DDIM, no guidance). The
student is the same UNet with a LoRA adapter on its attention projections and ResNet
convolutions (:func:`~geot2e.models.adapter.add_lora`): switching the adapter off gives the
teacher back, so one set of weights in memory serves both and the shipped student is a few MB.

Each training example draws one of the student's ``n`` steps ``t_i → t_{i+1}``, noises a real
tile's latents to ``t_i`` (masks, captions and GSDs as the denoiser sees them, with the same
condition dropout), runs the teacher's DDIM for ``k`` sub-steps from ``t_i`` to ``t_{i+1}``
and trains the student so that its single DDIM step lands on the same latents. That is one
round of progressive distillation (Salimans & Ho, 2022) with a ``k``-fold jump, as in TRACT
(Berthelot et al., 2023): the regression target is the ``x0`` that makes one DDIM step reach
the teacher's result, weighted by max(SNR, 1) ("truncated SNR" weighting of Salimans & Ho).

The student samples with the ordinary DDIM scheduler at ``n`` steps
(:meth:`geot2e.models.Text2Earth.inpaint` with ``steps=n``): its timesteps and the ``α`` of
each step's target are taken from the same scheduler, so training and sampling agree.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ParameterError
from ..models.adapter import ADAPTER_DIR, add_lora, annotate_lora, has_lora, save_lora
from ..models.text2earth import Text2Earth, make_scheduler, x0_and_eps
from . import loop as L
from .lora import export_adapter
from .parallel import context, is_main, rank_seed
from .schema import StageConfig

__all__ = ["DISTILL_TARGETS", "student_schedule", "teacher_substeps", "train_distill", "export_student"]

#: layers of the UNet the student's adapter sits on: attention projections and feed-forward
#: layers, and the 3×3 convolutions of the ResNet blocks (most of the UNet's work)
DISTILL_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                   "conv1", "conv2")


def student_schedule(model: Text2Earth, steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(t, alpha_t, alpha_next)`` of the ``steps`` DDIM steps the sampler runs (diffusers'
    DDIMScheduler as :func:`~geot2e.models.text2earth.make_scheduler` builds it): timestep of
    each step, ᾱ at it and ᾱ at the step's end (the final ᾱ after the last)."""
    sched = make_scheduler(model.config, "ddim")
    sched.set_timesteps(int(steps))
    ts = sched.timesteps.long()
    ac = sched.alphas_cumprod
    prev = ts - sched.config.num_train_timesteps // sched.num_inference_steps
    a_next = torch.where(prev >= 0, ac[prev.clamp_min(0)], sched.final_alpha_cumprod.expand_as(ts.float()))
    return ts, ac[ts], a_next


def teacher_substeps(t: torch.Tensor, t_next: torch.Tensor, k: int) -> list[torch.Tensor]:
    """The teacher's ``k`` sub-step timesteps from ``t`` (inclusive) towards ``t_next``
    (exclusive), evenly spaced, per example (integer tensors)."""
    frac = torch.arange(k, dtype=torch.float64) / k
    return [torch.round(t.double() - f * (t.double() - t_next.double())).long() for f in frac]


def _ddim(prediction_type: str, z: torch.Tensor, out: torch.Tensor, a: torch.Tensor, a_next: torch.Tensor
          ) -> torch.Tensor:
    """One deterministic DDIM step from ᾱ = ``a`` to ``a_next`` for the UNet output ``out``."""
    x0, eps = x0_and_eps(prediction_type, out, z, a)
    a_next = a_next.view(-1, 1, 1, 1)
    return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps


def train_distill(model: Text2Earth, dataset, cfg: StageConfig, out_dir: str | Path, *, resume: bool = True,
                  progress: bool = True) -> list:
    """Train the few-step student of ``model`` (see the module text) and write its adapter to
    ``out_dir/distill/adapter``.

    ``cfg.student_steps`` is the student's number of steps, ``cfg.teacher_steps`` the teacher's
    (a multiple of it), ``cfg.rank`` the adapter's rank. The model is changed in place: it
    carries the trained adapter afterwards (the caller unloads it to get the teacher back).
    """
    n = int(cfg.student_steps)
    if n < 1 or cfg.teacher_steps % n or cfg.teacher_steps < 2 * n:
        raise ParameterError(f"distill: teacher_steps ({cfg.teacher_steps}) must be a multiple of student_steps "
                             f"({n}) and at least twice it, e.g. student_steps 8, teacher_steps 64.")
    k = cfg.teacher_steps // n
    model.requires_grad_(False)
    model.autocast_dtype = torch.bfloat16 if cfg.bf16 else None
    if not has_lora(model):
        add_lora(model, rank=cfg.rank, alpha=cfg.rank, targets=DISTILL_TARGETS)
    annotate_lora(model, kind="few_step", student_steps=n, teacher_steps=int(cfg.teacher_steps), teacher_guidance=0.0)
    unet = model.unet
    ts, a_t, a_next = student_schedule(model, n)
    step_len = model.config.scheduler.num_train_timesteps // n
    pred = model.config.scheduler.prediction_type   # the UNet predicts epsilon or v
    alphas = make_scheduler(model.config, "ddim").alphas_cumprod      # ᾱ of every training timestep
    gen = torch.Generator(device=model.device).manual_seed(rank_seed(cfg.seed, context()))

    def loss_fn(batch, rng):
        x = batch["image"]
        dev = x.device
        b = x.shape[0]
        m = L._masks(rng, b, x.shape[-1], cfg.mask_weights).to(dev)
        with torch.no_grad(), model._autocast(dev):
            z0 = model.encode_images(x).float()
            m_lat, zm = model.masked_condition(x, m)
            zm = zm.float()
        drop_text = torch.rand(b, generator=gen, device=dev) < cfg.p_text
        drop_res = torch.rand(b, generator=gen, device=dev) < cfg.p_res
        prompts = ["" if d else p for p, d in zip(batch["caption"], drop_text.tolist())]
        with torch.no_grad():
            text_emb = model.encode_prompts(prompts)
            res_emb = model.resolution(batch["gsd"].to(dev).float(), drop=drop_res)
        i = torch.randint(0, n, (b,), generator=gen, device=dev)
        t, at, an = ts.to(dev)[i], a_t.to(dev)[i], a_next.to(dev)[i]
        noise = torch.randn(z0.shape, generator=gen, device=dev)
        z = at.sqrt().view(-1, 1, 1, 1) * z0 + (1 - at).sqrt().view(-1, 1, 1, 1) * noise
        # the teacher: k DDIM sub-steps from t to the student's next timestep, adapter off
        subs = teacher_substeps(t, t - step_len, k)
        ac = alphas.to(dev)
        zt = z
        unet.disable_adapters()
        try:
            with torch.no_grad():
                for j, s in enumerate(subs):
                    a_s = ac[s]
                    a_e = ac[subs[j + 1]] if j + 1 < k else an
                    out = model.predict(zt, s, m_lat, zm, text_emb, res_emb).float()
                    zt = _ddim(pred, zt, out, a_s, a_e)
        finally:
            unet.enable_adapters()
        # the x0 whose one DDIM step from z lands on the teacher's zt
        sa, s1a = at.sqrt().view(-1, 1, 1, 1), (1 - at).sqrt().view(-1, 1, 1, 1)
        sn, s1n = an.sqrt().view(-1, 1, 1, 1), (1 - an).sqrt().view(-1, 1, 1, 1)
        x0_target = (zt - s1n / s1a * z) / (sn - s1n * sa / s1a)
        x0_s = x0_and_eps(pred, model.predict(z, t, m_lat, zm, text_emb, res_emb).float(), z, at)[0]
        snr = (at / (1 - at)).clamp_min(1.0).view(-1, 1, 1, 1)
        w = snr * (1.0 + cfg.masked_weight * m_lat)
        return (w * (x0_s - x0_target) ** 2).mean() / (1.0 + cfg.masked_weight * m_lat.mean()).clamp_min(1.0)

    stage_dir = Path(out_dir) / "distill"
    log = L._run(model, dataset, cfg, stage_dir, ["unet"], loss_fn, use_ema=cfg.ema_decay > 0, resume=resume,
                 progress=progress, desc="distill", extra={}, generator=gen)
    if is_main():
        save_lora(model, stage_dir / "adapter")
    return log


def export_student(adapter: str | Path, model_folder: str | Path) -> Path:
    """Copy the student's adapter folder into ``model_folder/few_step`` (replacing one there;
    weights as float16), recording the checkpoint hash of the model it belongs to."""
    return export_adapter(adapter, model_folder, ADAPTER_DIR)
