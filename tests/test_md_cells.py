"""MD edges for any periodic cell: cells narrower than twice the cutoff, slabs and wires use every pair over the
lattice images within reach, and the device force field equals ``Potential.predict`` (exact host neighbour lists)
to 1e-10 in float64 — also after atoms wander out of the cell."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk, fcc111

import jaxatom
from jaxatom.md import simulate
from jaxatom.md.forces import from_potential
from jaxatom.md.neighbors import EdgeBuilder, lattice_images

from .conftest import tiny_painn


@pytest.fixture(scope="module")
def potential():
    with jax.enable_x64(True):
        yield jaxatom.Potential.create(tiny_painn(), [13, 29], seed=7, energy_shift=-3.0)


def _structures():
    small = bulk("Cu", "fcc", a=3.6, cubic=True)  # 4 atoms, 3.6 Å wide: narrower than 2 × (cutoff + skin)
    small.rattle(0.05, seed=1)
    primitive = bulk("Cu", "fcc", a=3.6)  # 1 atom, triclinic, 2.9 Å between faces
    slab = fcc111("Cu", (2, 2, 3), a=3.6, vacuum=6.0)  # pbc (True, True, False)
    slab.rattle(0.05, seed=2)
    wire = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((1, 1, 2))
    wire.cell[0, 0] = wire.cell[1, 1] = 16.0
    wire.pbc = (False, False, True)
    wire.rattle(0.05, seed=3)
    return {"small cell": small, "primitive": primitive, "slab": slab, "wire": wire}


@pytest.mark.parametrize("name", list(_structures()))
def test_device_edges_equal_exact_host_lists(potential, name):
    atoms = _structures()[name]
    with jax.enable_x64(True):
        edges = EdgeBuilder.create(atoms.numbers, atoms.cell[:], atoms.pbc, potential.cutoff)
        assert edges.mode == "images"
        force_field = from_potential(potential, edges)
        expected = potential.predict(atoms)
        for shift in ([0, 0, 0], [1, -1, 0]):  # atoms moved by lattice vectors (along periodic directions only)
            moved = atoms.positions + np.asarray(shift) @ (atoms.cell[:] * atoms.pbc[:, None])
            out = force_field.apply(force_field.params, jnp.asarray(moved), None)
            energy = float(out["energy"]) + force_field.energy_offset
            assert energy == pytest.approx(expected["energy"], rel=1e-12, abs=1e-10)
            np.testing.assert_allclose(out["forces"], expected["forces"], rtol=1e-9, atol=1e-10)


def test_image_counts_follow_the_cell_widths():
    cell = np.diag([3.0, 20.0, 5.0])
    images = lattice_images(cell, (True, False, True), cutoff=5.0)
    assert set(np.unique(images[:, 0])) == {-2, -1, 0, 1, 2}  # floor(5/3 + 1/2) = 2
    assert set(np.unique(images[:, 1])) == {0}  # not periodic
    assert set(np.unique(images[:, 2])) == {-1, 0, 1}  # floor(5/5 + 1/2) = 1


def test_slab_md_conserves_energy(potential):
    slab = _structures()["slab"]
    with jax.enable_x64(True):
        run = simulate(potential, slab, 200, timestep_fs=1.0, ensemble="nve", temperature_K=300, stride=20,
                       progress=False)  # fmt: skip
    conserved = run.frames["conserved_energy"][:, 0]
    assert np.ptp(conserved) < 1e-4 * len(slab)
    assert run.frames["positions"].shape == (11, 1, len(slab), 3)  # the start and 10 strides
