#!/usr/bin/env bash
# Create a separate virtual environment with torch 2.13.0 (CPU) and SchNetPack 2.2.0, the comparison worker of the
# benchmarks (they run SchNetPack in its own environment, jaxatom in the current one).
#
#   benchmarks/setup_schnetpack_env.sh [VENV_PATH]        # default: .venv-schnetpack
set -euo pipefail

VENV="${1:-.venv-schnetpack}"
"${PYTHON:-python3}" -m venv "$VENV"
PYTHON="$VENV/bin/python" "$(dirname "$0")/../tools/install-schnetpack.sh"
echo "ready: run benchmarks with --spk-python $VENV/bin/python"
