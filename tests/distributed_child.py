"""One process of tests/test_distributed.py: trains a tiny PaiNN (one epoch, then resumed for a second), runs a
few Langevin MD steps of 4 replicas (to a trajectory, then resumed for more steps), and a periodic pair potential
on an on-device neighbour list that overflows before a restart, then writes what it found. Usage: ``python
distributed_child.py OUT NUM_PROCESSES PROCESS_ID PORT``; ``NUM_PROCESSES`` 1 is the reference: one process with two
(forced) CPU devices, data-parallel training over them and MD on one device.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

out, n_processes, process_id, port = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
os.environ["JAX_PLATFORMS"] = "cpu"
if n_processes == 1:
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

sys.path.insert(0, str(Path(__file__).parents[1]))
import jaxatom  # noqa: E402
from jaxatom import distributed  # noqa: E402

distributed.initialize(f"localhost:{port}" if n_processes > 1 else None, n_processes, process_id)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from ase import Atoms  # noqa: E402

from jaxatom import data  # noqa: E402
from jaxatom.md import read_trajectory, simulate  # noqa: E402
from jaxatom.nn import PaiNN  # noqa: E402
from jaxatom.train import TrainConfig, fit, with_energy_offsets  # noqa: E402
from tests.test_md import pair_force_field  # noqa: E402

assert jax.device_count() == 2, jax.devices()
assert distributed.process_count() == n_processes and distributed.process_index() == process_id
ethanol = data.load_builtin("ethanol")
train, val = ethanol.subset(np.arange(16)), ethanol.subset(np.arange(2000, 2008))
model = PaiNN(n_atom_basis=8, n_interactions=1, cutoff=4.0, n_rbf=6)
potential = with_energy_offsets(jaxatom.Potential.create(model, elements=[1, 6, 8]), train)

run_dir = out / f"run_{n_processes}"
config = TrainConfig(batch_size=4, max_epochs=1, learning_rate=3e-3, seed=1)
fit(potential, train, val, config, run_dir, progress=False)
trained = fit(potential, train, val, dataclasses.replace(config, max_epochs=2), run_dir, progress=False)  # resumes

atoms = ethanol.to_atoms(0)
md = dict(timestep_fs=0.5, ensemble="langevin", temperature_K=300.0, friction_per_fs=0.02, n_replicas=4, stride=2,
          seed=3, progress=False)  # fmt: skip
trajectory = out / f"md_{n_processes}.h5"
simulate(potential, atoms, steps=4, output=trajectory, **md)
resumed = simulate(potential, atoms, steps=8, output=trajectory, **md)  # continues from the checkpoint

# 64 argon atoms, 2 replicas: the list overflows between steps 20 and 40 (capacity grows and the chunk reruns), then
# the run is restarted from a checkpoint holding the grown lists (process 0 reads it and sends them to the other)
rng = np.random.default_rng(1)
argon = Atoms(numbers=[18] * 64, positions=rng.random((64, 3)) * 11.0, cell=np.eye(3) * 11.0, pbc=True)
periodic = dict(timestep_fs=2.0, stride=10, frames_per_chunk=2, ensemble="langevin", friction_per_fs=0.02,
                temperature_K=2000.0, n_replicas=2, progress=False, output=out / f"argon_{n_processes}.h5")  # fmt: skip
first = simulate(pair_force_field(argon, 4.0, skin=0.1, capacity_margin=1.0), argon, steps=40, **periodic)
second = simulate(pair_force_field(argon, 4.0, skin=0.1, capacity_margin=1.0), argon, steps=60, **periodic)
assert first.timing["reruns"] >= 1, first.timing  # grown from 832 to 1280
assert second.state.neighbors.max_occupancy == first.state.neighbors.max_occupancy

local = [shard.data.shape for shard in resumed.state.positions.addressable_shards]
(out / f"process_{n_processes}_{process_id}.json").write_text(json.dumps({"local_positions": local}))
final = distributed.gather(resumed.state.positions)
if distributed.is_main_process():
    leaves = {f"param_{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(trained.params))}
    written = read_trajectory(trajectory)
    np.savez(out / f"result_{n_processes}.npz", **leaves, trajectory=written["positions"],
             trajectory_steps=written["step"], final=final,
             argon=read_trajectory(out / f"argon_{n_processes}.h5")["positions"])  # fmt: skip
print("ok", process_id)
