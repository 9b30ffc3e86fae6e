"""Strip outputs, execution counts and run metadata from notebooks, so they are committed clean.

python tools/strip_notebooks.py                 # every notebooks/*.ipynb
python tools/strip_notebooks.py a.ipynb b.ipynb
python tools/strip_notebooks.py --check         # exit 1 (naming them) if any notebook has outputs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
KEEP_CELL_METADATA = ("tags",)


def strip(notebook: nbformat.NotebookNode) -> bool:
    """Remove outputs, execution counts and cell metadata other than tags; return whether anything changed."""
    changed = False
    for cell in notebook.cells:
        metadata = {key: value for key, value in cell.get("metadata", {}).items() if key in KEEP_CELL_METADATA}
        if metadata != cell.get("metadata", {}):
            cell["metadata"], changed = metadata, True
        if cell.cell_type == "code":
            if cell.outputs or cell.execution_count is not None:
                changed = True
            cell.outputs, cell.execution_count = [], None
    for key in ("widgets", "papermill", "execution"):
        if key in notebook.metadata:
            del notebook.metadata[key]
            changed = True
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="only report notebooks that need stripping")
    args = parser.parse_args(argv)
    paths = args.paths or sorted((ROOT / "notebooks").glob("*.ipynb"))
    dirty = []
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        if strip(notebook):
            dirty.append(path)
            if not args.check:
                nbformat.write(notebook, path)
    for path in dirty:
        print(f"{'has outputs' if args.check else 'stripped'}: {path}")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
