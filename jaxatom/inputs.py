"""Checks of the files a configuration names, light enough to run before JAX and the model code are imported, so
that a wrong path is refused at once with what to do instead."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxatom.config import apply_overrides, read_yaml

__all__ = ["STRUCTURE_HINT", "check_md_files", "check_model_path", "check_structure_path", "read_md_settings"]

#: How to get a structure file from the shipped data.
STRUCTURE_HINT = (
    'e.g. a frame of the shipped data: python -c "from jaxatom.data import load_builtin; '
    "load_builtin('aspirin').to_atoms(0).write('aspirin.xyz')\""
)


def check_model_path(model: Any, key: str = "model") -> None:
    """Refuse a model path (or each of a list: an ensemble) that does not exist, saying where models come from."""
    for path in model if isinstance(model, list | tuple) else [model]:
        if isinstance(path, str | Path) and not Path(path).exists():
            raise FileNotFoundError(
                f"{key}: {path} does not exist; give a model directory or .zip (jaxatom train writes "
                "RUN_DIR/best_model, jaxatom quickstart writes runs/quickstart/best_model)"
            )


def check_structure_path(structure: Any, key: str = "structure") -> None:
    """Refuse a structure file that does not exist, saying how to make one from the shipped data."""
    if isinstance(structure, str | Path) and not Path(structure).is_file():
        raise FileNotFoundError(
            f"{key}: {structure} does not exist; give any file ase.io.read reads (.xyz, .extxyz, .traj, .pdb, "
            f"...), {STRUCTURE_HINT}"
        )


def read_md_settings(path: str | Path | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The settings of a YAML MD configuration with ``key=value`` ``overrides`` applied (values parsed as YAML),
    relative ``model``, ``structure`` and ``output`` paths taken relative to the file's directory; a
    :class:`~jaxatom.errors.ConfigError` for a file that is not a YAML mapping or a bad override. Not yet validated
    as an ``MDConfig`` (see :func:`check_md_files`)."""
    config: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"MD configuration {path} not found")
        config = read_yaml(path)
        for key in ("model", "structure", "output"):  # relative paths are relative to the configuration file
            if isinstance(config.get(key), str) and not Path(config[key]).is_absolute():
                config[key] = str(path.parent / config[key])
    return apply_overrides(config, overrides, example="key=value")


def check_md_files(config: dict[str, Any]) -> None:
    """Refuse an MD configuration's model or structure file that does not exist (``FileNotFoundError`` naming it
    and what to give instead)."""
    check_model_path(config.get("model"))
    check_structure_path(config.get("structure"))
