"""Every code block of the README runs as written, in order, in one fresh directory, with only its budgets made
small (:data:`SMALL`: each replacement must still match the README, so an edited block is never skipped silently).

Python blocks run in a fresh namespace each (a block may use only what it defines itself, and files earlier blocks
wrote); bash lines run in bash, except ``pip install`` (this test environment is that install); a YAML block whose
first line is ``# NAME.yaml — COMMAND`` is written to NAME.yaml and COMMAND is run; any other YAML block must be a
valid run configuration."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: README text -> what CI runs instead: smaller budgets only.
SMALL = {
    "pip install -e . && jaxatom quickstart": "jaxatom quickstart --minutes 0.05 --md-ps 0.02 --quiet",
    "TrainConfig(max_epochs=3, loss=loss)": "TrainConfig(max_epochs=1, loss=loss)",
    "steps=2000,\n    timestep_fs=0.5,\n    stride=2,": "steps=40,\n    timestep_fs=0.5,\n    stride=2,",
    "train=1000, val=100, test=1000)  # reused": "train=40, val=10, test=50)  # reused",
    "PaiNN(n_atom_basis=128, n_interactions=3), elements=ds.elements": "PaiNN(n_atom_basis=16, n_interactions=2), "
    "elements=ds.elements",
    "TrainConfig(max_epochs=200, max_time_s=3600)": "TrainConfig(max_epochs=1, max_time_s=3600)",
    '"max_epochs": 20, "learning_rate": 5e-3': '"max_epochs": 2, "learning_rate": 5e-3',
    '"max_epochs": 3, "ensemble": {"size": 4': '"max_epochs": 1, "ensemble": {"size": 4',
    "steps=20000,  # 10 ps of 16 replicas": "steps=40,  # 10 ps of 16 replicas",
    "n_replicas=16,": "n_replicas=2,",
    "jaxatom md md.yaml steps=40000": "jaxatom md md.yaml steps=40 stride=20",
    "jaxatom train aspirin.yaml training.max_epochs=500": "jaxatom train aspirin.yaml training.max_epochs=1 "
    "data.train=40 data.val=10 data.test=100 model.representation.n_atom_basis=16 --quiet",
    "generations=2 training.max_epochs=50 explore.steps=200": "generations=1 training.max_epochs=1 explore.steps=20 "
    "oracle.workers=0 --quiet",
}
#: Lines not run, with the reason.
NOT_RUN = {
    'pip install -e ".[test]" && python -m pytest': "the test command itself",
    "jaxatom import-schnetpack best_model": "needs a SchNetPack model file; test_schnetpack_import runs the command",
}
_FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def readme_blocks() -> list[dict]:
    """The README's code blocks, in order, with :data:`SMALL` applied: ``{"lang", "code", "line"}``."""
    text = README.read_text()
    missing = [old for old in SMALL if old not in text]
    assert not missing, f"SMALL no longer matches the README: {missing}"
    blocks = []
    for match in _FENCE.finditer(text):
        code = match.group(2)
        for old, new in SMALL.items():
            code = code.replace(old, new)
        blocks.append({"lang": match.group(1), "code": code, "line": text[: match.start()].count("\n") + 1})
    return blocks


RUNNER = r"""
import json, re, subprocess, sys, traceback
from pathlib import Path

import yaml

def run_bash(code):
    for line in code.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or line.startswith("pip install"):
            continue
        if any(line.startswith(skip) for skip in NOT_RUN):
            print("not run:", line, flush=True)
            continue
        subprocess.run(["bash", "-euo", "pipefail", "-c", line], check=True)

def run_yaml(code):
    first = code.splitlines()[0]
    match = re.match(r"# (\S+\.yaml) — (.*)", first)
    if match:
        Path(match.group(1)).write_text(code)
        subprocess.run(["bash", "-euo", "pipefail", "-c", match.group(2)], check=True)
    else:
        from jaxatom.train.run import RunConfig
        RunConfig.load(yaml.safe_load(code))

blocks, NOT_RUN = json.loads(Path(sys.argv[1]).read_text())
for block in blocks:
    print(f"README.md:{block['line']} ({block['lang']})", flush=True)
    try:
        if block["lang"] == "python":
            exec(compile(block["code"], f"README.md:{block['line']}", "exec"), {"__name__": "__main__"})
        elif block["lang"] == "bash":
            run_bash(block["code"])
        elif block["lang"] == "yaml":
            run_yaml(block["code"])
    except BaseException:
        traceback.print_exc()
        print(f"FAILED: the block at README.md:{block['line']}", flush=True)
        sys.exit(1)
print("all blocks ran", flush=True)
"""


def test_every_readme_block_runs(tmp_path):
    blocks = readme_blocks()
    assert {block["lang"] for block in blocks} <= {"python", "bash", "yaml"}
    (tmp_path / "blocks.json").write_text(json.dumps([blocks, list(NOT_RUN)]))
    (tmp_path / "experiments").symlink_to(ROOT / "experiments")  # the README runs from the repository root
    env = {
        **os.environ,
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run([sys.executable, "-c", RUNNER, str(tmp_path / "blocks.json")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=1800)  # fmt: skip
    tail = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0 and "all blocks ran" in result.stdout, tail


@pytest.mark.parametrize("old", list(NOT_RUN))
def test_lines_not_run_are_still_in_the_readme(old):
    assert old in README.read_text()
