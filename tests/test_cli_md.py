"""``jaxatom md CONFIG.yaml``: a run from a model directory and a structure file, its report, resuming, errors."""

import json

import numpy as np
import pytest
import yaml
from ase.build import molecule
from ase.io import write

import jaxatom
from jaxatom.cli import main
from jaxatom.md import read_trajectory

from .conftest import ELEMENTS, tiny_schnet


@pytest.fixture(scope="module")
def md_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("md_cli")
    jaxatom.Potential.create(tiny_schnet(), ELEMENTS, seed=4, energy_shift=-3.0).save(root / "model")
    write(root / "ethanol.xyz", molecule("CH3CH2OH"))
    return root


def _config(root, **changes):
    config = {"model": "model", "structure": "ethanol.xyz", "ensemble": "langevin", "timestep_fs": 0.5,
              "steps": 40, "stride": 10, "frames_per_chunk": 2, "temperature_K": 300.0, "output": "out/md.h5",
              "n_replicas": 2, **changes}  # fmt: skip
    path = root / "md.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_md_command_runs_reports_and_resumes(md_files, capsys):
    config = _config(md_files)
    assert main(["md", str(config), "steps=20", "--quiet"]) == 0
    output = capsys.readouterr().out
    assert "energy drift:" in output and "steps/s" in output
    path = md_files / "out" / "md.h5"
    assert len(read_trajectory(path)["time"]) == 3  # the start, then steps 10 and 20
    report = json.loads((md_files / "out" / "md.h5.report.json").read_text())
    assert report["time_ps"] == 0.01
    assert len(report["mean_temperature_K"]) == 2
    assert (md_files / "out" / "md.h5.energies.png").stat().st_size > 0
    # the same command with more steps continues the trajectory from its checkpoint
    assert main(["md", str(config), "--quiet"]) == 0
    data = read_trajectory(path)
    np.testing.assert_array_equal(data["step"], [0, 10, 20, 30, 40])


def test_md_command_errors_name_the_problem(md_files, capsys):
    config = _config(md_files, output="out/errors.h5")
    assert main(["md", str(config), "thermostat=pile", "--quiet"]) == 2
    assert "unknown MD setting(s) thermostat" in capsys.readouterr().err
    assert main(["md", str(config), "model=null", "--quiet"]) == 2
    assert "needs 'model'" in capsys.readouterr().err
    assert main(["md", str(config), "model=missing", "--quiet"]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["md", str(config), "ensemble=npt", "--quiet"]) == 2
    assert "unknown ensemble" in capsys.readouterr().err
