"""Data-parallel helpers on ``torch.distributed``: ranks, their data streams and seeds,
gradient averaging, and :func:`spawn`, which runs a training function in N processes.

The training loops use these; they do not know which function is spawned (the driver,
:func:`geot2e.train.run_training`, passes itself), so this module depends on no other
part of :mod:`geot2e.train`. :mod:`geot2e.train.distributed` is the public launcher and
documents the design.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist

from ..errors import ParameterError

__all__ = ["DistContext", "context", "is_main", "barrier", "rank_rng", "rank_seed", "local_batch_size",
           "sync_gradients", "broadcast_parameters", "gather_objects", "spawn", "run_rank"]


@dataclass(frozen=True)
class DistContext:
    """Rank and world size of an initialised process group."""

    rank: int
    world_size: int
    backend: str


def context() -> DistContext | None:
    """The current process group (None when not distributed or when it has one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    ws = dist.get_world_size()
    if ws <= 1:
        return None
    return DistContext(rank=dist.get_rank(), world_size=ws, backend=str(dist.get_backend()))


def is_main() -> bool:
    """True on rank 0 (and in a single process)."""
    ctx = context()
    return ctx is None or ctx.rank == 0


def barrier() -> None:
    if context() is not None:
        dist.barrier()


def rank_rng(seed: int, ctx: DistContext | None) -> np.random.Generator:
    """Data stream of a rank: rank 0 (and a single process) keeps ``default_rng(seed)``;
    rank r > 0 uses the independent stream ``default_rng([seed, r])``."""
    if ctx is None or ctx.rank == 0:
        return np.random.default_rng(seed)
    return np.random.default_rng([int(seed), int(ctx.rank)])


def rank_seed(seed: int, ctx: DistContext | None) -> int:
    """Seed of a rank's torch generator (noise, timesteps, condition dropout)."""
    return int(seed) if ctx is None or ctx.rank == 0 else int(seed) + 1_000_003 * int(ctx.rank)


def local_batch_size(global_batch: int, ctx: DistContext | None) -> int:
    """This rank's share of the global batch (which must divide evenly)."""
    if ctx is None:
        return int(global_batch)
    if global_batch % ctx.world_size:
        raise ParameterError(f"batch_size {global_batch} is not divisible by world_size {ctx.world_size}; "
                             "choose a global batch that is a multiple of the number of processes.")
    return global_batch // ctx.world_size


def _device_of(params: Sequence[torch.Tensor]) -> torch.device:
    for p in params:
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def sync_gradients(params: Sequence[torch.nn.Parameter], loss: torch.Tensor | float = 0.0, *,
                   stop: bool = False) -> tuple[float, bool]:
    """Average ``p.grad`` over ranks in place (missing gradients count as zeros).

    Returns the loss averaged over ranks and whether any rank asked to ``stop``. With equal
    local batches and a loss that is a per-sample mean, the averaged gradient equals the
    gradient of the global batch.
    """
    ctx = context()
    lv = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    if ctx is None:
        return lv, bool(stop)
    params = list(params)
    dev = _device_of(params)
    grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
    has = torch.tensor([float(p.grad is not None) for p in params], device=dev, dtype=torch.float32)
    tail = torch.tensor([lv, 1.0 if stop else 0.0], device=dev, dtype=torch.float32)
    flat = torch.cat(grads + [has, tail])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    off = 0
    for p in params:
        off += p.numel()
    has = flat[off:off + len(params)].tolist()
    flat /= ctx.world_size
    off = 0
    for p, h in zip(params, has):
        n = p.numel()
        if h > 0:          # some rank produced a gradient: every rank gets the average
            g = flat[off:off + n].view_as(p).to(p.dtype)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
        else:              # no rank did: leave it None, as a single process would (AdamW skips it)
            p.grad = None
        off += n
    off += len(params)
    return float(flat[off]), bool(flat[off + 1] > 0)


@torch.no_grad()
def broadcast_parameters(params: Sequence[torch.Tensor], src: int = 0) -> None:
    """Copy rank ``src``'s values of ``params`` to every rank."""
    if context() is None:
        return
    for p in params:
        dist.broadcast(p.data, src=src)


def gather_objects(obj) -> list | None:
    """``obj`` of every rank, as a list on all ranks (None when not distributed)."""
    ctx = context()
    if ctx is None:
        return None
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


# ----------------------------------------------------------------------------- launcher
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pick_backend(backend: str | None, nproc: int) -> str:
    if backend:
        return backend
    if torch.cuda.is_available() and torch.cuda.device_count() >= nproc:
        return "nccl"
    return "gloo"


def _setup_rank(rank: int, world: int, backend: str, init_method: str | None, threads: int | None,
                local_rank: int | None = None) -> None:
    if backend == "nccl":
        torch.cuda.set_device((rank if local_rank is None else local_rank) % torch.cuda.device_count())
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    kw = {"init_method": init_method} if init_method else {}
    dist.init_process_group(backend=backend, rank=rank, world_size=world, **kw)


def _worker(rank: int, run, cfg, world: int, backend: str, port: int, progress: bool, threads: int | None,
            resume: bool = True) -> None:
    _setup_rank(rank, world, backend, f"tcp://127.0.0.1:{port}", threads)
    try:
        run(cfg, progress=progress and rank == 0, resume=resume)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _threads_per_rank(cfg, nproc: int) -> int | None:
    total = getattr(cfg, "threads", None) or os.cpu_count() or 1
    return max(1, int(total) // int(nproc))


def spawn(run, cfg, *, nproc: int = 2, backend: str | None = None, progress: bool = True, resume: bool = True):
    """Run ``run(cfg, progress=..., resume=...)`` in ``nproc`` processes (``torch.multiprocessing.spawn``)
    and return the run's latest saved model (see :func:`geot2e.train.distributed.launch`).

    ``run`` is a module-level function (it is pickled by name into each process), e.g.
    :func:`geot2e.train.run_training`; ``cfg`` a :class:`~geot2e.train.TrainConfig`.
    """
    import torch.multiprocessing as mp

    nproc = int(nproc)
    if nproc < 1:
        raise ParameterError(f"nproc must be at least 1, got {nproc}")
    be = _pick_backend(backend, nproc)
    if be == "nccl" and torch.cuda.device_count() < nproc:
        raise ParameterError(f"nccl needs one GPU per process: {nproc} processes, "
                             f"{torch.cuda.device_count()} GPUs; use backend='gloo' or fewer processes.")
    if be == "nccl" and getattr(cfg, "device", None) in (None, "cpu"):
        cfg.device = "cuda"
    mp.spawn(_worker, args=(run, cfg, nproc, be, _free_port(), progress, _threads_per_rank(cfg, nproc), resume),
             nprocs=nproc, join=True)
    return _latest_model(cfg)


def _latest_model(cfg):
    from pathlib import Path

    from ..models.checkpoint import from_pretrained

    out = Path(cfg.out_dir)
    for sub in ("final", "finetune/model", "denoiser/model", "vae/model"):
        if (out / sub / "config.json").is_file():
            return from_pretrained(out / sub)
    return None


def run_rank(run, cfg, *, rank: int, world: int, local_rank: int | None = None, backend: str | None = None,
             progress: bool = True) -> None:
    """Join a process group whose processes another launcher started (``torchrun``: ``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``) as ``rank`` of ``world`` and run ``run(cfg, progress=...)``."""
    be = _pick_backend(backend, world)
    if be == "nccl" and getattr(cfg, "device", None) in (None, "cpu"):
        cfg.device = "cuda"
    _setup_rank(rank, world, be, None, _threads_per_rank(cfg, world), local_rank=local_rank)
    try:
        run(cfg, progress=progress and rank == 0)
        dist.barrier()
    finally:
        dist.destroy_process_group()
