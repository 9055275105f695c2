"""Finetune a pretrained Zoobot encoder on a new task with few labels.

    import zoobot_tf as zt
    from zoobot_tf.finetuning import Finetuner

    tuner = Finetuner("zoobot_synthetic", task="classification", class_names=["no_ring", "ring"])
    train = tuner.dataset(train_catalog, "ring", training=True)
    val = tuner.dataset(val_catalog, "ring")
    tuner.model.fit(train, validation_data=val, epochs=30, callbacks=tuner.callbacks())

or end to end, with splits, class balancing, early stopping and test metrics::

    result = zt.finetune("zoobot_synthetic", "rings.csv", label_cols="ring")

The pretrained model is anything :func:`zoobot_tf.models.resolve.load_model` accepts (a packaged name,
a ``.keras`` file, an export folder, ``hf_hub:<repo>``, timm weights), a Zoobot model in memory, or a
backbone name (a random encoder: the baseline to compare against). The new head is any task
(:mod:`zoobot_tf.tasks`): classification, regression, or votes on another decision tree.

Settings: explicit arguments win; then the pretrained model's own recommendations (``model.finetuning``,
stored in the model and its exports: a small encoder may need its whole encoder trained); then
Zoobot's recipe (:data:`ZOOBOT_DEFAULTS`: AdamW, lr 1e-4, weight decay 0.05, dropout 0.5, the top
stage at the full learning rate and each stage below at x0.75, patience 10).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
import pandas as pd

from zoobot_tf.data.sources import CatalogSource, DataSource, TFDSSource
from zoobot_tf.models.resolve import is_random_init, load_model
from zoobot_tf.models.zoobot import Zoobot, dtype_policy
from zoobot_tf.models.stem import transfer_encoder_weights
from zoobot_tf.ops.optimizer import ZoobotAdamW
from zoobot_tf.outputs import write_json
from zoobot_tf.tasks import Task, make_task, make_task_for_catalog
from zoobot_tf.tasks.classification import mirror_pairs as mirror_pairs_of

log = logging.getLogger(__name__)

# Zoobot v2's finetuning defaults (FinetuneableZoobotAbstract): used where neither the caller nor the
# pretrained model's card says otherwise.
ZOOBOT_DEFAULTS = dict(n_blocks=0, learning_rate=1e-4, lr_decay=0.75, weight_decay=0.05, dropout_rate=0.5,
                       batch_size=32, epochs=30, patience=10, cosine_schedule=False, warmup_epochs=0,
                       max_cosine_epochs=100, min_lr_factor=0.01)

# what a pretrained model's card may hold: the settings above, and the class pairs a mirror image swaps
CARD_KEYS = (*ZOOBOT_DEFAULTS, "mirror_pairs")

__all__ = ["Finetuner", "finetune", "finetune_job", "FinetuneResult", "ZOOBOT_DEFAULTS", "recommended_settings",
           "with_mirror", "CARD_KEYS"]


# A randomly initialised encoder has nothing to keep: all of it is trained, at a from-scratch learning rate,
# with its BatchNorm statistics (the baseline a pretrained encoder is compared against).
RANDOM_ENCODER = dict(n_blocks=-1, learning_rate=1e-3)


def recommended_settings(pretrained: Zoobot | None, random_init: bool = False, **given) -> dict:
    """Finetuning settings: ``given`` (non-None), else the model's ``finetuning`` card (for a random encoder:
    :data:`RANDOM_ENCODER`), else Zoobot's."""
    card = dict(RANDOM_ENCODER) if random_init else dict(getattr(pretrained, "finetuning", None) or {})
    out = {}
    for key, default in ZOOBOT_DEFAULTS.items():
        value = given.get(key)
        out[key] = value if value is not None else card.get(key, default)
    return out


class Finetuner:
    """Builds a finetuning model from a pretrained encoder.

    Args:
        pretrained: see the module docstring.
        task: a :class:`~zoobot_tf.tasks.Task`, or a task name with ``class_names``/``n_classes``,
            ``target_names``/``n_targets`` or ``schema``.
        n_blocks: encoder stages to train, counted from the top; 0 freezes the encoder (a linear probe
            on the embedding), -1 trains all of it.
        lr_decay: learning-rate factor per stage below the top trained stage (Zoobot: 0.75); the top
            trained stage and the head learn at ``learning_rate``.
        train_batchnorm: update BatchNorm statistics in the trained stages. Default: only when the encoder
            is randomly initialised (its statistics would otherwise stay at their initial values);
            pretrained encoders keep theirs, which works better with few labels.
        image_size, channels, crop_fraction: default to the pretrained model's. ``channels=3`` on a greyscale
            encoder spreads its stem's weights over the three channels (:mod:`zoobot_tf.models.stem`).
        precision: build under this dtype policy (``mixed_bfloat16`` on CPUs with AMX).
        mirror_pairs: the classification classes a left-right mirror image swaps (``"clockwise:anticlockwise"``
            or pairs; GZ1's winding directions), with training without flips (``augment={"flip": False}``);
            ``[]`` for none (mirror-invariant classes). The model then predicts the average of each galaxy and
            its mirror image, those classes swapped back (:meth:`~zoobot_tf.models.zoobot.Zoobot.symmetric`).
            None: the pretrained model's card's pairs whose classes the task has, when training does not flip
            (``zoobot_sdss_mini``'s: GZ1's ``clockwise_spiral:anticlockwise_spiral``); ``"none"``: no pairs.
        None elsewhere means: the pretrained model's recommendation, else Zoobot's (see the module docstring).

    The new head starts as Keras initialises it; :func:`finetune` then starts a vote head at the training
    votes' prior (``model.init_head_prior(task.prior(votes))``), which a loop of your own should do too.
    """

    def __init__(self, pretrained, task: "Task | str" = "classification", class_names: Sequence[str] | None = None,
                 n_classes: int | None = None, target_names: Sequence[str] | None = None,
                 n_targets: int | None = None, schema=None, n_blocks: int | None = None,
                 lr_decay: float | None = None, learning_rate: float | None = None,
                 weight_decay: float | None = None, dropout_rate: float | None = None,
                 train_batchnorm: bool | None = None, image_size: int | None = None, channels: int | None = None,
                 crop_fraction: float | None = None, augment: dict | bool = True, batch_size: int | None = None,
                 precision: str | None = None, cosine_schedule: bool | None = None,
                 warmup_epochs: int | None = None, label_smoothing: float = 0.0, mirror_pairs=None):
        random = is_random_init(pretrained)
        source = None if random else load_model(pretrained, compile=False)  # its encoder and settings only
        self.pretrained = source
        self.random_init = random
        self.settings = recommended_settings(source, random, n_blocks=n_blocks, learning_rate=learning_rate,
                                             lr_decay=lr_decay, weight_decay=weight_decay,
                                             dropout_rate=dropout_rate, batch_size=batch_size,
                                             cosine_schedule=cosine_schedule, warmup_epochs=warmup_epochs)
        s = self.settings
        self.batch_size = int(s["batch_size"])
        task = make_task(task, schema=schema, class_names=class_names, n_classes=n_classes,
                         target_names=target_names, n_targets=n_targets, label_smoothing=label_smoothing or None)
        if label_smoothing and getattr(task, "label_smoothing", label_smoothing) != label_smoothing:
            task = task.replace(label_smoothing=label_smoothing)  # a Task object given
        task = with_mirror(task, mirror_pairs, augment, card_pairs=(getattr(source, "finetuning", None) or {}).get(
            "mirror_pairs"))
        backbone = pretrained if random else source.backbone
        with dtype_policy(precision):
            self.model = Zoobot(
                task=task, backbone=backbone, backbone_kwargs={} if random else source.backbone_kwargs,
                image_size=image_size or (224 if random else source.image_size),
                channels=channels or (1 if random else source.channels),
                crop_fraction=crop_fraction if crop_fraction is not None else (
                    1.0 if random else source.crop_fraction),
                augment=augment, dropout_rate=float(s["dropout_rate"]), precision=precision)
        if source is not None:
            transfer_encoder_weights(source.encoder, self.model.encoder)  # colour <-> greyscale: the stem adapted
        train_bn = random if train_batchnorm is None else bool(train_batchnorm)
        multipliers = self._set_trainable(int(s["n_blocks"]), float(s["lr_decay"]), train_bn)
        optimizer = ZoobotAdamW(learning_rate=float(s["learning_rate"]), weight_decay=float(s["weight_decay"]),
                                lr_multipliers=multipliers)
        self.model.compile(optimizer=optimizer)

    @property
    def task(self) -> Task:
        return self.model.task

    def _set_trainable(self, n_blocks: int, lr_decay: float, train_batchnorm: bool) -> dict:
        """Freeze all but the top ``n_blocks`` stages; return {variable path: lr multiplier}: 1 for the top
        trained stage (as the head), ``lr_decay ** k`` for the k-th stage below it."""
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
                        multipliers[v.path] = float(lr_decay ** depth)
        self.n_trainable_stages = n
        return multipliers

    def dataset(self, catalog: pd.DataFrame, label_cols=None, training: bool = False,
                class_weight: dict | None = None, seed: int | None = None):
        """Batched training data from a catalog (every row), preprocessed for this model."""
        source = CatalogSource(catalog, self.task, label_cols, split_col=None)
        return source.dataset(None, self.batch_size, self.model.load_size, training=training, seed=seed,
                              class_weight=class_weight)

    def callbacks(self, patience: int | None = None, monitor: str | None = None,
                  checkpoint: str | Path | None = None, logdir: str | Path | None = None,
                  sample: tuple[np.ndarray, np.ndarray] | None = None) -> list:
        """Early stopping (restoring the best weights) on the task's validation loss, the learning-rate
        schedule when one is set (cosine decay after a linear warmup, as Zoobot's ``cosine_schedule``), and
        optionally a checkpoint, and TensorBoard logs in ``logdir`` with grids of the ``sample`` of validation
        galaxies (images, labels): their predictions, and the worst predicted of them."""
        monitor = monitor or self.task.monitor
        patience = int(patience if patience is not None else self.settings["patience"])
        cbs = [keras.callbacks.EarlyStopping(monitor=monitor, mode="min", patience=patience,
                                             restore_best_weights=True)]
        s = self.settings
        if s["cosine_schedule"] or s["warmup_epochs"]:
            cbs.append(keras.callbacks.LearningRateScheduler(lambda epoch, lr: learning_rate_at(epoch, s)))
        if checkpoint:
            cbs.append(keras.callbacks.ModelCheckpoint(str(checkpoint), monitor=monitor, mode="min",
                                                       save_best_only=True))
        if logdir:
            from zoobot_tf.visualise import GalaxyGrids

            cbs.append(keras.callbacks.TensorBoard(str(logdir), update_freq="epoch"))
            if sample is not None and sample[0] is not None and len(sample[0]):
                cbs.append(GalaxyGrids(logdir, sample[0], sample[1], self.task, every=2))
        return cbs


def with_mirror(task: Task, mirror_pairs, augment: dict | bool, card_pairs=None) -> Task:
    """``task`` (classification) with the class pairs a left-right mirror image swaps (``[]``: none, the classes
    are mirror-invariant), so that its model predicts each galaxy as the average of it and its mirror image
    (:meth:`~zoobot_tf.models.zoobot.Zoobot.symmetric`). ``None``: the task's own, else the pretrained model's
    card's pairs (``card_pairs``) whose two classes the task has, when training does not flip; ``"none"``:
    no pairs. Pairs need training without flips: a flipped training image would keep the unflipped galaxy's
    label."""
    flips = augment is True or bool(augment) and dict(augment).get("flip", True)
    classifier = hasattr(task, "mirror")
    if mirror_pairs is None and card_pairs and classifier and task.mirror is None and not flips:
        fitting = [pair for pair in mirror_pairs_of(card_pairs) if set(pair) <= set(task.class_names)]
        if fitting:
            log.info("Predicting each galaxy as the mean of it and its mirror image, %s swapped: the pretrained "
                     "model's card names them mirror classes (--mirror_pairs none, mirror_pairs='none' in "
                     "Python, predicts from the image alone)", " and ".join(":".join(pair) for pair in fitting))
            mirror_pairs = fitting
    if isinstance(mirror_pairs, str) and mirror_pairs.lower() == "none":
        return task.replace(mirror=None) if getattr(task, "mirror", None) is not None else task
    if mirror_pairs is not None:
        if not classifier:
            raise ValueError(f"mirror_pairs applies to classification; the task is {task!r}")
        task = task.replace(mirror=mirror_pairs)
    if getattr(task, "mirror", None) and flips:
        raise ValueError(f"mirror_pairs={task.mirror} needs training without flips (augment={{'flip': False}}, "
                         "--flip false): a flipped training image would keep the label of the unflipped galaxy")
    return task


def learning_rate_at(epoch: int, settings: dict) -> float:
    """The head's learning rate in ``epoch`` (0-based): a linear warmup over ``warmup_epochs``, then (with
    ``cosine_schedule``) a cosine decay to ``learning_rate * min_lr_factor`` at ``max_cosine_epochs``.
    Stages below the head keep their ``lr_decay`` factors on top."""
    lr, warmup = float(settings["learning_rate"]), int(settings["warmup_epochs"])
    if epoch < warmup:
        return lr * (epoch + 1) / (warmup + 1)
    if not settings["cosine_schedule"]:
        return lr
    span = max(int(settings["max_cosine_epochs"]) - warmup, 1)
    progress = min((epoch - warmup) / span, 1.0)
    floor = lr * float(settings["min_lr_factor"])
    return float(floor + (lr - floor) * 0.5 * (1 + np.cos(np.pi * progress)))


@dataclasses.dataclass
class FinetuneResult:
    model: Zoobot
    history: dict
    test_metrics: dict  # Keras' evaluate() on the test split (loss and the task's metrics)
    test_table: pd.DataFrame  # the task's test metrics (balanced accuracy, per-class recall, ...)
    val_table: pd.DataFrame  # the same on the validation split (e.g. whether predictions collapsed)
    sizes: dict
    settings: dict


def finetune(pretrained, source, label_cols=None, task: "Task | str" = "classification", epochs: int | None = None,
             patience: int | None = None, balance_classes: bool = True, seed: int = 0, verbose: int = 2,
             split_col: str | None = "split", logdir: str | Path | None = None, **finetuner_kwargs) -> FinetuneResult:
    """Finetune end to end: train on the source's train split with early stopping on its val split, and
    evaluate on its test split (which never chooses anything). A vote head (a new decision tree) ends with its
    credible intervals calibrated on the val split's votes (:func:`zoobot_tf.evaluate.calibrate`).

    Args:
        source: a catalog (DataFrame or CSV/Parquet path; its ``split_col`` column if present, else a 70/15/15
            split by id), ``tfds:<name>``, or any :class:`~zoobot_tf.data.sources.DataSource`.
        label_cols: the catalog's label column(s).
        task: the new head (a Task, or a name: classes are taken from the label column; for ``"votes"``
            without ``schema=``, the decision tree is the only built-in one whose every answer column the
            catalog has).
        balance_classes: weight classes by inverse frequency (classification).
        logdir: write TensorBoard logs here (losses, metrics, grids of validation galaxies).
    """
    keras.utils.set_random_seed(seed)
    source = _source(source, task, label_cols, split_col, finetuner_kwargs)
    source.require_splits()
    # the model's task is the source's, with the options the labels do not carry (label smoothing, mirror pairs)
    tuner = Finetuner(pretrained, task=source.task, **finetuner_kwargs)
    train_labels = source.labels("train")  # a pass over the split for a TFDS or shard source: read once
    for message in source.task.label_warnings(train_labels):
        log.warning(message)
    prior = source.task.prior(train_labels)
    if tuner.task.finetune_from_prior:  # a vote head starts at the no-image baseline of the training votes
        tuner.model.init_head_prior(prior)
    schedule = recommended_settings(tuner.pretrained, tuner.random_init, epochs=epochs, patience=patience)
    settings = {**tuner.settings, "epochs": schedule["epochs"], "patience": schedule["patience"]}
    class_weight = source.task.balanced_class_weight(train_labels) if balance_classes else None
    size = tuner.model.load_size
    train = source.dataset("train", tuner.batch_size, size, training=True, class_weight=class_weight, seed=seed)
    val = source.dataset("val", tuner.batch_size, size, class_weight=class_weight)
    sample = None
    if logdir:
        from zoobot_tf.visualise import validation_sample

        sample = validation_sample(source, size)
    history = tuner.model.fit(train, validation_data=val, epochs=int(settings["epochs"]),
                              callbacks=tuner.callbacks(settings["patience"], logdir=logdir, sample=sample),
                              verbose=verbose)
    from zoobot_tf.evaluate import calibrate, predict_batches

    val_table = source.task.evaluate(*reversed(predict_batches(tuner.model, source.dataset("val", tuner.batch_size,
                                                                                            size))), prior=prior)
    if hasattr(tuner.model.task, "concentration_scale"):  # a new decision tree: its intervals fitted on val votes
        calibrate(tuner.model, source.dataset("val", tuner.batch_size, size))
    test = source.dataset("test", tuner.batch_size, size)
    test_metrics = tuner.model.evaluate(test, return_dict=True, verbose=0)
    outputs, labels = predict_batches(tuner.model, test)
    table = source.task.evaluate(labels, outputs, prior=prior)
    return FinetuneResult(tuner.model, history.history, test_metrics, table, val_table, source.sizes, settings)


def _source(source, task, label_cols, split_col, finetuner_kwargs) -> DataSource:
    if isinstance(source, DataSource):
        return source
    if isinstance(source, str) and source.startswith("tfds:"):
        return TFDSSource(source[len("tfds:"):])
    raw = CatalogSource(source)  # reads a CSV/Parquet file and resolves relative file_loc paths
    labelled = CatalogSource(raw.catalog, _catalog_task(raw.catalog, task, label_cols, finetuner_kwargs), label_cols,
                             split_col=split_col)
    labelled.origin = raw.origin
    return labelled


def _catalog_task(catalog: pd.DataFrame, task, label_cols, finetuner_kwargs) -> Task:
    options = {k: finetuner_kwargs.pop(k) for k in ("class_names", "n_classes", "target_names", "n_targets", "schema")
               if k in finetuner_kwargs}
    return make_task_for_catalog(task, catalog, label_cols, **options)


def finetune_job(config) -> FinetuneResult:
    """``zoobot-tf finetune``: finetune from a :class:`~zoobot_tf.config.FinetuneConfig` and write
    ``model.keras``, ``metrics.json`` (test metrics, history, settings, split sizes) and optionally an export."""
    from zoobot_tf import distribute

    strategy = distribute.get_strategy(config.strategy, cpu_replicas=config.cpu_replicas)
    source = TFDSSource(config.tfds, config.tfds_data_dir) if config.tfds else config.catalog
    with strategy.scope():
        result = finetune(config.pretrained, source, label_cols=config.label_list or None, task=config.task,
                          epochs=config.epochs, patience=config.patience, balance_classes=config.balance_classes,
                          seed=config.seed, verbose=2 if config.progress else 0, split_col=config.split_col,
                          logdir=Path(config.output_dir) / "logs",
                          schema=config.schema, n_blocks=config.n_blocks, learning_rate=config.learning_rate,
                          lr_decay=config.lr_decay, weight_decay=config.weight_decay, batch_size=config.batch_size,
                          dropout_rate=config.dropout_rate, image_size=config.image_size, channels=config.channels,
                          crop_fraction=config.crop_fraction, augment={"flip": config.flip},
                          precision=None if config.precision == "float32" else config.precision,
                          train_batchnorm=config.train_batchnorm, cosine_schedule=config.cosine_schedule,
                          warmup_epochs=config.warmup_epochs, label_smoothing=config.label_smoothing,
                          mirror_pairs=config.mirror_pairs or None)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.model.save(out / "model.keras")
    summary = {"test": result.test_metrics, "test_table": result.test_table.to_dict(orient="records"),
               "val_table": result.val_table.to_dict(orient="records"),
               "history": result.history, "settings": result.settings, "sizes": result.sizes,
               "config": config.to_dict()}
    if hasattr(result.model.task, "concentration_scale"):
        summary["concentration_scale"] = result.model.task.concentration_scale
    write_json(summary, out / "metrics.json")
    if config.export:
        from zoobot_tf.export import export_model

        export_model(result.model, out / "export", name="zoobot")
    return result
