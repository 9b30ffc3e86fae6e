#!/usr/bin/env bash
# Run the benchmark suite on an NVIDIA GPU and rewrite the GPU sections of benchmarks/RESULTS.md.
#
#   bash benchmarks/gpu.sh            # from anywhere; PYTHON=... to choose the interpreter
#
# Installs what is missing with pip (JAX's CUDA 12 build at the installed jax version, jaxatom itself, and SchNetPack
# with tools/install-schnetpack.sh; SchNetPack is optional: without it its rows are left out with a note), prints the
# device, then runs `python -m benchmarks.suite --device gpu` under a 9-minute limit (LIMIT_S). Sized for about 8
# minutes: inference, training, properties, MD (1 molecule, 64 replicas, RPMD), replicas x4 to 16384 or the memory limit,
# copper at 10^3, 10^4 and 10^5 atoms (see BENCHMARKS in benchmarks/suite.py). Output: benchmarks/out/suite-gpu.md,
# benchmarks/out/suite-gpu/*.json, and the suite:gpu sections of RESULTS.md.
# SchNetPack runs on CUDA torch where torch sees the GPU: with no torch installed, TORCH_INDEX_URL (passed on to
# tools/install-schnetpack.sh, e.g. PyTorch's CUDA 12 index) chooses a CUDA build; otherwise torch runs on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
LIMIT_S="${LIMIT_S:-540}"

has_gpu() {
    "$PYTHON" - <<'PY' 2>/dev/null
import sys
import jax
sys.exit(0 if jax.devices()[0].platform == "gpu" else 1)
PY
}

if ! has_gpu; then
    version="$("$PYTHON" -c 'import jax; print(jax.__version__)' 2>/dev/null || echo 0.10.1)"
    echo "installing jax[cuda12]==${version}"
    "$PYTHON" -m pip install --quiet "jax[cuda12]==${version}"
fi
"$PYTHON" -c 'import jaxatom' 2>/dev/null || "$PYTHON" -m pip install --quiet -e .
"$PYTHON" -c 'import psutil' 2>/dev/null || "$PYTHON" -m pip install --quiet psutil
if ! "$PYTHON" -c 'import schnetpack, torch' 2>/dev/null; then
    PYTHON="$PYTHON" bash tools/install-schnetpack.sh || echo "SchNetPack not installed: its rows will be left out"
fi

"$PYTHON" - <<'PY'
import jax
print("JAX devices:", jax.devices(), "| jax", jax.__version__)
try:
    import torch
    print("torch", torch.__version__, "| CUDA:", torch.cuda.is_available() and torch.cuda.get_device_name(0))
except ImportError:
    print("torch: not installed")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

XLA_PYTHON_CLIENT_PREALLOCATE=false timeout "$LIMIT_S" "$PYTHON" -m benchmarks.suite --device gpu "$@"
