"""The head on top of the pooled embedding: dropout -> Dense(task outputs) -> the task's output layer.

The task (:mod:`zoobot_tf.tasks`) chooses the output layer: Dirichlet concentrations in (1, 101) through
:class:`DirichletConcentration` (votes), softmax probabilities (classification), linear targets
(regression). Head outputs are float32 under any mixed-precision policy.
"""
from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="zoobot_tf")
class DirichletConcentration(layers.Layer):
    """``minimum + (maximum - minimum) * sigmoid(x)``: concentrations in (1, 101) by default, float32.

    A named layer (not a lambda) so models serialise and reload without custom code.
    """

    def __init__(self, minimum: float = 1.0, maximum: float = 101.0, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if not 0 < minimum < maximum:
            raise ValueError(f"Need 0 < minimum < maximum. Received: minimum={minimum}, maximum={maximum}")
        self.minimum, self.maximum = float(minimum), float(maximum)

    def call(self, x):
        x = ops.cast(x, "float32")
        return self.minimum + (self.maximum - self.minimum) * ops.sigmoid(x)

    def get_config(self):
        return {**super().get_config(), "minimum": self.minimum, "maximum": self.maximum}


def head_layers(task, dropout_rate: float) -> list[keras.layers.Layer]:
    """The head's layers in order (dropout, dense, the task's output layer); names are stable."""
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1). Received: dropout_rate={dropout_rate}")
    return [layers.Dropout(dropout_rate, name="head_dropout"),
            layers.Dense(task.n_outputs, dtype="float32", name="head_dense"),
            task.output_layer()]
