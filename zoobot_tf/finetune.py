"""Finetune a pretrained Zoobot encoder on a new task with few labels.

    import zoobot_tf as zt
    from zoobot_tf.finetune import Finetuner

    tuner = Finetuner("runs/demo/model.keras", task="classification", class_names=["ring", "no_ring"],
                      n_blocks=2)                       # unfreeze the last 2 stages, lr x0.75 per stage
    train = tuner.dataset(train_catalog, "ring", training=True)
    val = tuner.dataset(val_catalog, "ring")
    tuner.model.fit(train, validation_data=val, epochs=30, callbacks=tuner.callbacks())
    print(tuner.model.evaluate(tuner.dataset(test_catalog, "ring"), return_dict=True))

The pretrained model can be a ``.keras`` file, an export folder of ours (``saved_models/<name>[/N]``),
a Zoobot model in memory, or a backbone name (random initialisation, the baseline for comparisons).
Heads: ``classification`` (N classes), ``regression`` (targets) or ``votes`` (Dirichlet-multinomial
on a different decision tree).

Zoobot's finetuning recipe is the default: AdamW, lr 1e-4, weight decay 0.05, dropout 0.5, the
encoder's BatchNorm layers kept in inference mode, early stopping with patience 10.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
import pandas as pd

from zoobot_tf.data.catalogs import split_by_id
from zoobot_tf.data.sources import catalog_dataset, encode_labels
from zoobot_tf.models.backbones import REGISTRY
from zoobot_tf.models.zoobot import Zoobot, default_loss, default_metrics
from zoobot_tf.optimizers import ZoobotAdamW


def load_model(source) -> Zoobot:
    """A Zoobot model from a ``.keras`` file, an export folder (its stored Keras model), or a model."""
    if isinstance(source, Zoobot):
        return source
    path = Path(str(source))
    if path.suffix == ".keras":
        if not path.exists():
            raise FileNotFoundError(f"Model file not found: {path}")
        model = keras.models.load_model(path)
    elif path.is_dir():
        from zoobot_tf.export import load_keras_from_export

        model = load_keras_from_export(path)
    else:
        raise FileNotFoundError(f"Not a model: {source!r} (expected a .keras file or an export folder)")
    if not isinstance(model, Zoobot):
        raise TypeError(f"{source} holds a {type(model).__name__}, not a zoobot_tf Zoobot model.")
    return model


def _pretrained_or_random(pretrained, image_size, channels) -> tuple[Zoobot | None, str, dict, int, int]:
    if isinstance(pretrained, str) and pretrained in REGISTRY:
        return None, pretrained, {}, image_size or 224, channels or 1
    model = load_model(pretrained)
    return model, model.backbone, model.backbone_kwargs, image_size or model.image_size, channels or model.channels


class Finetuner:
    """Builds a finetuning model from a pretrained encoder, with Zoobot's recipe.

    Args:
        pretrained: ``.keras`` path, export folder, Zoobot model, or a backbone name (random encoder).
        task: ``classification``, ``regression`` or ``votes``.
        class_names / n_classes, target_names / n_targets, schema: the new head.
        n_blocks: encoder stages to train, counted from the top; 0 freezes the encoder (a linear probe
            on the embedding), -1 trains all of it.
        lr_decay: learning-rate factor per stage below the head (Zoobot: 0.75).
        train_batchnorm: update BatchNorm statistics in unfrozen stages (default: keep them frozen,
            which works better with few labels).
        image_size, channels: default to the pretrained model's; crop_fraction and augment as in Zoobot.
    """

    def __init__(self, pretrained, task: str = "classification", class_names: Sequence[str] | None = None,
                 n_classes: int | None = None, target_names: Sequence[str] | None = None,
                 n_targets: int | None = None, schema=None, n_blocks: int = 0, lr_decay: float = 0.75,
                 learning_rate: float = 1e-4, weight_decay: float = 0.05, dropout_rate: float = 0.5,
                 train_batchnorm: bool = False, image_size: int | None = None, channels: int | None = None,
                 crop_fraction: float | None = None, augment: dict | bool = True, batch_size: int = 32):
        source, backbone, backbone_kwargs, image_size, channels = _pretrained_or_random(
            pretrained, image_size, channels)
        self.pretrained = source
        self.batch_size = batch_size
        self.model = Zoobot(
            task=task, schema=schema, class_names=class_names, n_classes=n_classes, target_names=target_names,
            n_targets=n_targets, backbone=backbone, backbone_kwargs=backbone_kwargs, image_size=image_size,
            channels=channels, crop_fraction=crop_fraction if crop_fraction is not None else (
                source.crop_fraction if source is not None else 1.0),
            augment=augment, dropout_rate=dropout_rate)
        if source is not None:
            self.model.encoder.set_weights(source.encoder.get_weights())
        multipliers = self._set_trainable(n_blocks, lr_decay, train_batchnorm)
        optimizer = ZoobotAdamW(learning_rate=learning_rate, weight_decay=weight_decay, lr_multipliers=multipliers)
        self.model.compile(optimizer=optimizer, loss=default_loss(self.model),
                           weighted_metrics=default_metrics(self.model))

    def _set_trainable(self, n_blocks: int, lr_decay: float, train_batchnorm: bool) -> dict:
        """Freeze all but the top ``n_blocks`` stages; return {variable path: lr multiplier}."""
        groups = self.model.stage_groups()
        n = len(groups) if n_blocks < 0 else min(n_blocks, len(groups))
        multipliers = {}
        for depth, group in enumerate(reversed(groups)):  # depth 0: the stage next to the head
            trainable = depth < n
            for layer in group:
                is_bn = isinstance(layer, keras.layers.BatchNormalization)
                layer.trainable = trainable and (train_batchnorm or not is_bn)
                if layer.trainable:
                    for v in layer.trainable_weights:
                        multipliers[v.path] = float(lr_decay ** (depth + 1))
        self.n_trainable_stages = n
        return multipliers

    def dataset(self, catalog: pd.DataFrame, label_cols, training: bool = False, class_weight: dict | None = None,
                seed: int | None = None):
        """Batched training data from a catalog, preprocessed for this model."""
        return catalog_dataset(catalog, label_cols, self.model.task, self.batch_size, self.model.view.pre_size,
                               training=training, class_names=self.model.class_names, class_weight=class_weight,
                               seed=seed)

    def callbacks(self, patience: int = 10, monitor: str | None = None, checkpoint: str | Path | None = None):
        """Early stopping (restoring the best weights) on the validation loss, and optionally a checkpoint."""
        monitor = monitor or ("val_nll" if self.model.task == "votes" else "val_loss")
        cbs = [keras.callbacks.EarlyStopping(monitor=monitor, mode="min", patience=patience,
                                             restore_best_weights=True)]
        if checkpoint:
            cbs.append(keras.callbacks.ModelCheckpoint(str(checkpoint), monitor=monitor, mode="min",
                                                       save_best_only=True))
        return cbs


def balanced_class_weight(labels: np.ndarray, n_classes: int) -> dict:
    """{class: weight} inversely proportional to class frequency (mean weight 1 over examples)."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    weights = np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)
    return {i: float(w) for i, w in enumerate(weights)}


@dataclasses.dataclass
class FinetuneResult:
    model: Zoobot
    history: dict
    test_metrics: dict
    split: pd.Series


def finetune_tfds(pretrained, name: str, data_dir=None, epochs: int = 30, patience: int = 10, seed: int = 0,
                  verbose: int = 2, **finetuner_kwargs) -> FinetuneResult:
    """Finetune on a prepared TFDS classification set (e.g. ``gz_rings``, ``gz1_sdss``, ``galaxy10_decals``),
    using its train / validation (or test) / test splits and the same preprocessing as catalogs."""
    from zoobot_tf import datasets as zdatasets

    keras.utils.set_random_seed(seed)
    builder = zdatasets.builder(name, data_dir)
    if builder.info.supervised_keys[1] != "label":
        raise ValueError(f"{name!r} is not a classification set (its target is {builder.info.supervised_keys[1]!r})")
    finetuner_kwargs.setdefault("class_names", builder.info.features["label"].names)
    tuner = Finetuner(pretrained, task="classification", **finetuner_kwargs)
    splits = list(builder.info.splits)
    val_split = "validation" if "validation" in splits else "test"

    def ds(split, training=False):
        return zdatasets.tfds_dataset(name, split, tuner.batch_size, tuner.model.view.pre_size, training, data_dir,
                                      seed)

    history = tuner.model.fit(ds("train", True), validation_data=ds(val_split), epochs=epochs,
                              callbacks=tuner.callbacks(patience), verbose=verbose)
    test = tuner.model.evaluate(ds("test"), return_dict=True, verbose=0)
    return FinetuneResult(tuner.model, history.history, test, pd.Series(dtype=str))


def finetune(pretrained, catalog: pd.DataFrame, label_cols, task: str = "classification", epochs: int = 30,
             patience: int = 10, split_col: str | None = None, balance_classes: bool = False, seed: int = 0,
             verbose: int = 2, **finetuner_kwargs) -> FinetuneResult:
    """Finetune end to end: split the catalog (its ``split`` column, or by id 70/15/15), train with early
    stopping, and evaluate on the test split."""
    label_cols = [label_cols] if isinstance(label_cols, str) else list(label_cols)
    keras.utils.set_random_seed(seed)
    if task == "classification" and "class_names" not in finetuner_kwargs:
        _, finetuner_kwargs["class_names"] = encode_labels(catalog[label_cols[0]], None)
    tuner = Finetuner(pretrained, task=task, **finetuner_kwargs)
    if split_col and split_col in catalog.columns:
        split = catalog[split_col].astype(str)
    else:
        split = pd.Series(split_by_id(catalog["id_str"].astype(str).tolist(), (0.7, 0.15, 0.15)),
                          index=catalog.index)
    parts = {s: catalog[split.to_numpy() == s] for s in ("train", "val", "test")}
    for s, part in parts.items():
        if len(part) == 0:
            raise ValueError(f"The {s} split is empty; give more galaxies or a split column.")
    class_weight = None
    if balance_classes and task == "classification":
        labels, _ = encode_labels(parts["train"][label_cols[0]], tuner.model.class_names)
        class_weight = balanced_class_weight(labels, tuner.model.n_classes)
    history = tuner.model.fit(tuner.dataset(parts["train"], label_cols, training=True, class_weight=class_weight,
                                            seed=seed),
                              validation_data=tuner.dataset(parts["val"], label_cols), epochs=epochs,
                              callbacks=tuner.callbacks(patience), verbose=verbose, shuffle=False)
    test = tuner.model.evaluate(tuner.dataset(parts["test"], label_cols), return_dict=True, verbose=0)
    return FinetuneResult(tuner.model, history.history, test, split)
