"""MD checkpoints: the whole state of a run in one ``.npz``, written atomically, keyed by the state's field names
(``state/positions``, ``state/thermostat.momentum``, ...), with the run's settings and a fingerprint of the model.

A checkpoint restores only into a state of the same fields and shapes: a field missing, added or reshaped refuses
the checkpoint by name (:class:`CheckpointMismatch`) instead of filling the wrong fields. Checkpoints of jaxatom 0.1,
which stored the state's leaves by position (``leaf_0000``, ...), are read in that order, which is the order of
today's fields they had.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxatom.errors import DiskFullError, JaxAtomError
from jaxatom.files import format_bytes, free_bytes, is_disk_full
from jaxatom.md.integrators import MDState
from jaxatom.md.neighbors import bead_cells

__all__ = ["CheckpointMismatch", "model_fingerprint", "save_checkpoint", "load_checkpoint"]

_STATE = "state/"


class CheckpointMismatch(JaxAtomError, ValueError):
    """The checkpoint next to an output file was written by a run with different settings or another model."""


def model_fingerprint(params: Any, renamed: dict[str, str] | None = None) -> str:
    """SHA-256 of a force field's parameters (names, shapes, dtypes and values), to tie a checkpoint to its model;
    ``renamed`` replaces parts of the parameter names (to compute the fingerprint of an earlier layout)."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        array = np.asarray(leaf)
        name = jax.tree_util.keystr(path)
        for old, new in (renamed or {}).items():
            name = name.replace(old, new)
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _named_leaves(state: MDState) -> dict[str, Any]:
    """``{"state/<field path>": leaf}`` of the state without its neighbour list."""
    leaves = jax.tree_util.tree_flatten_with_path(state.replace(neighbors=None))[0]
    return {_STATE + jax.tree_util.keystr(path, simple=True, separator="."): leaf for path, leaf in leaves}


def save_checkpoint(path: Path, state: MDState, n_frames: int, setup) -> None:
    """Write the full state atomically (temporary file + rename), so a crash leaves the previous checkpoint intact.
    ``setup`` supplies ``settings`` and ``model_fingerprint``."""
    arrays = {name: np.asarray(leaf) for name, leaf in _named_leaves(state).items()}
    meta = {
        "n_frames": n_frames,
        "step": int(state.step),
        "settings": setup.settings,
        "model_sha256": setup.model_fingerprint,
    }
    if state.neighbors is not None:
        nbrs = state.neighbors
        arrays.update(
            nbr_idx=np.asarray(nbrs.idx),
            nbr_reference=np.asarray(nbrs.reference_position),
            nbr_error=np.asarray(nbrs.error.code),
        )
        meta.update(capacity=nbrs.max_occupancy, cell_capacity=nbrs.cell_list_capacity)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if not is_disk_full(err):
            raise
        needed = sum(a.nbytes for a in arrays.values())
        raise DiskFullError(
            f"the disk holding the MD checkpoint {path} is full: it needs about {format_bytes(needed)}, "
            f"{format_bytes(free_bytes(path))} are free"
        ) from err
    os.replace(tmp, path)


def load_checkpoint(path: Path, template: MDState, setup) -> tuple[MDState, int]:
    """The state a checkpoint holds (in the layout of ``template``) and its frame count; ``setup`` supplies the
    settings, fingerprints and the force field's edge builder."""
    with np.load(path) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        _check_matches(path, meta, setup)
        state = _restore_state(path, data, template)
        neighbors = None
        if "nbr_idx" in data:
            edges = setup.force_field.edges
            flat = np.asarray(state.positions).reshape(-1, edges.n_atoms, 3)
            cells = None if state.cell is None else bead_cells(state.cell, len(flat))
            fresh = edges.allocate(flat, meta["capacity"], meta["cell_capacity"] or 0, cells)
            neighbors = edges.restore(fresh, data["nbr_idx"], data["nbr_reference"], data["nbr_error"])
    return state.replace(neighbors=neighbors), int(meta["n_frames"])


def _restore_state(path: Path, data, template: MDState) -> MDState:
    """Fill ``template``'s fields by name (or, for 0.1 checkpoints, by position), refusing any disagreement."""
    expected = _named_leaves(template)
    names = list(expected)
    if _STATE + "positions" not in data and "leaf_0000" in data:  # jaxatom 0.1: leaves by position
        data = {name: data[f"leaf_{i:04d}"] for i, name in enumerate(names) if f"leaf_{i:04d}" in data}
    stored = [key for key in data.keys() if key.startswith(_STATE)]
    problems = []
    if missing := [name for name in names if name not in stored]:
        problems.append(f"missing {', '.join(missing)}")
    if unexpected := [name for name in stored if name not in expected]:
        problems.append(f"unexpected {', '.join(unexpected)}")
    if wrong := [f"{name} {data[name].shape} (expected {np.shape(expected[name])})" for name in names
                 if name in stored and data[name].shape != np.shape(expected[name])]:  # fmt: skip
        problems.append(f"other shapes: {'; '.join(wrong)}")
    if problems:
        raise CheckpointMismatch(
            f"the checkpoint {path} holds another state than this run's ({'; '.join(problems)}); rerun with the "
            "original settings and jaxatom version, or pass overwrite=True to start afresh"
        )
    leaves = [jnp.asarray(data[name]) for name in names]
    return jax.tree.unflatten(jax.tree.structure(template.replace(neighbors=None)), leaves)


def _check_matches(path: Path, meta: dict, setup) -> None:
    """Refuse to continue from a checkpoint written with other settings or another model (checkpoints written
    before models were fingerprinted are accepted on their settings alone, those of jaxatom 0.1 by the fingerprint it
    gave the model)."""
    now = setup.settings
    settings = setup.comparable_settings(meta["settings"])
    if settings != now:
        keys = sorted(settings.keys() | now.keys())
        changed = {k: (settings.get(k), now.get(k)) for k in keys if now.get(k) != settings.get(k)}
        raise CheckpointMismatch(
            f"the checkpoint {path} was written with other settings (checkpoint, now): {changed}; rerun with "
            "the original settings to continue, or pass overwrite=True to start afresh"
        )
    if meta.get("model_sha256", setup.model_fingerprint) not in (setup.model_fingerprint, setup.legacy_fingerprint):
        raise CheckpointMismatch(
            f"the checkpoint {path} was written with another model (its parameters differ); rerun with the "
            "original model to continue, or pass overwrite=True to start afresh with this one"
        )
