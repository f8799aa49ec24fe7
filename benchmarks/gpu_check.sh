#!/usr/bin/env bash
# The GPU check of issue 14, one short script for a machine with a CUDA device (a lent accelerator
# or a user's own): `make bench-gpu`'s rows (benchmarks.gpu: CNN steps against a hand-written
# loop, 8 seeds of a BN cell trained together, a 4-run sweep with 1 and 2 workers sharing the GPU;
# the BN layer against torch's) on the GPU, into $OUT (default benchmarks/gpu/).
#
# Python: the machine's python3 with its own torch (>= 2.4) is used as it is, with this checkout
# on PYTHONPATH. Packages it lacks (pydantic, say, on an offline machine) travel as wheels in
# .whl/ (git-ignored; see benchmarks/README.md) and are installed into /tmp/site first.
# Usage: bash benchmarks/gpu_check.sh [extra `python -m benchmarks.run` arguments, e.g. --repeats 3]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
"$PY" - <<'PY' 2>&1 | tee "$OUT/device.txt"
import torch
assert torch.cuda.is_available(), "torch sees no CUDA device"
print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))
import bnexp.config, bnexp.training.train  # every dependency importable
PY
"$PY" -m benchmarks.run --device cuda --out "$OUT/results.csv" "$@" 2>&1 | tee "$OUT/bench.log"
