"""Data sets shipped with jaxatom (GFN2-xTB MD, made by ``experiments/make_xtb_dataset.py``)."""

from __future__ import annotations

from importlib import resources

from jaxatom.data.dataset import Dataset
from jaxatom.data.formats import read_hdf5
from jaxatom.errors import ConfigError

__all__ = ["BUILTIN_DATASETS", "load_builtin"]

#: name -> file in ``jaxatom/data/builtin``
BUILTIN_DATASETS = {"aspirin": "aspirin_gfn2.h5", "ethanol": "ethanol_gfn2.h5"}


def load_builtin(name: str) -> Dataset:
    """A shipped data set: ``"aspirin"`` or ``"ethanol"`` (3000 frames of GFN2-xTB MD at 500 K).

    Properties, all GFN2-xTB (tblite): ``energy`` (eV), ``forces`` (eV/Å), ``dipole_moment`` ``[S, 3]`` (e·Å, incl.
    GFN2's atomic dipoles), ``charges`` (per atom, e), ``polarizability`` ``[S, 3, 3]`` (static, from finite fields;
    a polarizability volume in Å³). The file's attributes, in ``metadata``, record how they were made.
    """
    if not isinstance(name, str) or name not in BUILTIN_DATASETS:
        raise ConfigError(
            f"no built-in data set {name!r}; available: {', '.join(sorted(BUILTIN_DATASETS))} (or give a data file)"
        )
    with resources.as_file(resources.files("jaxatom.data") / "builtin" / BUILTIN_DATASETS[name]) as path:
        return read_hdf5(path)
