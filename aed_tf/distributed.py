"""Training across machines: `tf.distribute.MultiWorkerMirroredStrategy` from ``TF_CONFIG``.

Every worker runs ``aed-tf train`` with the same parameters and its own ``TF_CONFIG``. Keras 3's
``Model.fit`` fails under this strategy (keras-team/keras#20585: it all-reduces eagerly while
building the model; still so in Keras 3.15), so `fit` here is a training loop of its own, used only
when the strategy spans workers. It takes the model compiled by the single-machine route (its
optimizer, schedule and loss scaling) and the same callbacks, so that both routes share everything
but the loop. ``Model.predict`` works under the strategy and is used as it is.

Each step, every worker builds the same global batch from the same seeded pipeline and takes its
share of it; gradients are averaged over the global batch by the optimizer's all-reduce, so every
worker applies the same update and the workers' weights stay identical.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from aed_tf.errors import UserError

# Every worker builds the whole pipeline and keeps its replicas' share of each global batch: the
# data are in memory, not in files that could be split between workers.
_SPLIT_EACH_BATCH = tf.data.Options()
_SPLIT_EACH_BATCH.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA


class MultiWorkerUnsupportedError(UserError, RuntimeError):
    """A feature that training across machines does not offer."""


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def describe(strategy: tf.distribute.Strategy) -> dict[str, Any]:
    """The strategy, the machines (workers) and the replicas (devices) that trained together."""
    if is_multi_worker(strategy):
        cluster = strategy.cluster_resolver.cluster_spec()
        name = "MultiWorkerMirroredStrategy"
        workers = sum(cluster.num_tasks(job) for job in ("chief", "worker") if job in cluster.jobs)
    else:
        name = "MirroredStrategy" if isinstance(strategy, tf.distribute.MirroredStrategy) else "default"
        workers = 1
    return {"strategy": name, "workers": workers, "replicas": strategy.num_replicas_in_sync}


def fit(
    model: keras.Model,
    dataset: tf.data.Dataset,
    epochs: int,
    loss: keras.losses.Loss,
    callbacks: list[keras.callbacks.Callback],
    verbose: int,
) -> None:
    """``model.fit(dataset, epochs, callbacks)`` under MultiWorkerMirroredStrategy.

    ``model`` is built and compiled in the strategy's scope; ``dataset`` yields global batches of
    a static size of (features, labels, sample weights); ``loss`` gives one value per example
    (``reduction=None``), weighted by its sample weight and averaged over the global batch, which
    is Keras's loss for sample weights. The logs hold ``loss`` and ``accuracy``, as fit's do.
    """
    strategy = model.distribute_strategy
    optimizer = model.optimizer
    variables = model.trainable_variables
    global_batch_size = dataset.element_spec[0].shape[0]
    if global_batch_size is None:
        raise ValueError("the training dataset's batch size must be static (drop_remainder=True)")
    share_first_replica_statistics = _first_replica_copy(strategy, _batch_norm_statistics(model))
    with strategy.scope():
        optimizer.build(variables)  # the optimizer's own variables, mirrored, before any step

    # XLA compiles the forward and backward pass, not the update: XLA has no cross-worker
    # collectives on CPUs, and the update's all-reduce is one.
    @tf.function(jit_compile=model.jit_compile)
    def gradients(
        features: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor
    ) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            probabilities = model(features, training=True)
            # No backbone adds regularisation losses (model.losses), so this is fit's whole loss.
            batch_loss = tf.nn.compute_average_loss(
                loss(labels, probabilities) * weights, global_batch_size=global_batch_size
            )
            scaled_loss = optimizer.scale_loss(batch_loss)  # mixed precision: a LossScaleOptimizer
        hits = tf.equal(tf.argmax(probabilities, axis=-1), tf.argmax(labels, axis=-1))
        return tape.gradient(scaled_loss, variables), batch_loss, tf.reduce_sum(tf.cast(hits, tf.float32))

    def replica_step(
        features: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        grads, batch_loss, correct = gradients(features, labels, weights)
        optimizer.apply_gradients(zip(grads, variables))  # sums the gradients over all replicas
        return batch_loss, correct

    @tf.function
    def train_step(features: Any, labels: Any, weights: Any) -> tuple[tf.Tensor, tf.Tensor]:
        batch_loss, correct = strategy.run(replica_step, args=(features, labels, weights))
        # Each replica's loss is its share of the global batch's mean: their sum is that mean.
        return (
            strategy.reduce(tf.distribute.ReduceOp.SUM, batch_loss, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None),
        )

    batches = strategy.experimental_distribute_dataset(dataset.with_options(_SPLIT_EACH_BATCH))
    steps = int(dataset.cardinality())
    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=steps if steps > 0 else None,
        model=model,
    )
    model.stop_training = False
    callback_list.on_train_begin()
    logs: dict[str, float] = {}
    for epoch in range(epochs):
        callback_list.on_epoch_begin(epoch)
        loss_sum = correct = 0.0
        for step, (features, labels, weights) in enumerate(batches):  # a new iterator: a new shuffle
            callback_list.on_train_batch_begin(step)
            batch_loss, batch_correct = train_step(features, labels, weights)
            loss_sum += float(batch_loss)
            correct += float(batch_correct)
            logs = {"loss": loss_sum / (step + 1), "accuracy": correct / ((step + 1) * global_batch_size)}
            callback_list.on_train_batch_end(step, logs)
        share_first_replica_statistics()
        # The workers now hold the same weights, so they compute the same validation metrics
        # and EarlyStopping stops them all at the same epoch, as the collectives require.
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)


def _batch_norm_statistics(model: keras.Model) -> list[keras.Variable]:
    """The moving means and variances of every BatchNormalization layer, nested ones included."""
    statistics, layers = [], [model]
    while layers:
        layer = layers.pop()
        if isinstance(layer, keras.layers.BatchNormalization):
            statistics += [layer.moving_mean, layer.moving_variance]
        layers += getattr(layer, "layers", [])
    return statistics


def _first_replica_copy(
    strategy: tf.distribute.Strategy, variables: list[keras.Variable]
) -> Callable[[], None]:
    """A function that gives every replica the first replica's values of ``variables``.

    BatchNormalization updates its moving statistics on each replica from that replica's share of
    the batch, without aggregation, so replicas drift apart. On one machine MirroredStrategy reads
    and saves the first replica's; copying them to all workers keeps that meaning, and the copy is
    exact, so the workers' weights stay bit-identical.
    """

    def copy() -> None:
        context = tf.distribute.get_replica_context()
        for variable in variables:
            gathered = context.all_gather(variable.value[tf.newaxis], axis=0)
            variable.assign(gathered[0])

    @tf.function
    def copy_on_every_replica() -> None:
        if variables:
            strategy.run(copy)

    return copy_on_every_replica
