"""Execute the notebooks of notebooks/ top to bottom and keep the executed copies.

    python scripts/run_notebooks.py                  # all five, full mode (default model, real scenes; minutes)
    python scripts/run_notebooks.py 01 05            # some of them (by number or file name)
    python scripts/run_notebooks.py --small          # small mode: seconds each (what tests/test_notebooks.py runs)
    python scripts/run_notebooks.py 05 --param GEOT2E_NOTEBOOK_N=2   # a notebook parameter

Each notebook runs in a fresh Jupyter kernel (nbclient) with its working directory in
notebooks/, its outputs (COGs, figures) in ``--out`` (default ``outputs/notebooks``), and the
executed copy, with every output, written there as ``<name>.executed.ipynb``. The committed
notebooks stay without outputs. The figures of the README are made this way (see their captions).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def find(names: list[str]) -> list[Path]:
    """Notebook paths for names like ``01``, ``01_real_clouds`` or ``01_real_clouds.ipynb`` (all when empty)."""
    every = sorted(NOTEBOOKS.glob("*.ipynb"))
    if not names:
        return every
    out = []
    for n in names:
        hits = [p for p in every if p.name == n or p.stem == n or p.name.startswith(f"{n}_")]
        if len(hits) != 1:
            raise SystemExit(f"run_notebooks: {n!r} names {len(hits)} notebooks; choose from "
                             + ", ".join(p.stem for p in every))
        out += hits
    return out


def execute(path: Path, *, out: Path, small: bool = False, model: str | None = None, timeout: int = 3600,
            params: dict[str, str] | None = None):
    """Run ``path`` in a fresh kernel with the parameter environment; return the executed notebook.

    The parameters go to the kernel's own environment (this process's is left as it is), so
    several notebooks can run side by side from threads."""
    import nbclient
    import nbformat

    env = {k: v for k, v in os.environ.items() if k not in ("GEOT2E_NOTEBOOK_SMALL", "MPLBACKEND")}
    # MPLBACKEND left out: the notebooks pick matplotlib's inline backend themselves
    env.update({"GEOT2E_NOTEBOOK_OUT": str(out), **(params or {})})
    if small:
        env["GEOT2E_NOTEBOOK_SMALL"] = "1"
    if model:
        env["GEOT2E_NOTEBOOK_MODEL"] = model
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute(env=env)
    return nb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="notebooks by number or name (default: all)")
    ap.add_argument("--small", action="store_true", help="small mode (seconds; quality means nothing)")
    ap.add_argument("--model", default=None, help="'default' or a checkpoint folder (default: the notebook's)")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "notebooks"), help="outputs and executed copies")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment parameter for the notebooks, e.g. GEOT2E_NOTEBOOK_N=2")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell (default 3600)")
    args = ap.parse_args(argv)
    import nbformat

    params = dict(p.split("=", 1) for p in args.param)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for path in find(args.names):
        t0 = time.perf_counter()
        nb = execute(path, out=out, small=args.small, model=args.model, timeout=args.timeout, params=params)
        copy = out / f"{path.stem}.executed.ipynb"
        nbformat.write(nb, copy)
        print(f"{path.name}: {time.perf_counter() - t0:.0f} s -> {copy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
