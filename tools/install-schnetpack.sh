#!/usr/bin/env bash
# Install torch 2.13.0 (CPU) and SchNetPack 2.2.0 into the current Python environment (or $PYTHON's), for importing
# SchNetPack models and for the parity tests and benchmarks.
#
# Why not `pip install schnetpack`: on Python 3.11 pip picks schnetpack 2.1.x, whose `sympy<=1.12` pin drags torch down
# to an old CUDA build, and 2.1.x does not import with torch 2.13. schnetpack 2.2.0 declares Python >= 3.12 but works
# on 3.11, so its dependencies are installed first and the package itself without dependency resolution. A constraints
# file holds torch at 2.13.0 for every step, so no step swaps in another (CUDA) build.
#
# Environment: PYTHON (default: python), TORCH_INDEX_URL (an extra index for the torch wheel, e.g. PyTorch's CPU index
# where pip's own indexes offer only CUDA builds; default: none).
set -euo pipefail

PYTHON="${PYTHON:-python}"
TORCH_VERSION="2.13.0"
SCHNETPACK_VERSION="2.2.0"

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==${TORCH_VERSION}" >"$constraints"
pip=("$PYTHON" -m pip install -c "$constraints")

torch_index=()
if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
    torch_index=(--extra-index-url "$TORCH_INDEX_URL")
fi
"${pip[@]}" "${torch_index[@]}" "torch==${TORCH_VERSION}"
"${pip[@]}" "sympy>=1.13" ase h5py pyyaml hydra-core pytorch-lightning torchmetrics hydra-colorlog rich fasteners \
    dirsync torch-ema matscipy tensorboardX tqdm vesin progressbar petname tensorboard
"${pip[@]}" --no-deps --ignore-requires-python "schnetpack==${SCHNETPACK_VERSION}"
"$PYTHON" -c "import schnetpack, torch; print('schnetpack', schnetpack.__version__, 'torch', torch.__version__)"
