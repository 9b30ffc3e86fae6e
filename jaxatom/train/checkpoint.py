"""Orbax checkpoints of the whole training state: ``latest`` (every epoch) and ``best`` (best validation loss); the
lock that keeps a second process from training into the same run directory."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxatom.errors import OutputExistsError
from jaxatom.files import exclusive_lock
from jaxatom.train.step import TrainState

__all__ = ["Checkpoints", "run_lock", "LOCK_FILE"]

#: The lock file in a run directory; held (``flock``) by the process that trains into it.
LOCK_FILE = "train.lock"
#: Where jaxatom 0.1 kept the energy head's parameters, and where they are now.
LEGACY_KEY, ENERGY_KEY = "head", "energy"


def _is_model_params(tree: Any) -> bool:
    return isinstance(tree, dict) and "representation" in tree


def _has_energy_head(template: TrainState) -> bool:
    return ENERGY_KEY in template.params.get("params", {}) and LEGACY_KEY not in template.params.get("params", {})


def _renamed(state: TrainState, old: str, new: str) -> TrainState:
    """``state`` with the parameter key ``old`` renamed ``new`` wherever model parameters appear (parameters,
    optimiser moments, EMA). Both keys sort before ``representation``, so the leaves keep their order."""

    def rename(tree: Any) -> Any:
        if not _is_model_params(tree):
            return tree
        return {(new if key == old else key): value for key, value in tree.items()}

    return jax.tree.map(rename, state, is_leaf=_is_model_params)


def run_lock(run_dir: str | Path) -> contextlib.AbstractContextManager:
    """The lock that keeps a second live process from training into ``run_dir`` (``run_dir/train.lock``)."""
    return exclusive_lock(Path(run_dir) / "train", f"the training run {run_dir}", "train into another run_dir")


class Checkpoints:
    """Two orbax managers under ``run_dir/checkpoints``; each keeps one checkpoint of ``(TrainState, metadata)``.

    Orbax writes a checkpoint to a temporary directory and renames it when complete, so a crash during a save leaves
    the previous checkpoint intact (the temporary directory is removed when the run is opened again).
    """

    def __init__(self, run_dir: str | Path) -> None:
        root = Path(run_dir).resolve() / "checkpoints"
        options = ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, enable_async_checkpointing=False, cleanup_tmp_directories=True
        )
        self.paths = {name: root / name for name in ("latest", "best")}
        self.managers = {
            name: ocp.CheckpointManager(path, options=options, item_names=("state", "meta"))
            for name, path in self.paths.items()
        }

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def save(self, name: str, epoch: int, state: TrainState, meta: dict[str, Any]) -> None:
        """Write ``state`` and JSON-serialisable ``meta`` as checkpoint ``name`` for ``epoch``, replacing one of the
        same epoch (a ``best`` checkpoint saved just before a kill, when the resumed run repeats that epoch)."""
        manager = self.managers[name]
        if epoch in manager.all_steps():
            manager.delete(epoch)
        manager.save(
            epoch,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        manager.wait_until_finished()

    def latest_epoch(self, name: str = "latest") -> int | None:
        return self.managers[name].latest_step()

    def meta(self, name: str = "latest") -> dict[str, Any] | None:
        """The metadata of the newest checkpoint ``name`` (without restoring its state), or None if there is none."""
        manager = self.managers[name]
        epoch = manager.latest_step()
        if epoch is None:
            return None
        return manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, name: str, template: TrainState) -> tuple[TrainState, dict[str, Any]]:
        """The newest checkpoint ``name``, restored into the structure of ``template``. Checkpoints of jaxatom 0.1
        (the energy head's parameters under ``head``) restore into energy models; a checkpoint of another model
        raises :class:`~jaxatom.errors.OutputExistsError` naming the run directory."""
        manager = self.managers[name]
        epoch = manager.latest_step()
        if epoch is None:
            raise FileNotFoundError(f"no {name} checkpoint in {self.paths[name]}")
        try:
            state, meta = self._restore(epoch, name, template)
        except ValueError as err:
            if "do not match" not in str(err):
                raise
            if not _has_energy_head(template):
                raise self._mismatch(name) from err
            try:
                state, meta = self._restore(epoch, name, _renamed(template, ENERGY_KEY, LEGACY_KEY))
            except ValueError as legacy_err:
                raise self._mismatch(name) from legacy_err
            state = _renamed(state, LEGACY_KEY, ENERGY_KEY)
        return state, meta

    def _restore(self, epoch: int, name: str, template: TrainState) -> tuple[TrainState, dict[str, Any]]:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        restored = self.managers[name].restore(
            epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        )
        return restored["state"], restored["meta"]

    def _mismatch(self, name: str) -> OutputExistsError:
        return OutputExistsError(
            f"the {name} checkpoint in {self.paths[name]} was written for another model (its parameters do not "
            "match this model's layout); train this model into another run_dir, or resume with the model and "
            "heads that run used"
        )

    def describe(self, name: str) -> str:
        """Where checkpoint ``name`` is, for messages."""
        epoch = self.latest_epoch(name)
        return f"{self.paths[name] / str(epoch)}" if epoch is not None else f"none yet in {self.paths[name]}"

    def close(self) -> None:
        for manager in self.managers.values():
            manager.close()
