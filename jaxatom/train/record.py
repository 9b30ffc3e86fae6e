"""What a run trained from Python records in its directory, so that it reads like a ``jaxatom train`` run.

``jaxatom train`` writes ``run_config.yaml`` and ``split.npz``; :func:`~jaxatom.train.fit` called from a script writes
the same two files when its data sets come from a file or a shipped set (:attr:`Dataset.origin`): the data section
names that origin and the split holds the rows trained and validated on, with every other row as the test set. Then
``jaxatom evaluate RUN_DIR`` and :func:`jaxatom.evaluate` find the test set for either kind of run.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from pathlib import Path

import numpy as np
import yaml

from jaxatom.data import Dataset
from jaxatom.errors import ConfigError
from jaxatom.files import write_atomically
from jaxatom.nn.registry import module_config
from jaxatom.potential import Potential
from jaxatom.train.config import TrainConfig

__all__ = ["RECORD_MARK", "record_python_run"]

#: The first line of a ``run_config.yaml`` that :func:`record_python_run` wrote (and may rewrite).
RECORD_MARK = "# written by jaxatom.train.fit: the data and split this run was trained on"


def _recorded_by_fit(path: Path) -> bool:
    with open(path) as file:
        return file.readline().rstrip("\n") == RECORD_MARK


def _same_origin(*parts: Dataset | None) -> bool:
    given = [part for part in parts if part is not None]
    return given[0].origin is not None and all(part.origin == given[0].origin for part in given)


def _split(train: Dataset, val: Dataset, test: Dataset | None) -> dict[str, np.ndarray]:
    train_idx, val_idx = train.origin_rows, val.origin_rows
    if test is not None:
        test_idx = test.origin_rows
    else:
        test_idx = np.setdiff1d(np.arange(train.origin.size), np.concatenate([train_idx, val_idx]))
    return {"train_idx": train_idx, "val_idx": val_idx, "test_idx": test_idx}


def _model_section(potential: Potential) -> dict:
    model = potential.model
    if model.base is not None:
        raise ConfigError("a Δ-model's base is not described by a run configuration")
    return {"representation": module_config(model.representation), "heads": [module_config(h) for h in model.heads]}


def record_python_run(
    run_dir: Path, potential: Potential, train: Dataset, val: Dataset, config: TrainConfig, test: Dataset | None = None
) -> bool:
    """Write ``run_config.yaml`` and ``split.npz`` into ``run_dir`` for a run started from Python, unless a
    ``jaxatom train`` configuration is there already or the data has no file behind it (built in memory, or the
    parts from different files). The test split is ``test``'s rows, else every row neither trained nor validated
    on. Returns whether it wrote them."""
    config_path = run_dir / "run_config.yaml"
    if (config_path.exists() and not _recorded_by_fit(config_path)) or not _same_origin(train, val, test):
        return False
    from jaxatom.train.run import RunConfig  # run builds on fit, which calls this

    split = _split(train, val, test)
    data = {**train.origin.data, "train": len(train), "val": len(val), "test": len(split["test_idx"])}
    try:
        settings = {"run_dir": str(run_dir), "data": data, "model": _model_section(potential),
                    "training": dataclasses.asdict(config)}  # fmt: skip
        text = yaml.safe_dump(RunConfig.load(settings).to_dict(), sort_keys=False)
    except ConfigError as err:
        warnings.warn(f"{run_dir}: not recording the run's configuration ({err}); evaluate it with a data file",
                      stacklevel=3)  # fmt: skip
        return False
    buffer = io.BytesIO()
    np.savez(buffer, **split)
    write_atomically(run_dir / "split.npz", buffer.getvalue())
    write_atomically(config_path, f"{RECORD_MARK}\n{text}")
    return True
