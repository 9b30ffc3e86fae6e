"""The notebooks in notebooks/: committed without outputs, first code cell the install cell, and each runs from top
to bottom in FAST mode (``JAXATOM_FAST=1``: tiny models, few steps) in a fresh kernel, in a scratch directory."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbclient  # the test extra has them: a missing runner fails here rather than skipping every notebook
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: What the first code cell of every notebook starts with: install jaxatom only where it does not import.
INSTALL_MARKERS = ('importlib.util.find_spec("jaxatom") is None', "pip", "install")
CELL_TIMEOUT_S = 600


def _ids(paths: list[Path]) -> list[str]:
    return [path.stem for path in paths]


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb files"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_without_outputs_and_with_the_install_cell(path: Path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    with_outputs = [k for k, cell in enumerate(code) if cell.outputs or cell.execution_count is not None]
    assert not with_outputs, (
        f"{path.name}: code cells {with_outputs} have outputs or execution counts; "
        "strip them with `python tools/strip_notebooks.py`"
    )
    first = code[0].source
    missing = [marker for marker in INSTALL_MARKERS if marker not in first]
    assert not missing, f"{path.name}: the first code cell is not the install cell (lacks {missing}):\n{first}"
    assert "JAXATOM_FAST" in code[1].source, f"{path.name}: the second code cell must read JAXATOM_FAST"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_runs_in_fast_mode(path: Path, tmp_path: Path):
    notebook = nbformat.read(path, as_version=4)
    pythonpath = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {
        **os.environ,
        "JAXATOM_FAST": "1",
        "PYTHONPATH": pythonpath,  # the kernel imports this checkout's jaxatom
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory: runs/ and md/ land here
    )
    start = time.perf_counter()
    # nbclient passes extra keyword arguments of execute() on to the kernel manager's start_kernel
    client.execute(env=env, cwd=str(tmp_path))
    elapsed = time.perf_counter() - start
    print(f"{path.name}: {elapsed:.0f} s in FAST mode", file=sys.stderr)
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors
