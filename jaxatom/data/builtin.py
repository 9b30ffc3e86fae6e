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
    """A shipped data set: ``"aspirin"`` or ``"ethanol"`` (3000 GFN2-xTB frames at 500 K; eV, Å)."""
    if not isinstance(name, str) or name not in BUILTIN_DATASETS:
        raise ConfigError(
            f"no built-in data set {name!r}; available: {', '.join(sorted(BUILTIN_DATASETS))} (or give a data file)"
        )
    with resources.as_file(resources.files("jaxatom.data") / "builtin" / BUILTIN_DATASETS[name]) as path:
        return read_hdf5(path)
