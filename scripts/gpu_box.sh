#!/usr/bin/env bash
# One training run on a GPU machine that has torch but not the raster stack (or the package's
# other dependencies), with a time limit, handing back the model in pieces small enough for a
# transfer limit. The training itself is `geot2e train`, the same loop as everywhere.
#
#   bash scripts/gpu_box.sh CONFIG [MINUTES]
#
# What it expects in the checkout (prepare both on the CPU machine; docs/training.md,
# "On a machine with a GPU but no raster stack"):
#   .gpu/pack.tar.xz   the config's tile pack:  geot2e train configs/default.yaml --write-pack .gpu/pack
#                      && tar -cJf .gpu/pack.tar.xz -C .gpu pack
#   .whl/*.whl         the pure-Python wheels the box lacks, for its Python, e.g.
#                      pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#                          diffusers open_clip_torch ftfy wcwidth
# CONFIG names `pack: .gpu/pack` and its stage budgets must fit MINUTES (default 8; startup,
# unpacking and the export take about one more).
# Environment: PY (python, default python3), SITE (where the wheels go, default
# /tmp/geot2e-site), OUT (where the pieces go, default .gpu/out).
set -euo pipefail
cfg=${1:?usage: bash scripts/gpu_box.sh CONFIG [MINUTES]}
minutes=${2:-8}
py=${PY:-python3}
site=${SITE:-/tmp/geot2e-site}
out=${OUT:-.gpu/out}
mkdir -p "$site" "$out"

shopt -s nullglob
wheels=(.whl/*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
  "$py" -m pip install -q --no-deps --no-index --target "$site" "${wheels[@]}"
fi
[ -d .gpu/pack ] || tar -xJf .gpu/pack.tar.xz -C .gpu
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

rc=0
timeout --signal=INT "$((minutes * 60))" "$py" -m geot2e.cli train "$cfg" --no-progress || rc=$?
echo "geot2e train exited with $rc (124: the time limit; a rerun resumes from the last save)"

# the most advanced model of the run, float16, in pieces of < 15 MiB
"$py" - "$cfg" "$out" <<'PY'
import sys
from pathlib import Path

import torch

from geot2e.models import from_pretrained, save_pretrained
from geot2e.train.schema import load_train_config

cfg = load_train_config(sys.argv[1])
run = Path(cfg.out_dir)
for cand in ("final", "decoder/model", "denoiser/model", "vae/model"):
    if (run / cand / "config.json").is_file():
        model = from_pretrained(run / cand)
        dst = save_pretrained(model, Path(sys.argv[2]) / "model", dtype=torch.float16, max_shard_mb=15)
        print(f"exported {run / cand} -> {dst}")
        break
else:
    print(f"no model in {run} to export")
for log in run.glob("*/state.json"):            # the training logs (losses, rates, validation)
    (Path(sys.argv[2]) / f"{log.parent.name}_state.json").write_bytes(log.read_bytes())
PY
ls -l "$out" "$out/model" 2>/dev/null || true
exit 0
