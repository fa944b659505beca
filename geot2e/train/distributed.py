"""Multi-process data-parallel training through ``torch.distributed``.

Every process (rank) holds a full model replica. At each step a rank samples its share
``batch_size / world_size`` of the global batch from its own random stream, computes the
loss, and the gradients are averaged across ranks with one ``all_reduce`` of a flat
buffer (the mean loss and a stop flag travel in the same buffer), so every rank applies
the same optimizer step and the replicas stay identical. Rank 0 alone writes checkpoints
and logs; the random streams of all ranks are saved with them, so a resumed run continues
every stream.

Backends: ``gloo`` on CPU, ``nccl`` when each rank gets its own CUDA device.

Launch::

    python -m geot2e.train.distributed configs/tiny_test.yaml --nproc 2     # spawns 2 processes
    torchrun --nproc_per_node 2 -m geot2e.train.distributed configs/x.yaml   # or let torchrun spawn
    geot2e train CONFIG      # with `world_size: 2` in CONFIG (spawns through launch())

The training loops (:mod:`geot2e.train.loop`) detect an initialised process group and use
the helpers here; a single process runs exactly as before.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .config import run_training
from .parallel import (DistContext, barrier, broadcast_parameters, context, gather_objects,  # noqa: F401
                       is_main, local_batch_size, rank_rng, rank_seed, run_rank, spawn, sync_gradients)
from .schema import TrainConfig, load_train_config

__all__ = ["DistContext", "context", "is_main", "barrier", "rank_rng", "local_batch_size", "sync_gradients",
           "broadcast_parameters", "gather_objects", "launch", "main"]


def launch(config, *, nproc: int = 2, backend: str | None = None, progress: bool = True, resume: bool = True):
    """Run :func:`~geot2e.train.run_training` in ``nproc`` processes (``torch.multiprocessing.spawn``).

    Parameters
    ----------
    config : a :class:`~geot2e.train.TrainConfig` or the path of a YAML/TOML config.
    nproc : number of processes; the config's ``batch_size`` values are global batches.
    backend : ``"gloo"`` (CPU) or ``"nccl"`` (one GPU per process); default: nccl when there
        are at least ``nproc`` GPUs, else gloo.
    progress : progress bar on rank 0.
    resume : continue every stage from its last checkpoint (as :func:`run_training`).

    Returns
    -------
    The trained model, loaded from the run's latest checkpoint (``out_dir/final`` when
    all stages finished), or None if the run saved no model.
    """
    cfg = config if isinstance(config, TrainConfig) else load_train_config(config)
    return spawn(run_training, cfg, nproc=nproc, backend=backend, progress=progress, resume=resume)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m geot2e.train.distributed CONFIG --nproc N`` (or under ``torchrun``)."""
    ap = argparse.ArgumentParser(prog="python -m geot2e.train.distributed",
                                 description="Data-parallel training of a geot2e config in several processes.")
    ap.add_argument("config", help="training config (YAML or TOML)")
    ap.add_argument("--nproc", type=int, default=2, help="number of processes (ignored under torchrun)")
    ap.add_argument("--backend", choices=("gloo", "nccl"), default=None)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:   # started by torchrun
        rank = int(os.environ["RANK"])
        run_rank(run_training, load_train_config(args.config), rank=rank, world=int(os.environ["WORLD_SIZE"]),
                 local_rank=int(os.environ.get("LOCAL_RANK", rank)), backend=args.backend,
                 progress=not args.no_progress)
        return 0
    launch(args.config, nproc=args.nproc, backend=args.backend, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
