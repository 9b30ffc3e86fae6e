"""The jitted training and evaluation steps: weighted MSE of energies and forces, AdamW, EMA, NaN guard."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxatom.graph import Graph
from jaxatom.potential.evaluate import evaluate
from jaxatom.train.config import StepConfig, TrainConfig

__all__ = [
    "TrainState",
    "make_optimizer",
    "init_state",
    "train_step",
    "data_parallel_train_step",
    "eval_step",
    "METRIC_KEYS",
]

#: Sums accumulated over batches; metrics are formed from them at the end of an epoch.
METRIC_KEYS = ("loss_sum", "batches", "energy_abs", "energy_sq", "n_graphs", "forces_abs", "forces_sq", "n_forces")


@struct.dataclass
class TrainState:
    """Everything a training step changes (a pytree; checkpointed whole).

    ``learning_rate`` is the plateau-controlled base rate (warm-up is applied on top inside the step);
    ``nan_step`` is the first step whose loss or gradient was not finite (-1: none), whose update was skipped.
    """

    step: jax.Array
    params: dict
    opt_state: optax.OptState
    ema_params: dict
    learning_rate: jax.Array
    nan_step: jax.Array


def make_optimizer(config: StepConfig | TrainConfig) -> optax.GradientTransformation:
    """AdamW (optionally after global-norm clipping) with an injectable learning rate."""

    def chain(learning_rate):
        clip = [optax.clip_by_global_norm(config.clip_norm)] if config.clip_norm else []
        return optax.chain(*clip, optax.adamw(learning_rate, weight_decay=config.weight_decay))

    return optax.inject_hyperparams(chain)(learning_rate=0.0)  # the step sets the rate


def init_state(params, config: TrainConfig) -> TrainState:
    """The state before the first step (with its own copies of ``params``: the step donates the state's buffers)."""
    params = jax.tree.map(lambda p: jnp.array(p, copy=True), params)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=make_optimizer(config.step).init(params),
        ema_params=jax.tree.map(lambda p: jnp.array(p, copy=True), params),
        learning_rate=jnp.asarray(config.learning_rate, jnp.float32),
        nan_step=jnp.full((), -1, jnp.int32),
    )


def _loss(params, model: nn.Module, graph: Graph, labels: dict, energy_scale, config: StepConfig):
    dtype = graph.positions.dtype
    out = evaluate(model, params, graph, jnp.asarray(energy_scale, dtype), jnp.zeros(100, dtype))
    graph_mask = graph.graph_mask.astype(dtype)
    node_mask = graph.node_mask.astype(dtype)[:, None]
    energy_error = (out["energy"] - labels["energy"]) * graph_mask
    forces_error = (out["forces"] - labels["forces"]) * node_mask
    n_graphs = jnp.sum(graph_mask)
    n_forces = 3 * jnp.sum(node_mask)
    loss = (
        config.energy_weight * jnp.sum(energy_error**2) / n_graphs
        + config.forces_weight * jnp.sum(forces_error**2) / n_forces
    )
    metrics = {
        "loss_sum": loss,
        "batches": jnp.ones((), dtype),
        "energy_abs": jnp.sum(jnp.abs(energy_error)),
        "energy_sq": jnp.sum(energy_error**2),
        "n_graphs": n_graphs,
        "forces_abs": jnp.sum(jnp.abs(forces_error)),
        "forces_sq": jnp.sum(forces_error**2),
        "n_forces": n_forces,
    }
    return loss, metrics


def _finite(tree) -> jax.Array:
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def _apply(state: TrainState, grads, metrics: dict, config: StepConfig) -> TrainState:
    """The optimiser, EMA and NaN-guard part of a step, given the batch gradients."""
    warmup = jnp.minimum(1.0, (state.step + 1) / max(config.warmup_steps, 1)) if config.warmup_steps else 1.0
    opt_state = state.opt_state
    opt_state.hyperparams["learning_rate"] = state.learning_rate * warmup
    updates, new_opt_state = make_optimizer(config).update(grads, opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(metrics["loss_sum"]) & _finite(grads)
    keep = functools.partial(jax.tree.map, lambda new, old: jnp.where(finite, new, old))
    if config.ema_decay is None:
        ema = new_params
    else:  # torch_ema's default: the decay ramps up as (1 + n) / (10 + n)
        decay = jnp.minimum(config.ema_decay, (1.0 + state.step) / (10.0 + state.step))
        ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.ema_params, new_params)
    return TrainState(
        step=state.step + 1,
        params=keep(new_params, state.params),
        opt_state=keep(new_opt_state, state.opt_state),
        ema_params=keep(ema, state.ema_params),
        learning_rate=state.learning_rate,
        nan_step=jnp.where((state.nan_step < 0) & ~finite, state.step, state.nan_step),
    )


@functools.partial(jax.jit, static_argnames=("model", "config"), donate_argnums=(0,))
def train_step(state: TrainState, graph: Graph, labels: dict, model: nn.Module, energy_scale, config: StepConfig):
    """One optimiser step; returns the new state and the batch's metric sums. Non-finite steps change nothing but
    ``nan_step``."""
    grads, metrics = jax.grad(_loss, has_aux=True)(state.params, model, graph, labels, energy_scale, config)
    return _apply(state, grads, metrics, config), metrics


@functools.lru_cache(maxsize=8)
def data_parallel_train_step(mesh: Mesh):
    """:func:`train_step` for batches stacked as ``[devices, ...]`` (see ``GraphLoader(n_shards=...)``) and sharded
    over the mesh axis ``"data"``: each device differentiates its shard, gradients are averaged across devices
    (``pmean``), metric sums added (``psum``); parameters and optimiser state stay replicated."""

    @functools.partial(jax.jit, static_argnames=("model", "config"), donate_argnums=(0,))
    def step(state: TrainState, graph: Graph, labels: dict, model: nn.Module, energy_scale, config: StepConfig):
        def shard_gradients(params, graph, labels):
            graph, labels = jax.tree.map(lambda x: x[0], (graph, labels))
            grads, metrics = jax.grad(_loss, has_aux=True)(params, model, graph, labels, energy_scale, config)
            return jax.lax.pmean(grads, "data"), jax.lax.psum(metrics, "data")

        grads, metrics = jax.shard_map(
            shard_gradients, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=(P(), P())
        )(state.params, graph, labels)
        return _apply(state, grads, metrics, config), metrics

    return step


@functools.partial(jax.jit, static_argnames=("model", "config"))
def eval_step(params, graph: Graph, labels: dict, model: nn.Module, energy_scale, config: StepConfig) -> dict:
    """The metric sums of one batch."""
    return _loss(params, model, graph, labels, energy_scale, config)[1]
