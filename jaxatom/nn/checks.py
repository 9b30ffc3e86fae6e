"""Validation of model settings: every representation and head checks its fields when it is created, so a setting
that cannot work (a zero cutoff, no interaction blocks, an unknown activation) is refused by name before anything is
computed, with a :class:`~jaxatom.errors.ConfigError` that says what would work."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import flax.linen as nn

from jaxatom.errors import ConfigError
from jaxatom.nn.activations import ACTIVATIONS
from jaxatom.nn.radial import CUTOFF_FNS, RADIAL_BASES

__all__ = ["check_representation", "count_problems", "choice_problems"]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def count_problems(name: str, value: Any, minimum: int = 1) -> list[str]:
    """``[]`` if ``value`` is an integer ``>= minimum``, else the problem in words."""
    if _is_int(value) and value >= minimum:
        return []
    return [f"{name} must be an integer >= {minimum}, got {value!r}"]


def choice_problems(name: str, value: Any, choices: Sequence[str], label: str | None = None) -> list[str]:
    """``[]`` if ``value`` is one of ``choices``, else the problem in words (``label``: what ``name`` is called)."""
    if value in choices:
        return []
    label = label or name.replace("_", " ")
    return [f"unknown {label} {value!r}; set {name} to one of {', '.join(sorted(choices))}"]


def _radial_problems(module: nn.Module) -> list[str]:
    """Problems of the radial basis settings: the basis must span a positive range with at least two Gaussians."""
    problems = choice_problems("radial_basis", module.radial_basis, RADIAL_BASES)
    problems += count_problems("n_rbf", module.n_rbf, 2 if module.radial_basis == "gaussian" else 1)
    if not _is_real(module.rbf_start):
        problems.append(f"rbf_start must be a finite number of Å, got {module.rbf_start!r}")
    elif module.radial_basis == "bessel" and module.rbf_start != 0:
        problems.append("the Bessel basis has no start; set rbf_start=0.0")
    end = module.cutoff if module.rbf_cutoff is None else module.rbf_cutoff
    if module.rbf_cutoff is not None and not (_is_real(end) and end > 0):
        problems.append(f"rbf_cutoff must be None (the cutoff) or a finite positive number of Å, got {end!r}")
    elif _is_real(end) and end > 0 and _is_real(module.rbf_start) and end <= module.rbf_start:
        problems.append(f"the radial basis must end (at {end} Å) after it starts (rbf_start={module.rbf_start})")
    return problems


def check_representation(module: nn.Module) -> None:
    """Raise a :class:`ConfigError` listing every unusable setting of a representation (``SchNet``, ``PaiNN``).

    Checked: ``n_atom_basis``, ``n_interactions``, ``n_filters`` and ``n_rbf`` are positive integers (two or more
    Gaussians), ``cutoff`` is a finite positive length, the radial basis spans a positive range, ``activation``,
    ``radial_basis`` and ``cutoff_fn`` are known names and ``epsilon`` is a small positive number.
    """
    problems = count_problems("n_atom_basis", module.n_atom_basis)
    problems += count_problems("n_interactions", module.n_interactions)
    if not (_is_real(module.cutoff) and module.cutoff > 0):
        problems.append(f"cutoff must be a finite positive number of Å (e.g. 5.0), got {module.cutoff!r}")
    if getattr(module, "n_filters", None) is not None:
        problems += count_problems("n_filters", module.n_filters)
    if hasattr(module, "epsilon") and not (_is_real(module.epsilon) and module.epsilon > 0):
        problems.append(f"epsilon must be a small positive number (e.g. 1e-8), got {module.epsilon!r}")
    problems += choice_problems("activation", module.activation, tuple(ACTIVATIONS))
    problems += choice_problems("cutoff_fn", module.cutoff_fn, CUTOFF_FNS, "cutoff function")
    problems += _radial_problems(module)
    if problems:
        raise ConfigError(f"invalid {type(module).__name__} settings: " + "; ".join(problems))
