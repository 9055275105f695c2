"""The Task interface: everything that depends on *what* a model predicts, in one object.

A model is an encoder (the backbone) plus a task. The task owns:

* the head's output layer, its loss, metrics and the metric that early stopping watches;
* the no-image prior (the baseline a model must beat, and the head's initial output);
* the labels: which catalog columns hold them, how they are checked, stored in TFRecords, read from TFDS;
* the outputs: the prediction table's columns, the exported model's serving outputs, the test metrics.

Every other module asks the task; none compares task names. A new task is one new module with a
:class:`Task` subclass decorated with :func:`register_task` (see ``tasks/__init__.py``).
"""
from __future__ import annotations

import abc
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd

TASK_REGISTRY: dict[str, type["Task"]] = {}


def register_task(cls: type["Task"]) -> type["Task"]:
    """Class decorator: make a task constructible from its config (``{"name": cls.name, ...}``)."""
    TASK_REGISTRY[cls.name] = cls
    return cls


class Task(abc.ABC):
    """Base class. Subclasses set the class attributes and implement the abstract methods."""

    name: ClassVar[str] = ""  # registry key, stored in configs, manifests and exports
    output_name: ClassVar[str] = ""  # the head's output layer, HDF5 dataset and main serving output
    monitor: ClassVar[str] = "val_loss"  # what checkpoints and early stopping minimise
    label_dtype: ClassVar[str] = "float32"  # dtype of one galaxy's label in the input pipeline
    tfds_label: ClassVar[str] = ""  # the feature of a TFDS example that holds this task's label
    label_values: ClassVar[str] = "numbers"  # what label columns hold (data.catalogs.VALUE_KINDS)
    fixed_label_columns: ClassVar[bool] = False  # True when the task itself names its catalog columns

    # ------------------------------------------------------------------ identity and (de)serialisation
    def get_config(self) -> dict:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: Mapping) -> "Task":
        config = dict(config)
        config.pop("name", None)
        return cls(**config)

    def replace(self, **changes) -> "Task":
        """A copy of this task with some of its config's values changed (``task.replace(label_smoothing=0.1)``)."""
        return type(self).from_config({**self.get_config(), **changes})

    def __eq__(self, other) -> bool:
        return isinstance(other, Task) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(repr(self.get_config()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.n_outputs} outputs)"

    @classmethod
    def for_catalog(cls, catalog: pd.DataFrame, columns: Sequence[str] | None = None, **options) -> "Task":
        """This kind of task for a catalog's label columns (e.g. a classifier's classes found in the column)."""
        return cls(**options)

    # ------------------------------------------------------------------ the head
    @property
    def n_outputs(self) -> int:
        return len(self.output_labels)

    @property
    @abc.abstractmethod
    def output_labels(self) -> list[str]:
        """One name per model output, in order (answer columns, class names, target names)."""

    @abc.abstractmethod
    def output_layer(self):
        """The head's last layer: maps the Dense layer's logits to outputs, float32, named ``output_name``."""

    @abc.abstractmethod
    def loss(self):
        """The Keras loss: y_true = this task's labels, y_pred = the head's outputs; one value per galaxy."""

    def metrics(self) -> list:
        """Weighted metrics: they receive the pipeline's sample weights (0 for padding rows)."""
        return []

    #: :func:`zoobot_tf.finetuning.finetune` starts a new head of this task at :meth:`prior`. On for votes, where
    #: benchmarks/vote_head_start.py measured it (a new tree from 200 labels: a random head ends worse than the
    #: no-image baseline); off for the other tasks, whose finetuning numbers were measured from a random head.
    finetune_from_prior: bool = False

    @abc.abstractmethod
    def prior(self, labels: np.ndarray) -> np.ndarray:
        """(n_outputs,) the constant prediction of the no-image baseline, fitted on training labels."""

    @abc.abstractmethod
    def head_bias(self, prior: np.ndarray) -> np.ndarray:
        """The head Dense layer's bias that makes the head output ``prior`` for a zero kernel."""

    # ------------------------------------------------------------------ labels
    def label_columns(self, columns: Sequence[str] | None = None) -> list[str]:
        """The catalog columns holding this task's labels (``columns`` where the user chooses them)."""
        if not columns:
            raise ValueError(f"A {self.name} task needs the catalog's label column(s) (--label_cols).")
        return [columns] if isinstance(columns, str) else list(columns)

    def validate_catalog(self, catalog: pd.DataFrame, columns: Sequence[str] | None = None,
                         require_files: bool = True) -> None:
        """Raise one CatalogError naming every problem of ``catalog`` for this task."""
        from zoobot_tf.data.catalogs import validate_catalog

        validate_catalog(catalog, label_cols=self.label_columns(columns), values=self.label_values,
                         require_files=require_files)

    def encode(self, catalog: pd.DataFrame, columns: Sequence[str] | None = None) -> np.ndarray:
        """Catalog rows -> label array (n, ...) in ``label_dtype``."""
        return catalog[self.label_columns(columns)].to_numpy(self.label_dtype)

    @abc.abstractmethod
    def example_features(self, label) -> dict:
        """One galaxy's label as ``tf.train.Feature`` s for a TFRecord example."""

    @abc.abstractmethod
    def feature_spec(self) -> dict:
        """``tf.io.parse_single_example`` spec of the label features written by :meth:`example_features`."""

    @abc.abstractmethod
    def parse(self, example: Mapping[str, Any]):
        """Parsed TFRecord (or TFDS) features -> the label tensor of one galaxy."""

    def balanced_class_weight(self, labels: np.ndarray) -> dict | None:
        """{class: weight} that balances imbalanced labels (classification); None for other tasks."""
        return None

    @property
    def mirror_permutation(self) -> list[int] | None:
        """For each output, the output a left-right mirror image of the galaxy holds it in, when the task knows
        how a mirror acts on its labels (predictions are then averaged with the mirror image's:
        :meth:`zoobot_tf.models.zoobot.Zoobot.symmetric`); None when it does not (the default)."""
        return None

    def label_warnings(self, labels: np.ndarray) -> list[str]:
        """What training on ``labels`` cannot teach this head, one message each (classification: the classes no
        training galaxy has); :func:`zoobot_tf.finetune` logs them before training. None for other tasks."""
        return []

    def sample_weight_table(self, class_weight: Mapping[int, float] | None) -> np.ndarray | None:
        """Per-label weights for imbalanced labels (classification); None when there are none."""
        if class_weight:
            raise ValueError(f"Class weights apply to classification, not to a {self.name} task.")
        return None

    # ------------------------------------------------------------------ outputs
    @abc.abstractmethod
    def table(self, ids: Sequence[str], samples: np.ndarray, interval: float = 0.9,
              asked_threshold: float = 0.5) -> pd.DataFrame:
        """The per-galaxy prediction table for ``samples`` shaped (galaxies, outputs, samples)."""

    @abc.abstractmethod
    def chart(self, output: np.ndarray, label: np.ndarray | None = None) -> list[tuple[str, list[tuple[str, float, float]]]]:
        """What to draw for one galaxy: ``[(group title, [(row name, predicted, observed or NaN), ...]), ...]``
        (questions and their answers' fractions, classes and their probabilities...)."""

    @abc.abstractmethod
    def categories(self, outputs: np.ndarray) -> pd.DataFrame:
        """Short, categorical descriptions of deterministic outputs (n, n_outputs), one column per aspect:
        for labelling galaxies in the TensorBoard projector and colouring them."""

    def serving_outputs(self, outputs) -> dict:
        """Deterministic head outputs (batch, n_outputs) -> the exported signature's named outputs."""
        return {self.output_name: outputs}

    @property
    def serving_output_names(self) -> list[str]:
        return [self.output_name]

    @abc.abstractmethod
    def evaluate(self, labels: np.ndarray, outputs: np.ndarray, prior: np.ndarray | None = None) -> pd.DataFrame:
        """Test metrics as a table (one row per question/class/target and a ``total`` row), with the
        ``prior`` (no-image baseline) alongside when given."""

    def metadata(self) -> dict:
        """What a client needs to label this task's outputs (goes into exports)."""
        return {"task": self.name, "task_config": self.get_config(), "output_labels": self.output_labels,
                "outputs": self.serving_output_names}
