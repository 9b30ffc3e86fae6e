"""Where a ``jaxatom learn`` run keeps its files, and the loop's position (generation, stage), written atomically.

::

    run_dir/
      learn_config.yaml         the configuration the run was started with
      state.json                {"generation": g, "stage": "explore"}: the stage to do next
      data/labels.h5            every label so far (first labels + each generation's), with provenance
      data/test.h5              the fixed held-out set
      gen_000/train/            the ensemble's training run (labels.h5: the labels it was trained on)
      gen_000/explore/md.h5     gated MD of every temperature (+ its checkpoint; md.json once finished)
      gen_000/select/selected.extxyz, summary.json
      gen_000/label/labels.h5, failures.jsonl
      gen_000/summary.json      the generation's report row
      report.csv, report.png
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from jaxatom.files import write_atomically

__all__ = ["STAGES", "LoopState", "Layout", "write_atomically"]

#: The stages of a generation, in order. The last generation only trains (to score the last labels).
STAGES = ("train", "explore", "select", "label", "add")


@dataclasses.dataclass(frozen=True)
class LoopState:
    """The stage the loop does next: ``stage`` of ``generation`` (``"done"`` once every generation is)."""

    generation: int = 0
    stage: str = STAGES[0]

    def next(self, generations: int) -> LoopState:
        """The state after this stage; the final generation (``generations``) only trains."""
        if self.generation == generations:
            return LoopState(generations, "done")
        index = STAGES.index(self.stage)
        if index + 1 < len(STAGES):
            return LoopState(self.generation, STAGES[index + 1])
        return LoopState(self.generation + 1, STAGES[0])


@dataclasses.dataclass(frozen=True)
class Layout:
    """The paths of one run directory (see the module docstring)."""

    run_dir: Path

    @property
    def config(self) -> Path:
        return self.run_dir / "learn_config.yaml"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "state.json"

    @property
    def labels(self) -> Path:
        return self.run_dir / "data" / "labels.h5"

    @property
    def test(self) -> Path:
        return self.run_dir / "data" / "test.h5"

    @property
    def report(self) -> Path:
        return self.run_dir / "report.csv"

    def generation(self, g: int) -> Path:
        return self.run_dir / f"gen_{g:03d}"

    def train_dir(self, g: int) -> Path:
        return self.generation(g) / "train"

    def explore_dir(self, g: int) -> Path:
        return self.generation(g) / "explore"

    def select_dir(self, g: int) -> Path:
        return self.generation(g) / "select"

    def label_dir(self, g: int) -> Path:
        return self.generation(g) / "label"

    def summary(self, g: int) -> Path:
        return self.generation(g) / "summary.json"

    def read_state(self) -> LoopState:
        if not self.state_file.exists():
            return LoopState()
        return LoopState(**json.loads(self.state_file.read_text()))

    def write_state(self, state: LoopState) -> None:
        write_atomically(self.state_file, json.dumps(dataclasses.asdict(state)))

    def read_summary(self, g: int) -> dict:
        path = self.summary(g)
        return json.loads(path.read_text()) if path.exists() else {"generation": g}

    def update_summary(self, g: int, **values) -> None:
        """Merge ``values`` into generation ``g``'s report row."""
        write_atomically(self.summary(g), json.dumps({**self.read_summary(g), **values}, indent=1))
