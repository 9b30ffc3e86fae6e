"""A temperature ladder in one Langevin run: each replica thermalises at its own temperature and follows the run of
that temperature alone; other ensembles and wrong counts are refused."""

import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms

from jaxatom.errors import ConfigError
from jaxatom.md import Langevin, read_trajectory, simulate
from jaxatom.md.forces import from_energy

LADDER = (100.0, 400.0)


def wells(n: int = 16):
    atoms = Atoms(numbers=[1] * n, positions=np.arange(3 * n, dtype=float).reshape(n, 3))
    center = jnp.asarray(atoms.positions)
    return atoms, from_energy(lambda x: 0.5 * jnp.sum((x - center) ** 2))


def test_each_replica_samples_its_own_temperature(tmp_path):
    atoms, force_field = wells()
    path = tmp_path / "ladder.h5"
    simulate(force_field, atoms, steps=2000, timestep_fs=1.0, ensemble="langevin", temperature_K=list(LADDER),
             friction_per_fs=0.05, n_replicas=2, stride=10, output=path, progress=False)  # fmt: skip
    data = read_trajectory(path)
    # 48 degrees of freedom: instantaneous T fluctuates by sqrt(2/48) ≈ 20 %; 150 nearly independent frames
    np.testing.assert_allclose(data["temperature"][50:].mean(axis=0), LADDER, rtol=0.1)
    assert data["attrs"]["temperature_K"] == list(LADDER)


def test_a_replica_of_the_ladder_follows_the_run_at_its_temperature():
    atoms, force_field = wells(4)
    options = dict(steps=50, timestep_fs=1.0, stride=5, n_replicas=2, progress=False)
    ladder = simulate(force_field, atoms, ensemble=Langevin(temperature_K=LADDER), **options)
    for r, temperature in enumerate(LADDER):
        alone = simulate(force_field, atoms, ensemble=Langevin(temperature_K=temperature), **options)
        np.testing.assert_allclose(ladder.frames["positions"][:, r], alone.frames["positions"][:, r], atol=1e-5)


def test_temperature_ladders_are_refused_where_unsupported():
    atoms, force_field = wells(2)
    with pytest.raises(ConfigError, match="one temperature per replica needs ensemble='langevin'"):
        simulate(force_field, atoms, steps=5, stride=5, ensemble="nve", temperature_K=[300, 600], n_replicas=2)
    with pytest.raises(ConfigError, match="2 temperatures for 3 replicas"):
        simulate(force_field, atoms, steps=5, stride=5, ensemble="langevin", temperature_K=[300, 600], n_replicas=3)
    with pytest.raises(ConfigError, match="temperature_K must be a positive number"):
        Langevin(temperature_K=[300, -1])
