"""Narrow overrides of ``keras.Model`` internals that make Keras 3.15's ``fit`` correct where it is not.

Not performance code, so not behind the fast switch: without these, the stock path computes something
else or fails. Each names the Keras bug it works around; ``python -m zoobot_tf.ops.selfcheck`` reports
whether the Keras internals they rely on are still there.
"""
from __future__ import annotations

import keras
import tensorflow as tf


class KerasFitFixes:
    """Mixin for ``keras.Model`` subclasses (put it first in the bases)."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Build metric and optimizer state from the first batch's *shapes*.

        Keras 3 gets them by ``strategy.reduce("MEAN", batch)``, which raises under
        MultiWorkerMirroredStrategy ("Attempt to convert a value (PerReplica...)", keras-team/keras#20585);
        one replica's local batch has the same shapes and needs no communication.
        """
        if iterator is not None and data_batch is None and self._distribute_strategy is not None:
            strategy = self.distribute_strategy
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, batch)
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _multi_worker(self) -> bool:
        return isinstance(self._distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def _logs_for_reduction(self, logs):
        """Under MultiWorkerMirroredStrategy Keras 3 reduces each step's scalar logs with
        ``strategy.reduce("MEAN", v, axis=0)``, which fails on scalars ("Invalid reduction dimension 0").
        Shape-[1] logs reduce to the mean over replicas. Epoch logs are read from the metric variables,
        which are aggregated across workers, so they are exact either way."""
        if not self._multi_worker():
            return logs
        return {k: tf.reshape(v, [1]) if getattr(v, "shape", None) == () else v for k, v in logs.items()}

    def train_step(self, data):
        return self._logs_for_reduction(super().train_step(data))

    def test_step(self, data):
        return self._logs_for_reduction(super().test_step(data))

    def compile_from_config(self, config):
        """Recompile a reloaded model with the exact objects it was saved with (optimizer state included);
        Keras 3's own version rebuilds the optimizer from its class name and loses our subclass."""
        from keras.src.saving import serialization_lib

        config = serialization_lib.deserialize_keras_object(config)
        keras.Model.compile(self, **config)
        if self.built:
            self.optimizer.build(self.trainable_variables)
