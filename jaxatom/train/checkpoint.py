"""Orbax checkpoints of the whole training state: ``latest`` (every epoch) and ``best`` (best validation loss)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxatom.train.step import TrainState

__all__ = ["Checkpoints"]


class Checkpoints:
    """Two orbax managers under ``run_dir/checkpoints``; each keeps one checkpoint of ``(TrainState, metadata)``.

    Orbax writes a checkpoint to a temporary directory and renames it when complete, so a crash during a save leaves
    the previous checkpoint intact.
    """

    def __init__(self, run_dir: str | Path) -> None:
        root = Path(run_dir).resolve() / "checkpoints"
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
        self.paths = {name: root / name for name in ("latest", "best")}
        self.managers = {
            name: ocp.CheckpointManager(path, options=options, item_names=("state", "meta"))
            for name, path in self.paths.items()
        }

    def save(self, name: str, epoch: int, state: TrainState, meta: dict[str, Any]) -> None:
        """Write ``state`` and JSON-serialisable ``meta`` as checkpoint ``name`` for ``epoch``."""
        manager = self.managers[name]
        manager.save(
            epoch,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        manager.wait_until_finished()

    def latest_epoch(self, name: str = "latest") -> int | None:
        return self.managers[name].latest_step()

    def restore(self, name: str, template: TrainState) -> tuple[TrainState, dict[str, Any]]:
        """The newest checkpoint ``name``, restored into the structure of ``template``."""
        manager = self.managers[name]
        epoch = manager.latest_step()
        if epoch is None:
            raise FileNotFoundError(f"no {name} checkpoint in {self.paths[name]}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        restored = manager.restore(
            epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        )
        return restored["state"], restored["meta"]

    def describe(self, name: str) -> str:
        """Where checkpoint ``name`` is, for messages."""
        epoch = self.latest_epoch(name)
        return f"{self.paths[name] / str(epoch)}" if epoch is not None else f"none yet in {self.paths[name]}"

    def close(self) -> None:
        for manager in self.managers.values():
            manager.close()
