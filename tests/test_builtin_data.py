"""The GFN2-xTB data sets shipped in jaxatom/data/builtin (made by experiments/make_xtb_dataset.py)."""

from pathlib import Path

import h5py
import numpy as np
import pytest

BUILTIN = Path(__file__).resolve().parents[1] / "jaxatom" / "data" / "builtin"


@pytest.mark.parametrize(("name", "n_atoms"), [("aspirin", 21), ("ethanol", 9)])
def test_shipped_data_sets_are_complete_and_carry_their_provenance(name, n_atoms):
    with h5py.File(BUILTIN / f"{name}_gfn2.h5", "r") as data:
        frames = int(data.attrs["frames"])
        assert frames >= 2000
        assert data["numbers"].shape == (n_atoms,)
        assert data["positions"].shape == data["forces"].shape == (frames, n_atoms, 3)
        assert data["energy"].shape == (frames,)
        assert {k: data[k].attrs["unit"] for k in ("positions", "forces", "energy")} == {
            "positions": "Ang", "forces": "eV/Ang", "energy": "eV"
        }  # fmt: skip
        assert data.attrs["method"] == "GFN2-xTB" and data.attrs["temperature_K"] == 500.0
        for key in ("timestep_fs", "seed", "stride_steps", "code", "command"):
            assert key in data.attrs
        energy, forces = data["energy"][:], data["forces"][:]
    assert np.all(np.isfinite(energy)) and np.all(np.isfinite(forces))
    assert np.ptp(energy) > 0.1  # thermal fluctuations at 500 K, not a frozen geometry
    np.testing.assert_allclose(forces.sum(axis=1), 0.0, atol=1e-3)  # no net force on a free molecule
