"""jaxatom: JAX-native machine-learned interatomic potentials (SchNet, PaiNN) — training, MD and ASE, without torch."""

from importlib import metadata as _metadata

from jaxatom.errors import JaxAtomError
from jaxatom.graph import Graph, HostGraph, batch_graphs, enable_x64
from jaxatom.neighbors import graph_from_atoms
from jaxatom.potential import ModelFileError, OutputScaling, Potential, PotentialEnsemble, load_model
from jaxatom.runtime import tune_cpu_allocator, tune_cpu_allocator_on_import

tune_cpu_allocator_on_import()  # fast by default on CPU; JAXATOM_TUNE_CPU_ALLOCATOR=0 opts out


def __getattr__(name: str):
    """``jaxatom.evaluate`` (:func:`jaxatom.train.evaluate`), imported on first use: training pulls in optax and
    orbax, which ``import jaxatom`` does not need."""
    if name == "evaluate":
        from jaxatom.train.assessment import evaluate

        return evaluate
    raise AttributeError(f"module 'jaxatom' has no attribute {name!r}")


try:
    __version__ = _metadata.version("jaxatom")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "OutputScaling",
    "PotentialEnsemble",
    "Graph",
    "HostGraph",
    "JaxAtomError",
    "ModelFileError",
    "Potential",
    "batch_graphs",
    "enable_x64",
    "evaluate",
    "graph_from_atoms",
    "load_model",
    "tune_cpu_allocator",
    "__version__",
]
