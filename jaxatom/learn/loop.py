"""``jaxatom learn``: first labels → [train ensemble → explore → select → label → add] × generations → train.

The loop's position (generation, stage) is written after every stage (:mod:`jaxatom.learn.layout`), and every
stage can be rerun after a kill (:mod:`jaxatom.learn.stages`), so a run that was stopped at any point continues
where it was with no label lost or added twice. Each generation's report row (labels used, errors on the held-out
set, calibration, uncertainty of the visited and the chosen structures, labels and failures) goes to
``report.csv`` and ``report.png``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

from jaxatom.data.formats import write_hdf5
from jaxatom.data.loader import fidelity_of
from jaxatom.errors import ConfigError
from jaxatom.files import exclusive_lock
from jaxatom.learn.config import LearnConfig
from jaxatom.learn.layout import Layout, LoopState, write_atomically
from jaxatom.learn.oracle import append_labels
from jaxatom.learn.report import write_report
from jaxatom.learn.stages import STAGE_FUNCTIONS, label_id, label_properties
from jaxatom.train.run import load_data, run_split

__all__ = ["learn"]

#: Settings a run may change when it is continued (everything else must stay as it was started).
RESUMABLE_CHANGES = ("generations",)


def _check_same_run(config: LearnConfig, layout: Layout) -> None:
    """Refuse to continue a run directory under other settings than it was started with (but more generations)."""
    if not layout.config.exists():
        return
    old = LearnConfig.load(yaml.safe_load(layout.config.read_text()), where=str(layout.config)).to_dict()
    new = config.to_dict()
    changed = sorted(key for key in new if key not in RESUMABLE_CHANGES and new[key] != old.get(key))
    if changed:
        raise ConfigError(
            f"{layout.run_dir} was started with other {', '.join(changed)} settings ({layout.config}); continue it "
            "with those (only generations may change) or choose another run_dir"
        )


def _first_labels(config: LearnConfig, layout: Layout) -> None:
    """Write the first labels (the data's train + val split) and the held-out set (at the expensive level), once."""
    if layout.labels.exists() and layout.test.exists():
        return
    dataset = load_data(config.data)
    split = run_split(config, dataset)
    if not layout.test.exists():
        test = split["test_idx"]
        if config.cheap_oracle is not None:
            test = test[fidelity_of(dataset)[test] == len(config.model.fidelities) - 1]
        partial = layout.test.with_name(".test.partial.h5")
        partial.parent.mkdir(parents=True, exist_ok=True)
        write_hdf5(dataset.subset(test), partial)
        partial.replace(layout.test)
    if not layout.labels.exists():
        first = [*split["train_idx"], *split["val_idx"]]
        source = str(config.data.builtin or config.data.path or config.data.source)
        structures = [dataset.to_atoms(int(i)) for i in first]
        ids = [label_id(atoms) for atoms in structures]
        provenance = {"generation": [-1] * len(first), "method": [source] * len(first),
                      "uncertainty": [float("nan")] * len(first), "structure_id": ids}  # fmt: skip
        append_labels(layout.labels, structures, provenance, properties=label_properties(config))


def learn(config: LearnConfig | Mapping, progress: bool = True) -> Path:
    """Run (or continue) the active-learning loop of ``config``; returns the report's path."""
    config = config if isinstance(config, LearnConfig) else LearnConfig.load(config)
    layout = Layout(Path(config.run_dir))
    with exclusive_lock(layout.run_dir / "learn", f"the active-learning run {layout.run_dir}"):
        _check_same_run(config, layout)
        write_atomically(layout.config, yaml.safe_dump(config.to_dict(), sort_keys=False))
        _first_labels(config, layout)
        state = layout.read_state()
        if state.stage == "done" and state.generation < config.generations:
            state = LoopState(state.generation, "explore")  # more generations than first asked for
        while state.stage != "done":
            STAGE_FUNCTIONS[state.stage](config, layout, state.generation, progress)
            state = state.next(config.generations)
            layout.write_state(state)
            write_report(layout, config.generations)
    return layout.report
