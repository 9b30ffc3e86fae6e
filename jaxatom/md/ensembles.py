"""Thermodynamic ensembles as small spec objects: each knows its integrator, its degrees of freedom, its initial
momenta and what it writes per frame, so the driver never dispatches on a name.

An ensemble is a frozen dataclass (its fields are its settings, in fs, 1/fs and K) with

* ``integrator(masses, dt, dof) -> Integrator`` — the ``init``/``step``/``conserved`` triple (time in ASE units);
* ``degrees_of_freedom(n_atoms, periodic) -> int``;
* ``initial_momenta(key, masses, positions, periodic) -> [*beads, N, 3]`` (Maxwell–Boltzmann by default);
* ``observe(state, masses, integrator, dof) -> {name: [R, ...]}`` — the per-frame thermodynamic quantities;
* ``n_beads`` (1 unless the ensemble propagates ring polymers) and ``units`` of anything ``observe`` adds.

Write a new ensemble by subclassing :class:`Ensemble` (see ``docs/architecture.md``); pass an instance to
:func:`~jaxatom.md.simulate`. The built-in ones are registered by name in :data:`ENSEMBLES` for YAML and the CLI.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxatom.errors import ConfigError
from jaxatom.md import rpmd
from jaxatom.md.barostats import (
    instantaneous_pressure,
    instantaneous_pressure_tensor,
    stochastic_cell_rescaling,
    volume,
)
from jaxatom.md.integrators import Integrator, MDState, langevin, nose_hoover, velocity_verlet
from jaxatom.md.mtk import mtk_barostat
from jaxatom.md.state import (
    FS,
    degrees_of_freedom,
    kinetic_energy,
    maxwell_boltzmann,
    remove_com_momentum,
    remove_rotation,
    temperature,
)
from jaxatom.units import UnitError, unit_factor

__all__ = [
    "Ensemble",
    "NVE",
    "Langevin",
    "NoseHoover",
    "RPMD",
    "StochasticCellRescaling",
    "MTKBarostat",
    "RingPolymerNPT",
    "ENSEMBLES",
    "ensemble_from_settings",
]


@dataclasses.dataclass(frozen=True)
class Ensemble:
    """Base of every ensemble: classical particles, Maxwell–Boltzmann momenta at ``temperature_K`` (K).

    Subclasses set :attr:`name` and override :meth:`integrator` (and what else differs). Ensembles with
    :attr:`per_replica_temperature` also take one temperature per replica (a list, kept as a tuple).
    """

    name: ClassVar[str] = ""
    #: Units of the extra per-frame entries :meth:`observe` returns beyond the classical ones.
    units: ClassVar[Mapping[str, str]] = {}
    #: Whether the total momentum is removed at the start and conserved (it is not under a Langevin thermostat).
    fixes_momentum: ClassVar[bool] = True
    #: Whether positions and momenta carry a bead axis ``[R, P, N, 3]``.
    ring_polymer: ClassVar[bool] = False
    #: Whether the ensemble changes the cell (the state then holds it and the force field returns stress).
    variable_cell: ClassVar[bool] = False
    #: Whether replicas of different structures, padded to one atom count, can run in one batch
    #: (:meth:`padded_integrator`).
    supports_padding: ClassVar[bool] = False
    #: Whether ``temperature_K`` may be a list of one temperature per replica (a temperature ladder).
    per_replica_temperature: ClassVar[bool] = False

    temperature_K: float | tuple[float, ...] = 300.0

    def __post_init__(self) -> None:
        if not isinstance(self.temperature_K, list | tuple):
            _positive(self, "temperature_K")
            return
        if not self.per_replica_temperature:
            raise ConfigError(
                f"the {self.name} ensemble takes one temperature_K; one temperature per replica needs "
                "ensemble='langevin' (or run one simulate per temperature)"
            )
        object.__setattr__(self, "temperature_K", tuple(self.temperature_K))
        if not self.temperature_K:
            raise ConfigError("temperature_K is an empty list; give one temperature (K) or one per replica")
        for r in range(len(self.temperature_K)):
            self.replica(r)  # each replica's ensemble checks its temperature

    def replica(self, r: int) -> Ensemble:
        """The ensemble as replica ``r`` runs it: with per-replica temperatures, at its own temperature."""
        if isinstance(self.temperature_K, tuple):
            return dataclasses.replace(self, temperature_K=self.temperature_K[r])
        return self

    @property
    def n_beads(self) -> int:
        """Ring-polymer beads per replica (1: classical)."""
        return 1

    def settings(self) -> dict[str, Any]:
        """The ensemble's name and settings as JSON values (what trajectories and checkpoints record)."""
        return {"ensemble": self.name, **json_values(dataclasses.asdict(self))}

    def degrees_of_freedom(self, n_atoms: int, periodic: bool) -> int:
        """Kinetic degrees of freedom of one replica."""
        return degrees_of_freedom(n_atoms, self.fixes_momentum, self._fixes_rotation(periodic))

    def _fixes_rotation(self, periodic: bool) -> bool:
        return bool(getattr(self, "remove_rotation", False)) and not periodic

    def integrator(self, masses: jax.Array, dt: float, dof: int) -> Integrator:
        raise NotImplementedError

    def padded_integrator(self, masses: jax.Array, dt: float, dof: jax.Array, atom_mask: jax.Array) -> Integrator:
        """The integrator of replicas padded to one atom count: ``masses [R, N]`` (amu, 1 for padding atoms),
        ``dof [R]``, ``atom_mask [R, N]``. Padding atoms start at rest and feel no force, so an integrator that adds
        no noise keeps them there; ensembles that do add noise override this."""
        return self.integrator(masses, dt, dof)

    def initial_momenta(self, key: jax.Array, masses: jax.Array, positions: jax.Array, periodic: bool) -> jax.Array:
        """Momenta ``[N, 3]`` (``[P, N, 3]`` for ring polymers) for one replica at :attr:`temperature_K`."""
        return self.constrain_momenta(maxwell_boltzmann(key, masses, self.temperature_K), masses, positions, periodic)

    def constrain_momenta(self, momenta: jax.Array, masses: jax.Array, positions: jax.Array, periodic: bool):
        """Initial momenta ``[N, 3]`` (drawn or the structure's own) made consistent with the degrees of freedom the
        ensemble counts: the total momentum removed where it is conserved, the rotation where it is removed."""
        if self.fixes_momentum:
            momenta = remove_com_momentum(momenta, masses)
        if self._fixes_rotation(periodic):
            momenta = remove_rotation(positions, momenta, masses)
        return momenta

    def observe(self, state: MDState, masses: jax.Array, integrator: Integrator, dof: int) -> dict:
        """Per-frame quantities ``[R, ...]``: positions, velocities (Å/fs), energies (eV), temperature (K)."""
        kinetic = kinetic_energy(state.momenta, masses)
        frame = {
            "positions": state.positions,
            "velocities": state.momenta / masses[..., None] * FS,
            "potential_energy": state.potential_energy,
            "kinetic_energy": kinetic,
            "temperature": temperature(kinetic, dof),
            "conserved_energy": integrator.conserved(state),
        }
        return {**frame, **state.extras}

    def frame_forces(self, state: MDState) -> jax.Array:
        """The forces ``[R, N, 3]`` a frame records (eV/Å)."""
        return state.forces


@dataclasses.dataclass(frozen=True)
class NVE(Ensemble):
    """Microcanonical velocity Verlet; ``temperature_K`` only sets the initial velocities. ``remove_rotation`` also
    removes the initial angular momentum of a molecule (3N − 6 degrees of freedom)."""

    name: ClassVar[str] = "nve"
    supports_padding: ClassVar[bool] = True
    remove_rotation: bool = False

    def integrator(self, masses, dt, dof):
        return velocity_verlet(masses, dt)


@dataclasses.dataclass(frozen=True)
class Langevin(Ensemble):
    """Canonical Langevin dynamics, BAOAB splitting, friction ``friction_per_fs`` (1/fs); ``temperature_K`` one
    temperature or a list of one per replica (K; each replica's noise and initial velocities at its own)."""

    name: ClassVar[str] = "langevin"
    fixes_momentum: ClassVar[bool] = False
    supports_padding: ClassVar[bool] = True
    per_replica_temperature: ClassVar[bool] = True
    friction_per_fs: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.friction_per_fs >= 0 and math.isfinite(self.friction_per_fs)):
            raise ConfigError(f"friction_per_fs must be >= 0, got {self.friction_per_fs}")

    def integrator(self, masses, dt, dof):
        return langevin(masses, dt, self.temperature_K, self.friction_per_fs / FS)

    def padded_integrator(self, masses, dt, dof, atom_mask):
        return langevin(masses, dt, self.temperature_K, self.friction_per_fs / FS, atom_mask)


@dataclasses.dataclass(frozen=True)
class NoseHoover(Ensemble):
    """Canonical Nosé–Hoover chain (jax-md's, Martyna–Tuckerman–Klein) with period ``tau_fs`` (fs)."""

    name: ClassVar[str] = "nose_hoover"
    supports_padding: ClassVar[bool] = True
    tau_fs: float = 100.0
    chain_length: int = 3
    remove_rotation: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "tau_fs")
        _positive_int(self, "chain_length")

    def integrator(self, masses, dt, dof):
        return nose_hoover(masses, dt, self.temperature_K, self.tau_fs * FS, dof, self.chain_length)


@dataclasses.dataclass(frozen=True)
class RPMD(Ensemble):
    """Ring-polymer MD with ``n_beads`` beads per replica (:mod:`jaxatom.md.rpmd`): thermostat ``pile_l``,
    ``pile_g``, ``trpmd`` or ``none``, centroid thermostat time ``centroid_tau_fs`` (fs) and internal-mode friction
    ``γ_k = 2 λ ω_k`` (``pile_lambda``). Frames hold centroid positions and velocities, bead-averaged energies and
    observables, and the centroid-virial and primitive quantum kinetic energies."""

    name: ClassVar[str] = "rpmd"
    units: ClassVar[Mapping[str, str]] = {"kinetic_energy_primitive": "eV"}
    fixes_momentum: ClassVar[bool] = False
    ring_polymer: ClassVar[bool] = True
    n_beads: int = 8
    thermostat: str = "pile_l"
    centroid_tau_fs: float = 100.0
    pile_lambda: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int(self, "n_beads")
        _positive(self, "centroid_tau_fs")
        _positive(self, "pile_lambda")
        if self.thermostat not in rpmd.THERMOSTATS:
            raise ConfigError(
                f"unknown ring-polymer thermostat {self.thermostat!r}; choose one of {', '.join(rpmd.THERMOSTATS)}"
            )

    def integrator(self, masses, dt, dof):
        tau = self.centroid_tau_fs * FS
        return rpmd.ring_polymer(masses, dt, self.temperature_K, self.n_beads, self.thermostat, tau, self.pile_lambda)

    def initial_momenta(self, key, masses, positions, periodic):
        """Free ring-polymer momenta: every bead at ``P·T``."""
        return maxwell_boltzmann(key, masses, self.temperature_K * self.n_beads, (self.n_beads,))

    def constrain_momenta(self, momenta, masses, positions, periodic):
        return momenta

    def observe(self, state, masses, integrator, dof):
        kinetic = jnp.sum(kinetic_energy(state.momenta, masses), -1)
        frame = {
            "positions": rpmd.centroid(state.positions),
            "velocities": rpmd.centroid(state.momenta) / masses[:, None] * FS,
            "potential_energy": jnp.mean(state.potential_energy, axis=-1),
            "kinetic_energy": rpmd.virial_kinetic_energy(state.positions, state.forces, self.temperature_K),
            "kinetic_energy_primitive": rpmd.primitive_kinetic_energy(state.positions, masses, self.temperature_K),
            "temperature": temperature(kinetic, dof) / self.n_beads**2,
            "conserved_energy": integrator.conserved(state),
        }
        extras = {k: jnp.mean(v, axis=1) for k, v in state.extras.items()}  # bead averages [R, ...]
        return {**frame, **extras}

    def frame_forces(self, state):
        """Centroid forces ``[R, N, 3]`` (eV/Å)."""
        return rpmd.centroid(state.forces)


@dataclasses.dataclass(frozen=True)
class _Barostat(Ensemble):
    """What constant-pressure ensembles share: the target ``pressure`` in ``pressure_unit`` (GPa, MPa, bar, kbar,
    atm or eV/Ang^3), the cell's time constant ``barostat_tau_fs`` (fs), ``cell_flexibility`` (``"isotropic"``: the
    volume only; ``"full"``: all six strain components, the cell never rotates), and frames with the cell, volume
    (Å³), instantaneous pressure (GPa, kinetic part included), the stress of the potential (eV/Å³, ASE's sign) and,
    with ``"full"``, the pressure tensor (GPa, kinetic part included)."""

    units: ClassVar[Mapping[str, str]] = {"cell": "Ang", "volume": "Ang^3", "pressure": "GPa", "stress": "eV/Ang^3",
                                          "pressure_tensor": "GPa"}  # fmt: skip
    variable_cell: ClassVar[bool] = True
    #: The values of ``cell_flexibility``.
    CELL_FLEXIBILITIES: ClassVar[tuple[str, ...]] = ("isotropic", "full")
    pressure: float = 0.0
    pressure_unit: str = "GPa"
    barostat_tau_fs: float = 1000.0
    cell_flexibility: str = "isotropic"

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "barostat_tau_fs")
        if not math.isfinite(self.pressure):
            raise ConfigError(f"pressure must be a finite number, got {self.pressure}")
        try:
            unit_factor(self.pressure_unit, "eV/Ang^3")
        except UnitError as err:
            raise ConfigError(f"unknown pressure unit {self.pressure_unit!r} ({err}); use GPa, MPa, bar, kbar, atm "
                              "or eV/Ang^3") from None  # fmt: skip
        if self.cell_flexibility not in self.CELL_FLEXIBILITIES:
            raise ConfigError(f"unknown cell_flexibility {self.cell_flexibility!r}; choose one of "
                              f"{', '.join(self.CELL_FLEXIBILITIES)}")  # fmt: skip

    @property
    def pressure_eV_per_A3(self) -> float:
        """The target pressure in eV/Å³."""
        return self.pressure * unit_factor(self.pressure_unit, "eV/Ang^3")

    @property
    def flexible(self) -> bool:
        return self.cell_flexibility == "full"

    def observe(self, state, masses, integrator, dof):
        frame = super().observe(state, masses, integrator, dof)  # with the potential part of the stress
        gpa = unit_factor("eV/Ang^3", "GPa")
        frame.update(cell=state.cell, volume=volume(state.cell), pressure=gpa * instantaneous_pressure(state, masses))
        if self.flexible:
            frame["pressure_tensor"] = gpa * instantaneous_pressure_tensor(state, masses)
        return frame


@dataclasses.dataclass(frozen=True)
class StochasticCellRescaling(_Barostat):
    """Isothermal–isobaric MD of a periodic structure: stochastic cell rescaling with a Langevin thermostat
    (``friction_per_fs``). ``"isotropic"`` scales the cell (Bernetti & Bussi 2020); ``"full"`` moves a
    lower-triangular cell under the pressure tensor (Del Tatto et al. 2022; the cell is turned into ASE's standard
    form at the start; for solids). ``barostat_tau_fs`` (fs) is the cell's relaxation time and
    ``compressibility_per_GPa`` an estimate of the isothermal compressibility (1/GPa; ~0.007 for copper, ~0.45 for
    water): together they set how fast the cell relaxes, not the distribution. The conserved quantity is the effective
    energy ``U + K + P₀V`` plus the work of thermostat and barostat. Settings and frames: see :class:`_Barostat`."""

    name: ClassVar[str] = "npt_scr"
    fixes_momentum: ClassVar[bool] = False
    supports_padding: ClassVar[bool] = True
    friction_per_fs: float = 0.01
    compressibility_per_GPa: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "compressibility_per_GPa")
        if not (self.friction_per_fs > 0 and math.isfinite(self.friction_per_fs)):
            raise ConfigError(f"friction_per_fs must be > 0 (the thermostat of NPT), got {self.friction_per_fs}")

    def integrator(self, masses, dt, dof):
        return self.padded_integrator(masses, dt, dof, None)

    def padded_integrator(self, masses, dt, dof, atom_mask):
        compressibility = self.compressibility_per_GPa / unit_factor("GPa", "eV/Ang^3")
        friction = self.friction_per_fs / FS
        tau = self.barostat_tau_fs * FS
        return stochastic_cell_rescaling(masses, dt, self.temperature_K, friction, self.pressure_eV_per_A3, tau,
                                         compressibility, self.flexible, atom_mask)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class MTKBarostat(_Barostat):
    """Isothermal–isobaric MD of a periodic structure with the deterministic Martyna–Tobias–Klein barostat and
    Nosé–Hoover chains (:mod:`jaxatom.md.mtk`). ``tau_fs`` (fs) is the particle chain's period, ``barostat_tau_fs``
    (fs) the cell's, ``chain_length`` the length of both chains. The conserved quantity is ``U + K + P₀V`` plus the
    kinetic energy of the cell and the energies of both chains. Settings and frames: see :class:`_Barostat`."""

    name: ClassVar[str] = "npt_mtk"
    tau_fs: float = 100.0
    chain_length: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "tau_fs")
        _positive_int(self, "chain_length")

    def integrator(self, masses, dt, dof):
        taus = self.tau_fs * FS, self.barostat_tau_fs * FS
        return mtk_barostat(masses, dt, self.temperature_K, self.pressure_eV_per_A3, *taus, dof, self.flexible,
                            self.chain_length)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class RingPolymerNPT(_Barostat, RPMD):
    """Ring-polymer MD at constant pressure (isotropic): the thermostats of :class:`RPMD` and isotropic stochastic
    cell rescaling (``compressibility_per_GPa`` and ``barostat_tau_fs`` as in :class:`StochasticCellRescaling`)
    driven by the centroid-virial pressure estimator; the cell scales the centroids and leaves the bead offsets
    alone. Frames hold what RPMD frames hold plus the cell, volume (Å³), the centroid-virial pressure (GPa) and the
    bead-averaged stress of the potential (eV/Å³)."""

    name: ClassVar[str] = "npt_rpmd"
    units: ClassVar[Mapping[str, str]] = {**RPMD.units, **_Barostat.units}
    CELL_FLEXIBILITIES: ClassVar[tuple[str, ...]] = ("isotropic",)
    compressibility_per_GPa: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "compressibility_per_GPa")

    def integrator(self, masses, dt, dof):
        compressibility = self.compressibility_per_GPa / unit_factor("GPa", "eV/Ang^3")
        barostat = self.pressure_eV_per_A3, self.barostat_tau_fs * FS, compressibility
        tau = self.centroid_tau_fs * FS
        return rpmd.ring_polymer(masses, dt, self.temperature_K, self.n_beads, self.thermostat, tau, self.pile_lambda,
                                 barostat)  # fmt: skip

    def observe(self, state, masses, integrator, dof):
        frame = RPMD.observe(self, state, masses, integrator, dof)  # with the bead-averaged stress
        pressure = unit_factor("eV/Ang^3", "GPa") * rpmd.centroid_virial_pressure(state, masses)
        frame.update(cell=state.cell, volume=volume(state.cell), pressure=pressure)
        return frame


#: The built-in ensembles by name (YAML, the CLI and ``simulate(ensemble="langevin", ...)``).
ENSEMBLES: dict[str, type[Ensemble]] = {
    cls.name: cls for cls in (NVE, Langevin, NoseHoover, RPMD, StochasticCellRescaling, MTKBarostat, RingPolymerNPT)
}
#: Settings of the keyword form ``simulate(ensemble=name, **settings)`` that an ensemble field spells differently.
_RENAMED = {"rpmd_thermostat": "thermostat"}


def ensemble_from_settings(name: str, settings: Mapping[str, Any], strict: bool = True) -> Ensemble:
    """The ensemble ``name`` with ``settings`` (the keyword names of :func:`~jaxatom.md.simulate`: ``temperature_K``,
    ``friction_per_fs``, ``tau_fs``, ``n_beads``, ``rpmd_thermostat``, ...). Settings the ensemble does not have are
    refused when ``strict``, else ignored (the flat settings of earlier runs and YAML defaults)."""
    if name not in ENSEMBLES:
        raise ConfigError(f"unknown ensemble {name!r}; choose one of {', '.join(ENSEMBLES)} or pass an Ensemble")
    cls = ENSEMBLES[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {_RENAMED.get(key, key): value for key, value in settings.items()}
    unknown = sorted(key for key in values if key not in fields)
    if unknown and strict:
        raise ConfigError(
            f"the {name} ensemble has no setting {', '.join(unknown)}; its settings: {', '.join(sorted(fields))}"
        )
    return cls(**{key: value for key, value in values.items() if key in fields})


def json_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Plain JSON values (tuples as lists, numpy scalars as Python numbers)."""
    return {k: v.tolist() if isinstance(v, np.ndarray | np.generic) else list(v) if isinstance(v, tuple) else v
            for k, v in values.items()}  # fmt: skip


def _positive(spec: Ensemble, field: str) -> None:
    value = getattr(spec, field)
    if isinstance(value, bool) or not isinstance(value, int | float) or not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{field} must be a positive number, got {value!r}")


def _positive_int(spec: Ensemble, field: str) -> None:
    value = getattr(spec, field)
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ConfigError(f"{field} must be a positive integer, got {value!r}")
