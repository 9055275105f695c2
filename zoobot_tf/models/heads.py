"""Task heads on top of the pooled embedding, and each task's default loss and metrics.

Tasks:
  * ``votes``: Dirichlet-multinomial over a decision tree (Zoobot's head): dropout -> Dense(n_answers)
    -> concentrations in (1, 101) through :class:`DirichletConcentration`;
  * ``classification``: dropout -> Dense(n_classes) -> softmax probabilities;
  * ``regression``: dropout -> Dense(n_targets), linear.

Head outputs are float32 under any mixed-precision policy.
"""
from __future__ import annotations

import keras
from keras import layers, ops

TASKS = ("votes", "classification", "regression")
OUTPUT_NAMES = {"votes": "concentrations", "classification": "probabilities", "regression": "targets"}


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


def head_layers(task: str, n_outputs: int, dropout_rate: float) -> list[keras.layers.Layer]:
    """The head's layers in order (dropout, dense, output activation); names are stable."""
    if task not in TASKS:
        raise ValueError(f"Unknown task. Received: task={task!r}; expected one of {TASKS}")
    if n_outputs < 1:
        raise ValueError(f"A {task} head needs at least one output. Received: n_outputs={n_outputs}")
    out = [layers.Dropout(dropout_rate, name="head_dropout"),
           layers.Dense(n_outputs, dtype="float32", name="head_dense")]
    if task == "votes":
        out.append(DirichletConcentration(name=OUTPUT_NAMES[task]))
    elif task == "classification":
        out.append(layers.Activation("softmax", dtype="float32", name=OUTPUT_NAMES[task]))
    else:
        out.append(layers.Activation("linear", dtype="float32", name=OUTPUT_NAMES[task]))
    return out
