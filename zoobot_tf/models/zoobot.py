"""The Zoobot model: view (preprocessing + augmentation) -> backbone -> pooled embedding -> head.

``Zoobot`` is a Keras functional model built inside a subclass (the keras-hub pattern): every
constructor argument is stored and returned by ``get_config()``, so ``model.save("m.keras")`` and
``keras.models.load_model("m.keras")`` round-trip with no custom code.

    >>> model = Zoobot(schema="gz_decals_dr5", backbone="convnext_nano", image_size=224, channels=1)
    >>> model.compile()            # AdamW, Dirichlet-multinomial loss, per-question loss metrics
    >>> model.fit(train_ds, validation_data=val_ds)

Inputs are pixels in [0, 255], shaped (batch, H, W, input_channels), any H and W; outputs are
concentrations (votes task), class probabilities (classification) or targets (regression).
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from zoobot_tf import losses as zlosses
from zoobot_tf.models.backbones import build_backbone, get_spec, stage_groups
from zoobot_tf.models.heads import OUTPUT_NAMES, TASKS, head_layers
from zoobot_tf.models.preprocessing import GalaxyView
from zoobot_tf.optimizers import ZoobotAdamW
from zoobot_tf.schemas import Schema, get_schema

PRECISION_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


@contextlib.contextmanager
def dtype_policy(name: str | None):
    """Build layers under a dtype policy (``float32``, ``mixed_bfloat16``, ``mixed_float16``), then restore.

    Each layer keeps the policy it was built with (and saves it in its config), so setting the global
    policy only while building affects nothing else in the process.
    """
    if name is None:
        yield
        return
    if name not in PRECISION_POLICIES:
        raise ValueError(f"Unknown precision. Received: precision={name!r}; expected one of {PRECISION_POLICIES}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@keras.saving.register_keras_serializable(package="zoobot_tf")
class Zoobot(keras.Model):
    """A galaxy morphology model.

    Args:
        task: ``"votes"`` (Dirichlet-multinomial over ``schema``), ``"classification"`` or ``"regression"``.
        schema: decision tree for the votes task (name, dict or Schema).
        n_classes / class_names: classification outputs.
        n_targets / target_names: regression outputs.
        backbone: registry name (see ``zoobot_tf.models.backbones.list_backbones()``).
        backbone_kwargs: overrides for the backbone builder (e.g. ``{"drop_path_rate": 0.1}``).
        image_size: side of the square image the backbone sees.
        channels: 1 (greyscale, Zoobot's default) or 3 (colour).
        input_channels: channels of the raw input images (3 for RGB JPEGs; alpha is dropped if 4).
        crop_fraction: central fraction of the input image kept (per data set).
        augment: dict of :class:`GalaxyView` augmentation options (``rotate``, ``flip``, ``crop_scale``...),
            or False to disable training augmentation.
        dropout_rate: dropout before the head's Dense layer (kept on for MC-dropout predictions).
        precision: build under this dtype policy (``mixed_bfloat16`` etc.); heads and loss stay float32.
    """

    def __init__(
        self,
        task: str = "votes",
        schema: str | dict | Schema | None = "gz_decals_dr5",
        n_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        n_targets: int | None = None,
        target_names: Sequence[str] | None = None,
        backbone: str = "efficientnet_b0",
        backbone_kwargs: dict | None = None,
        image_size: int = 224,
        channels: int = 1,
        input_channels: int = 3,
        crop_fraction: float = 1.0,
        augment: dict | bool = True,
        dropout_rate: float = 0.2,
        precision: str | None = None,
        **kwargs,
    ):
        if task not in TASKS:
            raise ValueError(f"Unknown task. Received: task={task!r}; expected one of {TASKS}")
        schema_obj = get_schema(schema) if task == "votes" else None
        if task == "classification":
            if class_names is not None:
                class_names = [str(c) for c in class_names]
                if n_classes is not None and n_classes != len(class_names):
                    raise ValueError(f"n_classes={n_classes} does not match {len(class_names)} class_names")
                n_classes = len(class_names)
            if not n_classes or n_classes < 2:
                raise ValueError(f"A classification head needs n_classes >= 2. Received: n_classes={n_classes}")
            class_names = class_names or [str(i) for i in range(n_classes)]
        if task == "regression":
            if target_names is not None:
                target_names = [str(t) for t in target_names]
                n_targets = len(target_names)
            n_targets = n_targets or 1
            target_names = target_names or [f"target_{i}" for i in range(n_targets)]
        n_out = {"votes": schema_obj.n_answers if schema_obj else 0,
                 "classification": n_classes or 0, "regression": n_targets or 0}[task]
        augment_kwargs = {} if augment is True else (dict(augment) if augment else {})
        augment_on = augment is not False

        with dtype_policy(precision):
            view = GalaxyView(image_size=image_size, channels=channels, crop_fraction=crop_fraction,
                              augment=augment_on, name="view", **augment_kwargs)
            encoder = build_backbone(backbone, input_shape=(image_size, image_size, channels),
                                     **(backbone_kwargs or {}))
            head = head_layers(task, n_out, dropout_rate)
            inputs = keras.Input(shape=(None, None, input_channels), name="image")
            embedding = encoder(view(inputs))
            x = embedding
            for layer in head:
                x = layer(x)
        super().__init__(inputs=inputs, outputs=x, **kwargs)

        self.task = task
        self.schema = schema_obj
        self.n_classes = n_classes if task == "classification" else None
        self.class_names = list(class_names) if task == "classification" else None
        self.n_targets = n_targets if task == "regression" else None
        self.target_names = list(target_names) if task == "regression" else None
        self.backbone = backbone
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.input_channels = int(input_channels)
        self.crop_fraction = float(crop_fraction)
        self.augment = augment if isinstance(augment, bool) else dict(augment)
        self.dropout_rate = float(dropout_rate)
        self.precision = precision
        self.view = view
        self.encoder = encoder
        self.head = head
        self.output_name = OUTPUT_NAMES[task]
        self.embedding_dim = int(encoder.output.shape[-1])
        self._embedding_tensor = embedding

    # ------------------------------------------------------------------ config
    def get_config(self):
        return {
            "name": self.name, "trainable": self.trainable,
            "task": self.task, "schema": self.schema.to_dict() if self.schema else None,
            "n_classes": self.n_classes, "class_names": self.class_names,
            "n_targets": self.n_targets, "target_names": self.target_names,
            "backbone": self.backbone, "backbone_kwargs": self.backbone_kwargs,
            "image_size": self.image_size, "channels": self.channels, "input_channels": self.input_channels,
            "crop_fraction": self.crop_fraction, "augment": self.augment, "dropout_rate": self.dropout_rate,
            "precision": self.precision,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone_kwargs",):  # JSON turns tuples into lists; builders accept either
            if config.get(key):
                config[key] = {k: tuple(v) if isinstance(v, list) else v for k, v in config[key].items()}
        return cls(**config)

    # ------------------------------------------------------------------ training defaults
    def compile(self, optimizer="auto", loss="auto", metrics="auto", weighted_metrics="auto",
                learning_rate: float = 1e-3, weight_decay: float = 0.01, clipnorm: float | None = 0.3,
                **kwargs):
        """Sensible defaults, so ``model.compile(); model.fit(ds)`` works on a fresh model.

        ``optimizer="auto"`` is AdamW (lr 1e-3, weight decay 0.01, global gradient clipping 0.3) that
        clips correctly under tf.distribute. Metrics use sample weights, so padded rows never count.
        """
        if isinstance(optimizer, str) and optimizer == "auto":
            optimizer = ZoobotAdamW(learning_rate=learning_rate, weight_decay=weight_decay, global_clipnorm=clipnorm)
        if isinstance(loss, str) and loss == "auto":
            loss = default_loss(self)
        if isinstance(metrics, str) and metrics == "auto":
            metrics = None
        if isinstance(weighted_metrics, str) and weighted_metrics == "auto":
            weighted_metrics = default_metrics(self)
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, weighted_metrics=weighted_metrics, **kwargs)
        # Create the optimizer's slot variables now, eagerly: otherwise the first train step creates them
        # inside its trace, where each is ~15x slower (7 s of the first step for EfficientNetB0).
        self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, **kwargs):
        """``keras.Model.fit``; tf.data sets are shuffled by their pipeline, so ``shuffle`` defaults to off
        for them (Keras would ignore it and warn)."""
        kwargs.setdefault("shuffle", not isinstance(x, tf.data.Dataset))
        return super().fit(x, y, **kwargs)

    def compile_from_config(self, config):
        """Recompile a reloaded model with the exact objects it was saved with (optimizer state included)."""
        from keras.src.saving import serialization_lib

        config = serialization_lib.deserialize_keras_object(config)
        keras.Model.compile(self, **config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------ multi-worker fixes
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

    def with_precision(self, precision: str | None) -> "Zoobot":
        """This model rebuilt under another dtype policy, with a copy of its weights (``self`` if unchanged).

        For inference in ``mixed_bfloat16`` on CPUs with AMX from a model trained in float32, or back
        (EfficientNetB0 folder -> table 73 vs 51 img/s here, ``benchmarks/results/predict.json``).
        Variables stay float32 under every policy, so the copy is exact.
        """
        if (precision or "float32") == (self.precision or "float32"):
            return self
        config = self.get_config()
        config["precision"] = precision
        other = type(self).from_config(config)
        other.set_weights(self.get_weights())
        return other

    # ------------------------------------------------------------------ parts
    def embedding_model(self) -> keras.Model:
        """images [0, 255] -> pooled embedding (a view of this model: same layers, same weights)."""
        return keras.Model(self.inputs[0], self._embedding_tensor, name="embedding")

    def apply_head(self, embeddings, training: bool = False):
        """Run the head on (batch, embedding_dim) embeddings; ``training=True`` keeps dropout on (MC dropout)."""
        x = embeddings
        for layer in self.head:
            x = layer(x, training=training) if isinstance(layer, keras.layers.Dropout) else layer(x)
        return x

    def init_head_prior(self, prior: np.ndarray, kernel_scale: float = 0.1) -> None:
        """Start the head at a prior: constant concentrations (votes task, e.g. the training set's
        maximum-likelihood constant Dirichlet) or class frequencies (classification).

        The Dense bias is set so the initial output equals the prior, and its kernel is scaled down,
        so training starts from the no-image baseline instead of arbitrary concentrations (~50 for
        every answer at random initialisation, a loss ~50% above the baseline).
        """
        dense = self.get_layer("head_dense")
        kernel, _ = dense.get_weights()
        prior = np.asarray(prior, dtype=np.float64)
        if prior.shape != (kernel.shape[1],):
            raise ValueError(f"prior must have shape ({kernel.shape[1]},). Received: {prior.shape}")
        if self.task == "votes":
            act = self.head[-1]
            p = (np.clip(prior, act.minimum + 1e-2, act.maximum - 1e-2) - act.minimum) / (act.maximum - act.minimum)
            bias = np.log(p / (1 - p))
        elif self.task == "classification":
            bias = np.log(np.clip(prior / prior.sum(), 1e-6, None))
        else:
            bias = prior
        dense.set_weights([kernel * kernel_scale, bias.astype(np.float32)])

    def stage_groups(self) -> list[list[keras.layers.Layer]]:
        """The encoder's layers grouped by stage, stem first."""
        return stage_groups(self.encoder, self.backbone)

    def summary_line(self) -> str:
        return (f"Zoobot({self.task}, backbone={self.backbone}, {self.count_params() / 1e6:.2f}M params, "
                f"{self.image_size}px x {self.channels}ch, embedding {self.embedding_dim})")


def default_loss(model: Zoobot):
    if model.task == "votes":
        return zlosses.DirichletMultinomialLoss(model.schema.question_index_groups)
    if model.task == "classification":
        return keras.losses.SparseCategoricalCrossentropy(name="cross_entropy")
    return keras.losses.MeanSquaredError(name="mse")


def default_metrics(model: Zoobot) -> list:
    if model.task == "votes":
        return zlosses.question_loss_metrics(model.schema)
    if model.task == "classification":
        return [zlosses.PaddedAccuracy(name="accuracy")]
    return [zlosses.PaddedMAE(name="mae")]


def define_model(schema="gz_decals_dr5", backbone: str = "efficientnet_b0", image_size: int = 224,
                 channels: int = 1, **kwargs) -> Zoobot:
    """Zoobot's Dirichlet-multinomial model over ``schema`` (the pretraining model)."""
    return Zoobot(task="votes", schema=schema, backbone=backbone, image_size=image_size, channels=channels, **kwargs)


def count_params_by_part(model: Zoobot) -> dict:
    return {"encoder": int(model.encoder.count_params()),
            "head": int(sum(np.prod(w.shape) for layer in model.head for w in layer.weights)),
            "total": int(model.count_params())}
