"""Data sets shipped with jaxatom: GFN2-xTB MD of molecules (made by ``experiments/make_xtb_dataset.py``) and EMT MD
of fcc copper with stress, plus EMT's own lattice reference numbers (``experiments/make_materials_dataset.py``)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from jaxatom.data.dataset import Dataset
from jaxatom.data.formats import read_hdf5
from jaxatom.errors import ConfigError

__all__ = ["BUILTIN_DATASETS", "BUILTIN_REFERENCES", "load_builtin", "builtin_reference"]

#: name -> file in ``jaxatom/data/builtin``
BUILTIN_DATASETS = {"aspirin": "aspirin_gfn2.h5", "ethanol": "ethanol_gfn2.h5", "cu": "cu_emt.h5"}
#: name -> the reference method's own numbers (JSON) in ``jaxatom/data/builtin``
BUILTIN_REFERENCES = {"cu": "cu_emt_reference.json"}


def load_builtin(name: str) -> Dataset:
    """A shipped data set.

    ``"aspirin"`` or ``"ethanol"``: 3000 frames of GFN2-xTB MD at 500 K. Properties, all GFN2-xTB (tblite):
    ``energy`` (eV), ``forces`` (eV/Å), ``dipole_moment`` ``[S, 3]`` (e·Å, incl. GFN2's atomic dipoles), ``charges``
    (per atom, e), ``polarizability`` ``[S, 3, 3]`` (static, from finite fields; a polarizability volume in Å³).

    ``"cu"``: fcc copper with ASE's EMT, periodic 32-atom cells (2×2×2 conventional; some 31-atom ones with a
    vacancy) from Langevin MD at 300–1200 K in cells strained by −4 % to +4 % (isotropic, and with random shear) and
    from zero-pressure MTK NPT: ``energy`` (eV), ``forces`` (eV/Å), ``stress`` ``[S, 3, 3]`` (eV/Å³, ASE's
    ``atoms.get_stress(voigt=False)``: (1/V) ∂E/∂ε, potential part only), with ``cell`` and ``pbc``. EMT's own
    equilibrium lattice constant, bulk modulus and thermal expansion are in :func:`builtin_reference`.

    The file's attributes, in ``metadata``, record how each set was made.
    """
    if not isinstance(name, str) or name not in BUILTIN_DATASETS:
        raise ConfigError(
            f"no built-in data set {name!r}; available: {', '.join(BUILTIN_DATASETS)} (or give a data file)"
        )
    with resources.as_file(resources.files("jaxatom.data") / "builtin" / BUILTIN_DATASETS[name]) as path:
        return read_hdf5(path).with_origin({"builtin": name})


def builtin_reference(name: str) -> dict[str, Any]:
    """The reference method's own numbers for a shipped materials data set, to compare jaxatom's MD with.

    ``"cu"`` (EMT): ``zero_kelvin`` (``a0_Ang``, ``bulk_modulus_GPa``, ``energy_per_atom_eV`` from a Birch–Murnaghan
    fit of an energy–volume scan), ``npt`` (``runs``: per temperature ``temperature_K``, ``a_Ang``,
    ``a_stderr_Ang``, ``alpha_per_K`` ... from EMT's own zero-pressure MTK NPT), ``thermal_expansion``
    (``alpha_per_K`` by temperature, ``alpha_secant_per_K``) and ``bulk_modulus_at_T`` (from the volume
    fluctuations at 300 K), with ``units`` and provenance (``method``, ``code``, ``command``, ``created``).
    """
    if not isinstance(name, str) or name not in BUILTIN_REFERENCES:
        raise ConfigError(f"no reference numbers for {name!r}; available: {', '.join(sorted(BUILTIN_REFERENCES))}")
    text = (resources.files("jaxatom.data") / "builtin" / BUILTIN_REFERENCES[name]).read_text()
    return json.loads(text)
