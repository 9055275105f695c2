"""The Zoobot model: view (preprocessing + augmentation) -> backbone -> pooled embedding -> head.

``Zoobot`` is a Keras functional model built inside a subclass (the keras-hub pattern): every
constructor argument is stored and returned by ``get_config()``, so ``model.save("m.keras")`` and
``keras.models.load_model("m.keras")`` round-trip with no custom code once this module is imported
(``from zoobot_tf import Zoobot``; Keras imports no third-party module by itself, so it must be told what
``zoobot_tf>Zoobot`` is). Importing it registers every class a saved model names: the layers, and (for a
compiled model) the loss, metrics and optimizer. ``zoobot_tf.load_model`` does this for you.

    >>> model = Zoobot(schema="gz_decals_dr5", backbone="convnext_nano", image_size=224, channels=1)
    >>> model.compile()            # AdamW, Dirichlet-multinomial loss, per-question loss metrics
    >>> model.fit(train_ds, validation_data=val_ds)

Inputs are pixels in [0, 255], shaped (batch, H, W, input_channels), any H and W; outputs are what the
task (:mod:`zoobot_tf.tasks`) says: concentrations (votes), class probabilities or targets.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

import zoobot_tf.losses  # noqa: F401 - registers the loss and metrics a compiled model's archive names
from zoobot_tf.models.backbones import build_backbone, stage_groups
from zoobot_tf.models.heads import head_layers
from zoobot_tf.models.preprocessing import GalaxyView
from zoobot_tf.ops.keras_fixes import KerasFitFixes
from zoobot_tf.ops.optimizer import ZoobotAdamW
from zoobot_tf.ops.startup import FastStart
from zoobot_tf.schemas import Schema
from zoobot_tf.tasks import Task, make_task

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
class Zoobot(KerasFitFixes, FastStart, keras.Model):
    """A galaxy morphology model: ``task`` (what it predicts) on top of ``backbone`` (the encoder).

    Args:
        task: a :class:`~zoobot_tf.tasks.Task` (``VoteTask(schema)``, ``ClassificationTask(class_names)``,
            ``RegressionTask(target_names)``), a task config dict, or a task name with the options below.
        schema: decision tree when ``task="votes"`` (name, dict or Schema; default ``gz_decals_dr5``).
        n_classes / class_names: when ``task="classification"``.
        n_targets / target_names: when ``task="regression"``.
        backbone: registry name (see ``zoobot_tf.models.backbones.list_backbones()``), or an already-built
            Keras model mapping (image_size, image_size, channels) images in [0, 1] to an embedding
            (2-D output) or a feature map (4-D output, average-pooled here).
        backbone_kwargs: overrides for the registry builder (e.g. ``{"drop_path_rate": 0.1}``).
        image_size: side of the square image the backbone sees.
        channels: 1 (greyscale, Zoobot's default) or 3 (colour).
        input_channels: channels of the raw input images (3 for RGB JPEGs; alpha is dropped if 4).
        crop_fraction: central fraction of the input image kept (per data set).
        augment: dict of :class:`GalaxyView` augmentation options (``rotate``, ``flip``, ``crop_scale``...),
            or False to disable training augmentation.
        dropout_rate: dropout before the head's Dense layer (kept on for MC-dropout predictions).
        precision: build under this dtype policy (``mixed_bfloat16`` etc.); heads and loss stay float32.
        finetuning: recommended finetuning settings for this encoder (``Finetuner`` defaults: n_blocks,
            learning_rate, epochs...), carried in the saved model and its exports.
    """

    def __init__(
        self,
        task: "Task | str | dict" = "votes",
        schema: str | dict | Schema | None = None,
        n_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        n_targets: int | None = None,
        target_names: Sequence[str] | None = None,
        backbone: "str | keras.Model | dict" = "efficientnet_b0",
        backbone_kwargs: dict | None = None,
        image_size: int = 224,
        channels: int = 1,
        input_channels: int = 3,
        crop_fraction: float = 1.0,
        augment: dict | bool = True,
        dropout_rate: float = 0.2,
        precision: str | None = None,
        finetuning: dict | None = None,
        **kwargs,
    ):
        task_obj = make_task(task, schema=schema, class_names=class_names, n_classes=n_classes,
                             target_names=target_names, n_targets=n_targets)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (greyscale) or 3 (colour). Received: channels={channels}")
        if input_channels not in (1, 2, 3, 4):
            raise ValueError(f"input_channels must be 1-4. Received: input_channels={input_channels}")
        augment_kwargs = {} if augment is True else (dict(augment) if augment else {})
        augment_on = augment is not False

        with dtype_policy(precision):
            view = GalaxyView(image_size=image_size, channels=channels, crop_fraction=crop_fraction,
                              augment=augment_on, name="view", **augment_kwargs)
            encoder, backbone_name = _encoder(backbone, image_size, channels, backbone_kwargs)
            head = head_layers(task_obj, dropout_rate)
            inputs = keras.Input(shape=(None, None, input_channels), name="image")
            embedding = encoder(view(inputs))
            x = embedding
            for layer in head:
                x = layer(x)
        super().__init__(inputs=inputs, outputs=x, **kwargs)

        self.task = task_obj
        self.backbone = backbone_name
        self._backbone_arg = backbone if isinstance(backbone, str) else encoder
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.input_channels = int(input_channels)
        self.crop_fraction = float(crop_fraction)
        self.augment = augment if isinstance(augment, bool) else dict(augment)
        self.dropout_rate = float(dropout_rate)
        self.precision = precision
        self.finetuning = dict(finetuning) if finetuning else None
        self.view = view
        self.encoder = encoder
        self.head = head
        self.embedding_dim = int(encoder.output.shape[-1])
        self._embedding_tensor = embedding

    # ------------------------------------------------------------------ the task's parts, by their old names
    @property
    def output_name(self) -> str:
        return self.task.output_name

    @property
    def schema(self) -> Schema | None:
        return getattr(self.task, "schema", None)

    @property
    def class_names(self) -> list[str] | None:
        return getattr(self.task, "class_names", None)

    @property
    def n_classes(self) -> int | None:
        return len(self.class_names) if self.class_names is not None else None

    @property
    def target_names(self) -> list[str] | None:
        return getattr(self.task, "target_names", None)

    @property
    def load_size(self) -> int:
        """The square size images are decoded and resized to before the view crops them (see GalaxyView)."""
        return self.view.load_size

    # ------------------------------------------------------------------ config
    def get_config(self):
        backbone = self._backbone_arg if isinstance(self._backbone_arg, str) else \
            keras.saving.serialize_keras_object(self._backbone_arg)
        return {
            "name": self.name, "trainable": self.trainable, "task": self.task.get_config(),
            "backbone": backbone, "backbone_kwargs": self.backbone_kwargs,
            "image_size": self.image_size, "channels": self.channels, "input_channels": self.input_channels,
            "crop_fraction": self.crop_fraction, "augment": self.augment, "dropout_rate": self.dropout_rate,
            "precision": self.precision, "finetuning": self.finetuning,
            "frozen_encoder_layers": [i for i, layer in enumerate(self._encoder_layers()) if not layer.trainable],
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        frozen = config.pop("frozen_encoder_layers", None) or []
        for key in ("backbone_kwargs",):  # JSON turns tuples into lists; builders accept either
            if config.get(key):
                config[key] = {k: tuple(v) if isinstance(v, list) else v for k, v in config[key].items()}
        model = cls(**config)
        # a finetuned model comes back with the layers it trained frozen as they were, so the optimizer
        # built at compile matches the saved one and its state (moments, step) is restored with it
        layers = model._encoder_layers()
        for i in frozen:
            layers[i].trainable = False
        return model

    def _encoder_layers(self) -> list[keras.layers.Layer]:
        """Every layer inside the encoder, nested ones included, in a fixed order."""
        return list(self.encoder._flatten_layers(include_self=False, recursive=True))

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
            loss = self.task.loss()
        if isinstance(metrics, str) and metrics == "auto":
            metrics = None
        if isinstance(weighted_metrics, str) and weighted_metrics == "auto":
            weighted_metrics = self.task.metrics()
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, weighted_metrics=weighted_metrics, **kwargs)
        # Create the optimizer's slot variables now, eagerly: otherwise the first train step creates them
        # inside its trace, where each is ~15x slower (7 s of the first step for EfficientNetB0).
        self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, **kwargs):
        """``keras.Model.fit``; tf.data sets are shuffled by their pipeline, so ``shuffle`` defaults to off
        for them (Keras would ignore it and warn)."""
        kwargs.setdefault("shuffle", not isinstance(x, tf.data.Dataset))
        return super().fit(x, y, **kwargs)

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

    def call(self, inputs, training=None, mask=None, **kwargs):
        def forward(images):
            return super(Zoobot, self).call(images, training=training, mask=mask, **kwargs)

        return forward(inputs) if training else self.symmetric(inputs, forward)

    def symmetric(self, images, outputs_of):
        """``outputs_of(images)`` averaged with ``outputs_of`` the images mirrored left-right, the mirror's
        outputs put back in place by the task's ``mirror_permutation`` (GZ1: its two winding directions
        swapped), when the task knows how a mirror acts on its labels: a prediction that does not change when a
        galaxy is mirrored. Otherwise ``outputs_of(images)``. Inference only: training sees each view once."""
        permutation = self.task.mirror_permutation
        outputs = outputs_of(images)
        if permutation is None:
            return outputs
        mirrored = outputs_of(keras.ops.flip(images, axis=2))
        return (outputs + keras.ops.take(mirrored, permutation, axis=1)) / 2

    def apply_head(self, embeddings, training: bool = False, noise=None):
        """Run the head on (batch, embedding_dim) embeddings; ``training=True`` keeps dropout on (MC dropout).
        ``noise``: (batch, embedding_dim) uniform draws in [0, 1) that choose the dropout mask (a unit is
        dropped where its draw is below the rate), for MC dropout whose randomness the caller fixes."""
        x = embeddings
        for layer in self.head:
            if not isinstance(layer, keras.layers.Dropout):
                x = layer(x)
            elif noise is None or layer.rate == 0:
                x = layer(x, training=training)
            else:  # Keras' inverted dropout, with the given draws
                x = keras.ops.where(noise >= layer.rate, x / (1.0 - layer.rate), keras.ops.zeros_like(x))
        return x

    def init_head_prior(self, prior: np.ndarray, kernel_scale: float = 0.1) -> None:
        """Start the head at the task's prior (``task.prior(training labels)``): constant concentrations
        (votes: the training set's maximum-likelihood constant Dirichlet), class frequencies, target means.

        The Dense bias is set so the initial output equals the prior, and its kernel is scaled down,
        so training starts from the no-image baseline instead of arbitrary concentrations (~50 for
        every answer at random initialisation, a loss ~50% above the baseline).
        """
        dense = self.get_layer("head_dense")
        kernel, _ = dense.get_weights()
        prior = np.asarray(prior, dtype=np.float64)
        if prior.shape != (kernel.shape[1],):
            raise ValueError(f"prior must have shape ({kernel.shape[1]},). Received: {prior.shape}")
        dense.set_weights([kernel * kernel_scale, self.task.head_bias(prior).astype(np.float32)])

    def stage_groups(self) -> list[list[keras.layers.Layer]]:
        """The encoder's layers grouped by stage, stem first."""
        return stage_groups(self.encoder, self.backbone if isinstance(self._backbone_arg, str) else None)

    def summary_line(self) -> str:
        return (f"Zoobot({self.task!r}, backbone={self.backbone}, {self.count_params() / 1e6:.2f}M params, "
                f"{self.image_size}px x {self.channels}ch, embedding {self.embedding_dim})")


def _encoder(backbone, image_size: int, channels: int, backbone_kwargs: dict | None) -> tuple[keras.Model, str]:
    """(encoder, its name) from a registry name, a built Keras model, or a serialised one."""
    if isinstance(backbone, str):
        return build_backbone(backbone, input_shape=(image_size, image_size, channels), **(backbone_kwargs or {})), \
            backbone
    if isinstance(backbone, dict):
        backbone = keras.saving.deserialize_keras_object(backbone)
    if not isinstance(backbone, keras.Model):
        raise TypeError(f"backbone must be a registry name or a keras.Model. Received: {type(backbone).__name__}")
    if backbone_kwargs:
        raise ValueError("backbone_kwargs apply to registry backbones, not to a built Keras model.")
    rank = len(backbone.output.shape)
    if rank == 4:  # a feature map: pool it into an embedding
        inputs = keras.Input(shape=(image_size, image_size, channels), name="pixels")
        pooled = keras.layers.GlobalAveragePooling2D(name="global_pool")(backbone(inputs))
        backbone = keras.Model(inputs, pooled, name="encoder")
    elif rank != 2:
        raise ValueError(f"A backbone must output (batch, features) or (batch, H, W, features). "
                         f"Received output shape {backbone.output.shape}")
    return backbone, backbone.name


def define_model(schema="gz_decals_dr5", backbone: str = "efficientnet_b0", image_size: int = 224,
                 channels: int = 1, **kwargs) -> Zoobot:
    """Zoobot's Dirichlet-multinomial model over ``schema`` (the pretraining model)."""
    from zoobot_tf.tasks import VoteTask

    return Zoobot(task=VoteTask(schema), backbone=backbone, image_size=image_size, channels=channels, **kwargs)


def count_params_by_part(model: Zoobot) -> dict:
    return {"encoder": int(model.encoder.count_params()),
            "head": int(sum(np.prod(w.shape) for layer in model.head for w in layer.weights)),
            "total": int(model.count_params())}
