"""The portable model file: ``config.json`` + ``params.msgpack`` in a directory or a zip; no pickle, no orbax.

``config.json`` (format 2) holds the representation and the heads (class name and fields), the outputs they declare
(name, per atom or per structure, shape, unit, aggregation), each output's scale and offsets, cutoff, elements,
units and the versions that wrote it; ``params.msgpack`` holds the parameters (flax msgpack), each head's under its
key. Files of format 1 (one energy head, parameters under ``head``) load as the same energy model.

Format 3 adds what older readers would silently get wrong, and is written only by models that use it: a Δ-model's
``base`` (``{"representation", "heads", "scale", ["base"]}``, its parameters under ``base``), multi-fidelity heads
(their ``fidelities`` field) and per-fidelity offsets (``fidelity_atomrefs`` in the scaling). Every other model is
still written as format 2.
Writes are atomic: an existing model at ``path`` is replaced only once the new one is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import flax
import jax
import numpy as np
from flax import serialization, traverse_util

from jaxatom.errors import ConfigError, JaxAtomError
from jaxatom.nn.model import ENERGY_HEAD, AtomisticModel
from jaxatom.nn.registry import module_config, module_from_config
from jaxatom.potential.outputs import OutputScaling
from jaxatom.potential.potential import Potential, example_graph, normalise_elements

__all__ = ["save_model", "load_model", "ModelFileError", "FORMAT_VERSION"]

FORMAT = "jaxatom-model"
FORMAT_VERSION = 3
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.msgpack"


class ModelFileError(JaxAtomError, ValueError):
    """A model file that is missing, incomplete, from a newer format or inconsistent with its parameters."""


def _module_from_config(config: dict) -> flax.linen.Module:
    try:
        return module_from_config(config)
    except ConfigError as err:
        raise ModelFileError(f"the model file's settings are not usable: {err}") from err


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _file_version(potential: Potential) -> int:
    """3 for models that format 2 cannot describe (Δ-models, multi-fidelity), else 2."""
    return 3 if potential.model.base is not None or potential.fidelities else 2


def _architecture(model: AtomisticModel) -> dict:
    """Representation, heads and (Δ-models) the base, as JSON; heads without fidelities omit the field, as
    format 2 wrote them."""
    heads = [{k: v for k, v in module_config(head).items() if k != "fidelities" or v} for head in model.heads]
    entry = {"representation": module_config(model.representation), "heads": heads}
    if model.base is not None:
        entry["base"] = {**_architecture(model.base), "scale": model.base_scale}
    return entry


def _model_from_entry(entry: dict) -> AtomisticModel:
    """Inverse of :func:`_architecture`."""
    representation = _module_from_config(entry["representation"])
    heads = tuple(_module_from_config(head) for head in entry["heads"])
    if "base" not in entry:
        return AtomisticModel(representation=representation, heads=heads)
    base = _model_from_entry(entry["base"])
    return AtomisticModel(representation=representation, heads=heads, base=base,
                          base_scale=float(entry["base"]["scale"]))  # fmt: skip


def model_config(potential: Potential) -> dict:
    """The ``config.json`` content of a potential."""
    return {
        "format": FORMAT,
        "format_version": _file_version(potential),
        **_architecture(potential.model),
        "outputs": [_output_entry(spec) for spec in potential.model.outputs],
        "scaling": {name: scaling.to_dict() for name, scaling in sorted(potential.scaling.items())},
        "cutoff": potential.cutoff,
        "elements": list(potential.elements),
        "units": {
            "length": "Ang",
            "forces": "eV/Ang",
            "stress": "eV/Ang^3",
            **{spec.name: spec.unit for spec in potential.model.outputs},
        },  # fmt: skip
        "versions": {name: _version(name) for name in ("jaxatom", "jax", "flax")},
        "metadata": dict(potential.metadata),
    }


def _output_entry(spec) -> dict:
    entry = {"name": spec.name, "per_atom": spec.per_atom, "shape": list(spec.shape), "unit": spec.unit,
             "aggregation": spec.aggregation}  # fmt: skip
    return {**entry, "fidelities": list(spec.fidelities)} if spec.fidelities else entry


def save_model(potential: Potential, path: str | os.PathLike) -> None:
    """Write ``potential`` to ``path``: a directory, or a zip archive when ``path`` ends in ``.zip``."""
    path = Path(path)
    config = json.dumps(model_config(potential), indent=2).encode()
    params = serialization.msgpack_serialize(jax.device_get(serialization.to_state_dict(potential.params)))
    path.parent.mkdir(parents=True, exist_ok=True)
    permissions = _default_permissions()
    if path.suffix == ".zip":
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".partial", delete=False) as tmp:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(CONFIG_FILE, config)
                archive.writestr(PARAMS_FILE, params)
        os.chmod(tmp.name, permissions & 0o666)
        os.replace(tmp.name, path)
        return
    _clean_interrupted_saves(path)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-"))
    os.chmod(staging, permissions)
    (staging / CONFIG_FILE).write_bytes(config)
    (staging / PARAMS_FILE).write_bytes(params)
    if path.exists():
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
        os.replace(path, old / path.name)
        os.replace(staging, path)
        shutil.rmtree(old)
    else:
        os.replace(staging, path)


def _default_permissions() -> int:
    """``0o777`` less the process umask: what ``mkdir`` would give (temporary files are created ``0o700``)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def _clean_interrupted_saves(path: Path) -> None:
    """Remove what a save killed half-way left beside ``path``; put the previous model back if the kill fell
    between moving it aside and moving the new one in."""
    for old in path.parent.glob(f".{path.name}.old-*"):
        if not path.exists() and (old / path.name).is_dir():
            os.replace(old / path.name, path)
        shutil.rmtree(old, ignore_errors=True)
    for partial in path.parent.glob(f".{path.name}.partial-*"):
        shutil.rmtree(partial, ignore_errors=True)


def _read_files(path: Path) -> tuple[bytes, bytes]:
    if not path.exists():
        raise ModelFileError(f"no model at {path}; pass the directory (or .zip) written by Potential.save")
    if path.is_dir():
        files = {name: path / name for name in (CONFIG_FILE, PARAMS_FILE)}
        missing = [name for name, file in files.items() if not file.is_file()]
        if len(missing) == len(files):
            raise ModelFileError(
                f"{path} is not a jaxatom model (it has no {' or '.join(missing)}); pass the directory (or .zip) "
                "written by Potential.save, e.g. <run_dir>/best_model"
            )
        if missing:
            raise ModelFileError(f"the model directory {path} lacks {', '.join(missing)}; it is incomplete")
        return files[CONFIG_FILE].read_bytes(), files[PARAMS_FILE].read_bytes()
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is neither a model directory nor a zip archive written by Potential.save")
    with zipfile.ZipFile(path) as archive:
        missing = [name for name in (CONFIG_FILE, PARAMS_FILE) if name not in archive.namelist()]
        if missing:
            raise ModelFileError(f"the model archive {path} lacks {', '.join(missing)}; it is incomplete")
        return archive.read(CONFIG_FILE), archive.read(PARAMS_FILE)


def _check_params(params: dict, template, path: Path) -> None:
    found = {k: np.shape(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}
    expected = {k: v.shape for k, v in traverse_util.flatten_dict(template, sep="/").items()}
    problems = [f"missing {k}" for k in sorted(expected.keys() - found.keys())]
    problems += [f"unexpected {k}" for k in sorted(found.keys() - expected.keys())]
    problems += [
        f"{k} has shape {found[k]}, the config implies {expected[k]}"
        for k in sorted(expected.keys() & found.keys())
        if tuple(found[k]) != tuple(expected[k])
    ]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ModelFileError(f"the parameters in {path} do not match its config.json: {shown}")


def _parse_config(config_bytes: bytes, path: Path) -> dict:
    """The ``config.json`` of a jaxatom model this version can read."""
    try:
        config = json.loads(config_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{path}/{CONFIG_FILE} is not valid JSON: {err}") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ModelFileError(f"{path} is not a jaxatom model file (format {found!r})")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model format version {version}, newer than this jaxatom reads ({FORMAT_VERSION}); "
            "upgrade jaxatom to load it"
        )
    return config


def _model_settings(config: dict, path: Path) -> tuple[AtomisticModel, tuple[int, ...], dict]:
    """The model, its elements and its per-output scaling described by ``config`` (format 1, 2 or 3)."""
    try:
        if config["format_version"] == 1:  # one energy head, offsets under "energy"
            head = _module_from_config({**config["head"], "output_key": "energy", "per_atom_output_key": "energies"})
            energy = config["energy"]
            scaling = {"energy": OutputScaling(energy.get("scale", 1.0), energy.get("shift_per_atom", 0.0),
                                               energy.get("atomrefs", {}))}  # fmt: skip
            model = AtomisticModel(representation=_module_from_config(config["representation"]), heads=(head,))
        else:
            model = _model_from_entry(config)
            scaling = {name: OutputScaling.from_dict(values) for name, values in config.get("scaling", {}).items()}
        return model, normalise_elements(config["elements"]), scaling
    except KeyError as err:
        raise ModelFileError(f"{path}/{CONFIG_FILE} lacks the entry {err}") from err
    except ModelFileError:
        raise
    except (TypeError, ValueError, AttributeError) as err:
        raise ModelFileError(f"{path}/{CONFIG_FILE} is malformed ({err}); save the model again") from err


def _upgrade_params(params: dict, config: dict) -> dict:
    """Format-1 parameters keep the energy head under ``head``; format 2 names each head by its key."""
    if config["format_version"] == 1 and "head" in params.get("params", {}):
        inner = dict(params["params"])
        inner[ENERGY_HEAD.key] = inner.pop("head")
        return {**params, "params": inner}
    return params


def load_model(path: str | os.PathLike) -> Potential:
    """Load a potential written by :meth:`Potential.save` (directory or zip). Needs neither orbax nor pickle."""
    path = Path(path)
    config_bytes, params_bytes = _read_files(path)
    config = _parse_config(config_bytes, path)
    model, elements, scaling = _model_settings(config, path)
    template = jax.eval_shape(model.init, jax.random.PRNGKey(0), example_graph(model.cutoff))
    try:
        params = serialization.msgpack_restore(params_bytes)
    except Exception as err:  # msgpack raises several unrelated types on corrupt input
        raise ModelFileError(f"{path}/{PARAMS_FILE} cannot be read: {err}") from err
    params = _upgrade_params(params, config)
    _check_params(params, template, path)
    return Potential(
        model=model,
        params=jax.device_put(params),
        elements=elements,
        scaling=scaling,
        metadata=config.get("metadata", {}),
    )
