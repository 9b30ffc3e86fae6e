"""Data-parallel training on two (forced) host devices gives the same result as one device."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, tempfile
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    import numpy as np
    import jaxatom
    from jaxatom import data
    from jaxatom.nn import PaiNN
    from jaxatom.train import TrainConfig, fit, with_energy_offsets

    assert jax.device_count() == 2, jax.devices()
    ethanol = data.load_builtin("ethanol")
    train, val = ethanol.subset(np.arange(40)), ethanol.subset(np.arange(2000, 2016))
    model = PaiNN(n_atom_basis=8, n_interactions=1, cutoff=4.0, n_rbf=6)
    potential = with_energy_offsets(jaxatom.Potential.create(model, elements=[1, 6, 8]), train)
    results = {}
    for parallel in (False, True):
        config = TrainConfig(batch_size=16, max_epochs=3, learning_rate=3e-3, seed=1, data_parallel=parallel)
        with tempfile.TemporaryDirectory() as run_dir:
            results[parallel] = fit(potential, train, val, config, run_dir, progress=False).params
    # Adam turns float32 noise in gradients near zero into steps of the learning rate's size: atol 1e-4 after 9 steps
    for a, b in zip(jax.tree.leaves(results[False]), jax.tree.leaves(results[True]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=1e-4)
    changed = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                  for a, b in zip(jax.tree.leaves(results[True]), jax.tree.leaves(potential.params), strict=True))
    assert changed > 1e-3, changed
    print("ok")
    """
)


def test_two_devices_train_like_one():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
