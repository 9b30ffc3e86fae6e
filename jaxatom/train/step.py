"""The jitted training and evaluation steps: a weighted sum of loss terms (one per property), AdamW, EMA, NaN guard.

Metric sums per term ``X`` (``X_abs``, ``X_sq`` and the number of compared components ``X_count``) are accumulated
over batches; :func:`~jaxatom.train.fit.epoch_metrics` turns them into MAE and RMSE in the property's unit.
"""

from __future__ import annotations

import dataclasses
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
from jaxatom.train.config import LossTerm, StepConfig, TrainConfig

__all__ = [
    "TrainState",
    "make_optimizer",
    "init_state",
    "train_step",
    "data_parallel_train_step",
    "eval_step",
    "ensemble_train_step",
    "ensemble_eval_step",
]


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


def make_optimizer(config: StepConfig) -> optax.GradientTransformation:
    """AdamW (optionally after global-norm clipping) with an injectable learning rate; parameters named in
    ``config.frozen`` get zero updates (optax ``multi_transform`` with ``set_to_zero``, clipping only the rest)."""

    def chain(learning_rate):
        clip = [optax.clip_by_global_norm(config.clip_norm)] if config.clip_norm else []
        adamw = optax.chain(*clip, optax.adamw(learning_rate, weight_decay=config.weight_decay))
        if not config.frozen:
            return adamw
        return optax.multi_transform({"train": adamw, "frozen": optax.set_to_zero()},
                                     functools.partial(_labels, frozen=config.frozen))  # fmt: skip

    return optax.inject_hyperparams(chain)(learning_rate=0.0)  # the step sets the rate


def _is_frozen(path, frozen: tuple[str, ...]) -> bool:
    """Whether the parameter at ``path`` (``params/<name>/...``) lies under a frozen top-level name."""
    return len(path) > 1 and getattr(path[1], "key", None) in frozen


def _labels(params, frozen: tuple[str, ...]):
    return jax.tree_util.tree_map_with_path(lambda path, _: "frozen" if _is_frozen(path, frozen) else "train", params)


def init_state(params, config: TrainConfig, frozen: tuple[str, ...] = ()) -> TrainState:
    """The state before the first step (with its own copies of ``params``: the step donates the state's buffers);
    ``frozen`` as :attr:`StepConfig.frozen`."""
    params = jax.tree.map(lambda p: jnp.array(p, copy=True), params)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=make_optimizer(dataclasses.replace(config.step, frozen=frozen)).init(params),
        ema_params=jax.tree.map(lambda p: jnp.array(p, copy=True), params),
        learning_rate=jnp.asarray(config.learning_rate, jnp.float32),
        nan_step=jnp.full((), -1, jnp.int32),
    )


def _elementwise(term: LossTerm, error: jax.Array) -> jax.Array:
    if term.kind == "mae":
        return jnp.abs(error)
    if term.kind == "huber":
        return optax.huber_loss(error, delta=term.delta)
    return error**2


def _per_atom_outputs(model: nn.Module) -> frozenset[str]:
    return frozenset({"forces", *(spec.name for spec in model.outputs if spec.per_atom)})


def _loss(params, model: nn.Module, graph: Graph, labels: dict, scaling: dict, config: StepConfig):
    """The weighted loss of a batch and its metric sums (labels and model outputs without offsets)."""
    dtype = graph.positions.dtype
    out = evaluate(model, params, graph, scaling, with_stress=any(t.name == "stress" for t in config.terms))
    per_atom = _per_atom_outputs(model)
    loss = jnp.zeros((), dtype)
    metrics = {"batches": jnp.ones((), dtype)}
    for term in config.terms:
        mask = (graph.node_mask if term.name in per_atom else graph.graph_mask).astype(dtype)
        prediction = out[term.name]
        mask = mask.reshape(mask.shape + (1,) * (prediction.ndim - 1))
        error = (prediction - labels[term.name]) * mask
        count = jnp.sum(mask) * (prediction[0].size if prediction.ndim > 1 else 1)
        if term.weight > 0:
            loss = loss + term.weight * jnp.sum(_elementwise(term, error) * mask) / jnp.maximum(count, 1)
        metrics[f"{term.name}_abs"] = jnp.sum(jnp.abs(error))
        metrics[f"{term.name}_sq"] = jnp.sum(error**2)
        metrics[f"{term.name}_count"] = count
    metrics["loss_sum"] = loss
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
        if config.frozen:  # exactly the (unchanged) parameters, not a rounded average of equal values
            ema = jax.tree_util.tree_map_with_path(
                lambda path, e, p: p if _is_frozen(path, config.frozen) else e, ema, new_params
            )
    return TrainState(
        step=state.step + 1,
        params=keep(new_params, state.params),
        opt_state=keep(new_opt_state, state.opt_state),
        ema_params=keep(ema, state.ema_params),
        learning_rate=state.learning_rate,
        nan_step=jnp.where((state.nan_step < 0) & ~finite, state.step, state.nan_step),
    )


def _step(state: TrainState, graph: Graph, labels: dict, model: nn.Module, scaling: dict, config: StepConfig):
    grads, metrics = jax.grad(_loss, has_aux=True)(state.params, model, graph, labels, scaling, config)
    return _apply(state, grads, metrics, config), metrics


@functools.partial(jax.jit, static_argnames=("model", "config"), donate_argnums=(0,))
def train_step(state: TrainState, graph: Graph, labels: dict, model: nn.Module, scaling: dict, config: StepConfig):
    """One optimiser step; returns the new state and the batch's metric sums. Non-finite steps change nothing but
    ``nan_step``. ``scaling``: the model's per-output scales with zero offsets (labels come without offsets)."""
    return _step(state, graph, labels, model, scaling, config)


@functools.partial(jax.jit, static_argnames=("model", "config"), donate_argnums=(0,))
def ensemble_train_step(
    state: TrainState,
    graph: Graph,
    labels: dict,
    active: jax.Array,
    model: nn.Module,
    scaling: dict,
    config: StepConfig,
):
    """:func:`train_step` of ``M`` members at once (``vmap``): ``state``, ``graph`` and ``labels`` stacked as
    ``[M, ...]`` (each member its own batch, padded to common shapes), ``scaling`` shared. Members whose ``active
    [M]`` is false keep their state (their update is computed and discarded). Returns the new state and the metric
    sums ``[M]``."""
    new, metrics = jax.vmap(lambda s, g, y: _step(s, g, y, model, scaling, config))(state, graph, labels)
    keep = jax.vmap(lambda on, a, b: jax.tree.map(lambda x, y: jnp.where(on, x, y), a, b))
    return keep(active, new, state), metrics


@functools.lru_cache(maxsize=8)
def data_parallel_train_step(mesh: Mesh):
    """:func:`train_step` for batches stacked as ``[devices, ...]`` (see ``GraphLoader(n_shards=...)``) and sharded
    over the mesh axis ``"data"``: each device differentiates its shard, gradients are averaged across devices
    (``pmean``), metric sums added (``psum``); parameters and optimiser state stay replicated."""

    @functools.partial(jax.jit, static_argnames=("model", "config"), donate_argnums=(0,))
    def step(state: TrainState, graph: Graph, labels: dict, model: nn.Module, scaling: dict, config: StepConfig):
        def shard_gradients(params, graph, labels):
            graph, labels = jax.tree.map(lambda x: x[0], (graph, labels))
            grads, metrics = jax.grad(_loss, has_aux=True)(params, model, graph, labels, scaling, config)
            return jax.lax.pmean(grads, "data"), jax.lax.psum(metrics, "data")

        grads, metrics = jax.shard_map(
            shard_gradients, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=(P(), P())
        )(state.params, graph, labels)
        return _apply(state, grads, metrics, config), metrics

    return step


@functools.partial(jax.jit, static_argnames=("model", "config"))
def eval_step(params, graph: Graph, labels: dict, model: nn.Module, scaling: dict, config: StepConfig) -> dict:
    """The metric sums of one batch."""
    return _loss(params, model, graph, labels, scaling, config)[1]


@functools.partial(jax.jit, static_argnames=("model", "config"))
def ensemble_eval_step(params, graph: Graph, labels: dict, model: nn.Module, scaling: dict, config: StepConfig) -> dict:
    """The metric sums ``[M]`` of one batch for ``M`` members (``params`` stacked ``[M, ...]``, one shared batch)."""
    return jax.vmap(lambda p: _loss(p, model, graph, labels, scaling, config)[1])(params)
