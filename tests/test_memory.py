"""Runs that cannot fit in memory stop before they start, naming the size they need."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from ase.build import molecule

import jaxatom
from jaxatom import memory
from jaxatom.errors import OutOfMemoryError
from jaxatom.md import simulate

from .conftest import tiny_schnet


def test_required_bytes_counts_outputs_and_scratch():
    compiled = jax.jit(lambda x: jnp.outer(x, x).sum(0) + jnp.sin(jnp.outer(x, x)).sum(1)).lower(jnp.ones(2000))
    assert memory.required_bytes(compiled.compile()) >= 2000 * 2000 * 4  # one [2000, 2000] float32 temporary
    assert memory.available_bytes() > 0


def test_md_that_does_not_fit_is_refused_before_it_runs(monkeypatch, tmp_path):
    potential = jaxatom.Potential.create(tiny_schnet(), [1, 6, 8], seed=0)
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 500)
    with pytest.raises(OutOfMemoryError, match=r"an MD chunk of 4 frames for 2 replica\(s\) x 1 bead\(s\) x 3 atoms "
                       r"needs .* but only 500 B are free; write fewer frames per chunk"):  # fmt: skip
        simulate(potential, molecule("H2O"), 40, n_replicas=2, stride=10, frames_per_chunk=4, progress=False)
