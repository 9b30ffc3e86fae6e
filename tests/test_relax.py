"""Batched geometry optimisation (jaxatom.relax), float64: the FIRE core against ASE's FIRE step by step and on
analytic minima, each structure of a batch relaxing as it would alone (and as ASE's FIRE relaxes it), neighbour-list
rebuilds that do not change the result, cell relaxation to zero stress and to a target pressure against ASE's
``UnitCellFilter``, ensembles, and every error."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.constraints import FixAtoms
from ase.filters import UnitCellFilter
from ase.optimize import FIRE

import jaxatom
from jaxatom.calculators import JaxAtomCalculator
from jaxatom.errors import ConfigError, StructureError
from jaxatom.relax import fire, relax_batch
from jaxatom.units import GPa

from .conftest import ELEMENTS, MorseEnergy, tiny_painn

#: Equilibrium distances (Å) of the test pair potential by element pair; others 1.5 Å.
R0 = ((1, 1, 1.6), (1, 6, 1.09), (1, 8, 0.96), (6, 6, 1.5), (6, 8, 1.3), (8, 8, 2.2))


@pytest.fixture(scope="module", autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


#: The test pair potential with this file's equilibrium distances.
Morse = functools.partial(MorseEnergy, pairs=R0, default_r0=1.5)


@pytest.fixture(scope="module")
def generic(float64) -> jaxatom.Potential:
    """Morse wells perturbed by a random tiny PaiNN, with per-element offsets."""
    return jaxatom.Potential.create(
        tiny_painn(), ELEMENTS, seed=3, heads=[Morse(neural=0.3)], atomrefs={1: -13.6, 6: -1030.0, 8: -2040.0}
    )


@pytest.fixture(scope="module")
def pair(float64) -> jaxatom.Potential:
    """The pure Morse pair potential (no neural term) for crystals."""
    return jaxatom.Potential.create(tiny_painn(), ELEMENTS, seed=0, heads=[Morse()])


@pytest.fixture(scope="module")
def molecules() -> list[Atoms]:
    structures = []
    for seed, name in enumerate(["H2O", "CH3OH", "CO2", "CH3CH2OH"]):
        atoms = molecule(name)
        atoms.rattle(0.1, seed=seed)
        structures.append(atoms)
    return structures


@pytest.fixture(scope="module")
def crystal() -> Atoms:
    """A rattled, sheared 4-atom fcc oxygen cell (the pair potential's minimum is near a = 3.1 Å)."""
    atoms = bulk("O", "fcc", a=3.3, cubic=True)
    atoms.set_cell(atoms.cell[:] @ np.array([[1.0, 0.03, 0.0], [0.0, 1.0, -0.02], [0.01, 0.0, 0.98]]), True)
    atoms.rattle(0.05, seed=4)
    return atoms


# --- the FIRE core ---------------------------------------------------------------------------------------------------


class _Quadratic(Calculator):
    """ASE calculator of E = ½ Σ k_i (x_i − c_i)² per coordinate."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, k, c):
        super().__init__()
        self.k, self.c = k, c

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        x = atoms.positions - self.c
        self.results = {"energy": 0.5 * np.sum(self.k * x**2), "forces": -self.k * x}


def _quadratic(seed: int, rows: int):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 20.0, (rows, 3)), rng.normal(size=(rows, 3)), rng.normal(size=(rows, 3)) * 2


def test_fire_follows_ase_step_by_step():
    """Same defaults, same update: jaxatom's FIRE retraces ASE's FIRE on a stiff anisotropic quadratic (which
    exercises the max-step cap, the uphill resets and the time-step growth)."""
    k, c, x0 = _quadratic(0, 4)
    atoms = Atoms("H4", positions=x0)
    atoms.calc = _Quadratic(k, c)
    optimiser = FIRE(atoms, logfile=None)
    init, step = fire()
    step = jax.jit(step)
    state = init(jnp.asarray(x0))
    for _ in range(200):
        optimiser.step()
        state = step(state, -k * (state.positions - c))
        np.testing.assert_allclose(state.positions, atoms.positions, rtol=0, atol=1e-10)
    assert np.abs(atoms.positions - c).max() < 1e-4


def test_fire_reaches_analytic_minima():
    """The minimum of the 2D Rosenbrock function (1, 1) and of a quadratic, in one state of two structures."""
    init, step = fire()
    x0 = np.array([[-1.2, 1.0, 0.0], [0.0, 0.0, 0.0], [0.5, -0.5, 2.0]])
    state = init(jnp.asarray(x0), jnp.array([0, 1, 1]), n_segments=2)
    centre = np.array([[0.3, -0.2, 0.1], [1.0, 2.0, 3.0]])

    def forces(x):
        a, b = x[0, 0], x[0, 1]
        rosenbrock = jnp.array([2 * (1 - a) + 400 * a * (b - a**2), -200 * (b - a**2), -x[0, 2]])
        return jnp.concatenate([rosenbrock[None], -(x[1:] - centre)])

    run = jax.jit(lambda s: jax.lax.fori_loop(0, 20000, lambda _, s: step(s, forces(s.positions)), s))
    state = run(state)
    np.testing.assert_allclose(state.positions[0], [1.0, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(state.positions[1:], centre, atol=1e-8)


def test_fire_structures_are_independent():
    """Two structures in one state move exactly as each alone; an inactive structure does not move at all."""
    init, step = fire()
    step = jax.jit(step)
    k1, c1, x1 = _quadratic(1, 2)
    k2, c2, x2 = _quadratic(2, 3)
    k, c = np.concatenate([k1, k2]), np.concatenate([c1, c2])
    both = init(jnp.asarray(np.concatenate([x1, x2])), jnp.array([0, 0, 1, 1, 1]), n_segments=2)
    one, two = init(jnp.asarray(x1)), init(jnp.asarray(x2))
    frozen = jnp.array([True, False])
    for _ in range(40):
        both = step(both, -k * (both.positions - c))
        one = step(one, -k1 * (one.positions - c1))
        two = step(two, -k2 * (two.positions - c2))
    np.testing.assert_allclose(both.positions, np.concatenate([one.positions, two.positions]), atol=1e-12)
    after = step(both, -k * (both.positions - c), frozen)
    np.testing.assert_array_equal(after.positions[2:], both.positions[2:])
    assert after.n_steps.tolist() == [41, 40] and after.dt[1] == both.dt[1]


# --- batches of molecules ---


@pytest.fixture(scope="module")
def batched(generic, molecules):
    timing = {}
    results = relax_batch(generic, molecules, fmax=1e-3, steps=2000, timing=timing)
    return results, timing


def test_batch_converges_below_fmax(batched, generic, molecules):
    results, timing = batched
    assert timing["compiles"] <= 1 and timing["wall_s"] >= timing["compile_s"]
    predicted = generic.predict([r.atoms for r in results])
    initial = generic.predict(molecules)
    for atoms, result, reference, start in zip(molecules, results, predicted, initial, strict=True):
        assert result.converged and 0 < result.steps < 2000
        assert result.max_force < 1e-3
        assert np.max(np.linalg.norm(reference["forces"], axis=1)) < 1e-3
        assert result.energy == pytest.approx(reference["energy"], abs=1e-9)
        assert result.atoms.get_potential_energy() == result.energy
        assert result.stress is None and np.all(result.atoms.numbers == atoms.numbers)
        assert result.energy < start["energy"]


def test_batch_equals_each_structure_alone(batched, generic, molecules):
    results, _ = batched
    (alone,) = relax_batch(generic, [molecules[3]], fmax=1e-3, steps=2000)
    assert alone.steps == results[3].steps
    np.testing.assert_allclose(alone.atoms.positions, results[3].atoms.positions, atol=1e-8)


def test_batch_matches_ase_fire(batched, generic, molecules):
    """ASE's FIRE with jaxatom's calculator takes the same steps to the same minimum."""
    results, _ = batched
    atoms = molecules[1].copy()
    atoms.calc = JaxAtomCalculator(generic)
    optimiser = FIRE(atoms, logfile=None)
    optimiser.run(fmax=1e-3, steps=2000)
    assert optimiser.nsteps == results[1].steps
    np.testing.assert_allclose(atoms.positions, results[1].atoms.positions, atol=1e-7)


def test_small_skin_rebuilds_without_changing_the_result(batched, generic, molecules):
    results, _ = batched
    timing = {}
    small = relax_batch(generic, molecules, fmax=1e-3, steps=2000, skin=0.05, chunk=7, timing=timing)
    assert timing["rebuilds"] > 0
    for a, b in zip(small, results, strict=True):
        assert a.steps == b.steps
        np.testing.assert_allclose(a.atoms.positions, b.atoms.positions, atol=1e-8)


def test_step_limit_and_frozen_structures(generic, molecules, batched):
    """A step limit stops each structure there; a structure that converges first stays where it converged."""
    timing = {}
    results = relax_batch(generic, molecules, fmax=1e-3, steps=5, timing=timing)
    assert timing["compiles"] == 0  # same shapes as the batch above: limits are arguments, not constants
    assert [r.steps for r in results] == [5] * 4 and not any(r.converged for r in results)
    assert min(r.max_force for r in results) > 1e-3
    loose = relax_batch(generic, molecules, fmax=0.05, steps=2000)
    steps = [r.steps for r in loose]
    assert len(set(steps)) > 1 and all(r.converged and r.max_force < 0.05 for r in loose)


def test_ensemble_relaxes_on_the_mean(generic, molecules, batched):
    ensemble = jaxatom.PotentialEnsemble.from_potentials([generic, generic])
    (result,) = relax_batch(ensemble, molecules[:1], fmax=1e-3, steps=2000)
    assert result.steps == batched[0][0].steps
    np.testing.assert_allclose(result.atoms.positions, batched[0][0].atoms.positions, atol=1e-8)
    assert result.energy == pytest.approx(batched[0][0].energy, abs=1e-8)


# --- cell relaxation ---


def _ase_cell_relax(potential, atoms, pressure_GPa=0.0, hydrostatic=False):
    work = atoms.copy()
    work.calc = JaxAtomCalculator(potential)
    optimiser = FIRE(UnitCellFilter(work, scalar_pressure=pressure_GPa * GPa, hydrostatic_strain=hydrostatic),
                     logfile=None)  # fmt: skip
    optimiser.run(fmax=1e-4, steps=3000)
    return work, optimiser.nsteps


@pytest.mark.parametrize(("mode", "pressure"), [("full", 0.0), ("isotropic", 5.0)])
def test_cell_relaxation_reaches_target_pressure(pair, crystal, mode, pressure):
    """Zero stress (``full``) or the target pressure (``isotropic``), and ASE's FIRE + UnitCellFilter's cell."""
    (result,) = relax_batch(pair, [crystal], fmax=1e-4, steps=3000, cell=mode, pressure_GPa=pressure)
    assert result.converged
    volume = result.atoms.get_volume()
    # convergence bounds each cell force V|σ + P|/n_atoms by fmax
    tolerance = 1e-4 * len(crystal) / volume
    stress = result.stress
    if mode == "full":
        np.testing.assert_allclose(stress, 0.0, atol=tolerance)
    else:
        assert np.trace(stress) / 3 == pytest.approx(-pressure * GPa, abs=tolerance)
        cell0 = crystal.cell[:]
        scale = np.linalg.solve(cell0, result.atoms.cell[:])
        np.testing.assert_allclose(scale, scale[0, 0] * np.eye(3), atol=1e-12)  # shape kept
    np.testing.assert_allclose(pair.predict(result.atoms)["stress"], stress, atol=1e-10)
    reference, steps = _ase_cell_relax(pair, crystal, pressure, hydrostatic=mode == "isotropic")
    assert steps == result.steps
    np.testing.assert_allclose(result.atoms.cell[:], reference.cell[:], atol=1e-6)
    np.testing.assert_allclose(result.atoms.positions, reference.positions, atol=1e-6)


def test_cell_relaxation_in_a_mixed_batch(pair, crystal):
    """A crystal and a larger supercell relax together, with list rebuilds, as each alone."""
    bigger = crystal.repeat((2, 1, 1))
    bigger.rattle(0.03, seed=9)
    timing = {}
    both = relax_batch(pair, [crystal, bigger], fmax=1e-4, steps=3000, cell="full", skin=0.1, timing=timing)
    assert timing["rebuilds"] > 0 and all(r.converged for r in both)
    (alone,) = relax_batch(pair, [bigger], fmax=1e-4, steps=3000, cell="full", skin=2.0)
    assert alone.steps == both[1].steps
    np.testing.assert_allclose(both[1].atoms.cell[:], alone.atoms.cell[:], atol=1e-8)


# --- errors ---


def test_errors_before_compute(generic, molecules, crystal):
    with pytest.raises(ConfigError, match="at least one structure"):
        relax_batch(generic, [])
    with pytest.raises(ConfigError, match="list of ase.Atoms"):
        relax_batch(generic, molecules[0])
    with pytest.raises(StructureError, match="structure 1: .*elements the model was not built for: N"):
        relax_batch(generic, [molecules[0], molecule("NH3")])
    with pytest.raises(StructureError, match="structure 0 is not periodic.*cell='fixed'"):
        relax_batch(generic, [molecules[0], crystal], cell="isotropic")
    with pytest.raises(ConfigError, match="target pressure needs cell relaxation"):
        relax_batch(generic, [crystal], pressure_GPa=1.0)
    with pytest.raises(ConfigError, match="cell must be one of"):
        relax_batch(generic, [crystal], cell="anisotropic")
    with pytest.raises(ConfigError, match="fmax must be a positive"):
        relax_batch(generic, molecules, fmax=0.0)
    with pytest.raises(ConfigError, match="unknown FIRE options"):
        relax_batch(generic, molecules, fire_options={"dt": 0.1})
    fixed = molecules[0].copy()
    fixed.set_constraint(FixAtoms([0]))
    with pytest.raises(ConfigError, match="constraints"):
        relax_batch(generic, [fixed])
    overlapping = molecules[0].copy()
    overlapping.positions[1] = overlapping.positions[0]
    with pytest.raises(StructureError, match="structure 0: atoms 0 and 1 overlap"):
        relax_batch(generic, [overlapping])
