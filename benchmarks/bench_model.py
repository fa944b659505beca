"""Seconds per denoising step of the default Text2Earth model on this CPU, and how far one
step is from the CPU's matmul bound.

For 64/128/256-px tiles, batch 1 and 8, with and without classifier-free guidance (ω = 3 runs
the UNet on 2B samples, ω = 0 on B), in float32 and with bf16 autocast, the script times the
denoising loop of ``Text2Earth.inpaint`` between scheduler-step callbacks (VAE encode/decode
are replaced by stand-ins, text encoding lies outside the timed steps, the first step is a
warm-up and is not counted). One UNet forward is counted with
``torch.utils.flop_counter.FlopCounterMode`` and compared with the rate of a 2048² matmul in
the same dtype.

Both wall time and process CPU time are recorded. When other jobs share the CPU (a training
run here), wall seconds are pessimistic; CPU seconds per step, and the fraction of the
matmul bound computed from CPU time on both sides, are fair.

Run::

    nice -n 10 python benchmarks/bench_model.py --write-docs docs/model.md

Random weights are fine for timing (the compute does not depend on the values).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

# Waiting OpenMP threads sleep instead of spinning: on a shared, oversubscribed CPU a spinning
# thread burns CPU time while its partner waits for a time slice, inflating CPU-s per step.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geot2e.models import Text2Earth, default_config  # noqa: E402
from geot2e.sampling import GUIDANCE  # noqa: E402

START, END = "<!-- bench_model:start -->", "<!-- bench_model:end -->"


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def matmul_rate(dtype: torch.dtype, n: int = 2048, reps: int = 3) -> tuple[float, float]:
    """(GFLOP/s by wall time, GFLOP per CPU-second) of an n×n matmul, best of ``reps``."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    best_w = best_c = float("inf")
    for _ in range(reps):
        w0, c0 = _clock()
        a @ b
        w1, c1 = _clock()
        best_w, best_c = min(best_w, w1 - w0), min(best_c, max(c1 - c0, 1e-9))
    flops = 2.0 * n ** 3
    return flops / best_w / 1e9, flops / best_c / 1e9


def unet_flops(model: Text2Earth, size: int) -> float:
    """FLOPs of one UNet forward on one sample of a ``size``-px tile (float32 graph)."""
    from torch.utils.flop_counter import FlopCounterMode

    c, h, w = model.latent_shape(size, size)
    z = torch.zeros(1, c, h, w)
    m = torch.zeros(1, 1, h, w)
    text = model.text_encoder([""])
    res = model.resolution(torch.tensor([30.0]))
    t = torch.tensor([500])
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.unet(torch.cat([z, m, z], 1), t, encoder_hidden_states=text, class_labels=res)
    return float(fc.get_total_flops())


def step_time(model: Text2Earth, size: int, batch: int, guidance: float, dtype: torch.dtype | None,
              steps: int) -> tuple[float, float]:
    """(wall s, CPU s) of one denoising step: the fastest of steps 2..``steps``."""
    x = torch.zeros(batch, model.bands, size, size)
    m = torch.zeros(batch, 1, size, size)
    m[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    stamps: list[tuple[float, float]] = []
    model.autocast_dtype = dtype
    # The VAE is not part of a denoising step: stand-ins keep inpaint's loop as it is while
    # skipping the (large, full-resolution) encode and decode.
    c, hl, wl = model.latent_shape(size, size)
    model.masked_condition = lambda x, m: (torch.zeros(batch, 1, hl, wl), torch.zeros(batch, c, hl, wl))
    model.decode_latents = lambda z: torch.zeros(batch, model.bands, size, size)
    model.inpaint(x, m, gsd=30.0, prompts="a river crossing farmland", guidance=guidance, steps=steps,
                  harmonize=False, callback=lambda i, n: stamps.append(_clock()),
                  noise=torch.zeros(batch, *model.latent_shape(size, size)))
    walls = [b[0] - a[0] for a, b in zip(stamps, stamps[1:])]
    cpus = [b[1] - a[1] for a, b in zip(stamps, stamps[1:])]
    i = min(range(len(walls)), key=lambda k: cpus[k])
    return walls[i], cpus[i]


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--steps", type=int, default=3, help="denoising steps per timing (first is warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--guidance", type=float, default=GUIDANCE)
    ap.add_argument("--write-docs", type=Path, default=None, help="replace the table between markers in this file")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Text2Earth(default_config()).eval().requires_grad_(False)
    cpu = _cpu_name()
    print(f"# {cpu}; torch {torch.__version__}; {args.threads} threads", flush=True)
    rates = {"fp32": matmul_rate(torch.float32), "bf16": matmul_rate(torch.bfloat16)}
    for k, (rw, rc) in rates.items():
        print(f"matmul 2048² {k}: {rw:.1f} GFLOP/s wall, {rc:.1f} GFLOP per CPU-s", flush=True)
    flops = {s: unet_flops(model, s) for s in args.sizes}

    rows = []
    t_start = time.perf_counter()
    for size in args.sizes:
        for batch in args.batches:
            for guidance in (0.0, args.guidance):
                for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
                    n_unet = batch * (2 if guidance else 1)
                    f = flops[size] * n_unet
                    wall, cpu_s = step_time(model, size, batch, guidance, dtype, args.steps)
                    frac = (f / cpu_s / 1e9) / rates[name][1]
                    rows.append((size, batch, guidance, name, n_unet, f / 1e9, wall, cpu_s, frac))
                    print(f"{size:4d}px b{batch} ω={guidance:g} {name}: {wall:.3f} s/step wall, "
                          f"{cpu_s:.3f} CPU-s, {f / 1e9:.2f} GFLOP, {100 * frac:.1f}% of matmul bound", flush=True)
    elapsed = time.perf_counter() - t_start

    md = _table(rows, rates, cpu, args, elapsed)
    print()
    print(md)
    if args.write_docs is not None:
        _write(args.write_docs, md)
    return md


def _table(rows, rates, cpu, args, elapsed) -> str:
    lines = [f"Machine: {cpu}, torch {torch.__version__}, `torch.set_num_threads({args.threads})`, "
             f"default_config() (random weights), DDIM, guidance ω = {args.guidance:g} vs 0. "
             f"Matmul 2048²: fp32 {rates['fp32'][0]:.0f} GFLOP/s wall / {rates['fp32'][1]:.0f} GFLOP per CPU-s; "
             f"bf16 {rates['bf16'][0]:.0f} / {rates['bf16'][1]:.0f}. Timing loop took {elapsed:.0f} s.",
             "",
             "| tile px | batch | ω | dtype | UNet samples | GFLOP/step | s/step (wall) | CPU-s/step | "
             "fraction of matmul bound |",
             "|---:|---:|---:|:---|---:|---:|---:|---:|---:|"]
    for size, batch, g, name, n, gf, wall, cpu_s, frac in rows:
        lines.append(f"| {size} | {batch} | {g:g} | {name} | {n} | {gf:.2f} | {wall:.3f} | {cpu_s:.3f} | "
                     f"{100 * frac:.1f} % |")
    # ratios: bf16 speed-up and guidance cost, from CPU time
    by = {(r[0], r[1], r[2], r[3]): r[7] for r in rows}
    sp = [by[(s, b, g, "fp32")] / by[(s, b, g, "bf16")] for (s, b, g, d) in by if d == "fp32"]
    gc = [by[(s, b, args.guidance, d)] / by[(s, b, 0.0, d)] for (s, b, g, d) in by if g == 0.0]
    lines += ["", f"bf16 autocast speed-up (CPU time, fp32/bf16): {min(sp):.2f}–{max(sp):.2f}×; "
                  f"guidance cost (ω>0 vs ω=0): {min(gc):.2f}–{max(gc):.2f}×."]
    return "\n".join(lines)


def _write(path: Path, md: str) -> None:
    text = path.read_text() if path.exists() else ""
    block = f"{START}\n{md}\n{END}"
    if START in text and END in text:
        text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    print(f"table written to {path}")


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
