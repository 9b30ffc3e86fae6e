#!/usr/bin/env bash
# Create the CPU-only SchNetPack environment that benchmarks/bench_inference.py runs as its comparison worker.
#
#   benchmarks/setup_schnetpack_env.sh [VENV_PATH]        # default: .venv-schnetpack
#
# torch is pinned to 2.13.0 through a constraints file for every pip call, so pip never swaps in another (CUDA) build
# to satisfy a dependency. schnetpack 2.2.0 is installed without its dependency resolution (its metadata pins an older
# Python/torch range); schnetpack 2.1.1 does not import with torch 2.13 (it imports the removed ``T_co``).
#
# Environment overrides: PYTHON (interpreter for the venv, default python3), TORCH_INDEX_URL (an extra index to take the
# torch wheel from, e.g. PyTorch's CPU wheel index on machines where pip's own indexes offer only CUDA builds; default:
# none, pip's configured indexes and find-links).
set -euo pipefail

VENV="${1:-.venv-schnetpack}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
SCHNETPACK_VERSION="2.2.0"
TORCH_INDEX_URL="${TORCH_INDEX_URL-}"

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==${TORCH_VERSION}" >"$constraints"

"$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install -c "$constraints")

torch_index=()
if [[ -n "$TORCH_INDEX_URL" ]]; then
    torch_index=(--extra-index-url "$TORCH_INDEX_URL")
fi
"${pip[@]}" "${torch_index[@]}" "torch==${TORCH_VERSION}"
"$VENV/bin/python" -c "import sys, torch; sys.exit(f'torch {torch.__version__} is a CUDA build') if torch.version.cuda \
else print('torch', torch.__version__, '(CPU build)')"

"${pip[@]}" ase h5py pyyaml hydra-core pytorch-lightning torchmetrics hydra-colorlog rich fasteners dirsync torch-ema \
    matscipy tensorboardX tqdm vesin progressbar petname tensorboard
"${pip[@]}" --no-deps --ignore-requires-python "schnetpack==${SCHNETPACK_VERSION}"

"$VENV/bin/python" -c "import schnetpack, torch; print('schnetpack', schnetpack.__version__, 'torch', torch.__version__)"
echo "ready: run benchmarks with --spk-python $VENV/bin/python"
