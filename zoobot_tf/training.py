"""Train a Zoobot model: data -> shards -> model -> fit under a distribution strategy -> evaluate -> save.

A run folder holds everything needed to understand and reproduce the run::

    <output_dir>/config.json        the TrainConfig used
    <output_dir>/shards/            TFRecords made from the catalog (unless --shards was given)
    <output_dir>/logs/              TensorBoard: train/ and validation/ scalars, galaxy grids, hparams
    <output_dir>/history.csv        one row per epoch (exactly one, across restarts)
    <output_dir>/checkpoints/       best.weights.h5 (lowest validation loss)
    <output_dir>/backup/            BackupAndRestore state while training (a killed run resumes from it)
    <output_dir>/model.keras        the final model (best weights)
    <output_dir>/metrics.json       test metrics per question, against the baseline
    <output_dir>/export/            TF Serving export (optional)

Run the same command again after an interruption and training continues where it stopped.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from zoobot_tf import callbacks as zcallbacks
from zoobot_tf import distribute, evaluate
from zoobot_tf.config import TrainConfig
from zoobot_tf.data import tfrecords
from zoobot_tf.data.sources import CatalogSource, DataSource, ShardSource, TFDSSource
from zoobot_tf.locks import RunLock
from zoobot_tf.models.zoobot import Zoobot
from zoobot_tf.outputs import write_json
from zoobot_tf.tasks import VoteTask
from zoobot_tf.visualise import GalaxyGrids, validation_sample

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "train", "build_model", "training_source"]

# settings that may change when a run is resumed (the rest must match the saved config)
_RESUMABLE = {"epochs", "patience", "export", "progress", "strategy", "cpu_replicas", "galaxy_cards"}


@dataclasses.dataclass
class TrainResult:
    output_dir: Path
    model: Zoobot
    metrics: pd.DataFrame
    history: list
    seconds: float
    n_train: int = 0


def train(config: TrainConfig | None = None, **overrides) -> TrainResult:
    """Train (or resume) a run. ``train(epochs=5, backbone="resnet18")`` or ``train(TrainConfig(...))``."""
    config = (config or TrainConfig()).replace(**overrides)
    start = time.time()
    task = VoteTask(config.schema)  # the schema, resolved once for the whole run
    if config.strategy == "mirrored" and config.cpu_replicas:
        distribute.split_cpu(config.cpu_replicas)  # before reading any data initialises TensorFlow's devices
    given = given_source(config, task)  # opened and checked before anything is written
    strategy = distribute.get_strategy(config.strategy, cpu_replicas=config.cpu_replicas)
    paths = RunPaths(Path(config.output_dir), distribute.is_chief(strategy))
    with paths.lock:  # a second job into this folder is refused while this one runs
        paths.start(config)
        keras.utils.set_random_seed(config.seed)
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()

        source = given or training_source(config, task, chief=paths.chief, run_dir=paths.out)
        global_batch = config.batch_size * strategy.num_replicas_in_sync
        steps_per_epoch = config.steps_per_epoch or max(1, -(-source.sizes["train"] // global_batch))
        with strategy.scope():
            model = build_model(config, task, total_steps=config.epochs * steps_per_epoch)
        with source.reading():
            prior = task.prior(source.labels("train"))  # the no-image baseline
        state = paths.state(config, task.monitor)
        if state == "fresh":  # a fresh run starts from the baseline; a resumed one from its backup
            model.init_head_prior(prior)
        if state == "trained":
            log.info("an earlier process finished training this run but not saving it: evaluating its best weights")
            model.load_weights(str(paths.chief_best))
        else:
            fit(model, source, config, paths, strategy)
        metrics = evaluate_model(model, source, prior, global_batch)
        with source.reading():  # the intervals that predict gives, fitted on the validation votes
            scale = evaluate.calibrate(model, source.dataset("val", global_batch, model.load_size))
        log.info("credible intervals calibrated on the validation split: concentration x %s per question",
                 ", ".join(f"{q.name} {v:.2f}" for q, v in zip(task.schema.questions, scale)))
        seconds = time.time() - start
        paths.finish(config, model, metrics, seconds, n_train=source.sizes["train"], strategy=strategy)
    return TrainResult(paths.out, model, metrics, zcallbacks.read_history(paths.chief_history), seconds,
                       int(source.sizes["train"]))


def given_source(config: TrainConfig, task: VoteTask) -> DataSource | None:
    """The data a config names (shards or a TFDS set), opened and checked against the task; None when the run
    makes its own shards (from a catalog, which is checked here, or synthetic galaxies)."""
    if config.catalog:
        CatalogSource(config.catalog, task, split_col=None)  # one error naming every problem, up front
        return None
    if not (config.tfds or config.shards):
        return None
    if config.tfds:
        source = TFDSSource(config.tfds, config.tfds_data_dir)
    else:
        source = ShardSource(config.shards, config.train_fraction, config.seed)
    _check_source(source, task)
    return source


def _check_source(source: DataSource, task: VoteTask) -> None:
    if source.task != task:
        raise ValueError(f"{source} holds labels for {source.task!r}, not for {task!r}; pass the matching --schema.")
    source.require_splits()


def training_source(config: TrainConfig, task: VoteTask, chief: bool = True, run_dir: Path | None = None,
                    wait_seconds: float = 600) -> DataSource:
    """The run's data: given shards, a TFDS data set, or shards made once (by the chief) from the catalog
    or from synthetic galaxies in ``<run_dir>/shards``."""
    source = given_source(config, task)
    if source is None:
        shard_dir = Path(run_dir or config.output_dir) / "shards"
        if not (shard_dir / tfrecords.MANIFEST).exists():
            if chief:
                _make_shards(config, task, shard_dir)
            else:  # the chief makes the shards; other workers wait for its manifest
                deadline = time.time() + wait_seconds
                while not (shard_dir / tfrecords.MANIFEST).exists():
                    if time.time() > deadline:
                        raise TimeoutError(f"Timed out waiting for the chief to write {shard_dir}")
                    time.sleep(1)
        source = ShardSource(shard_dir, config.train_fraction, config.seed)
        _check_source(source, task)
    return source


def _make_shards(config: TrainConfig, task: VoteTask, shard_dir: Path) -> None:
    if config.catalog:
        catalog = CatalogSource(config.catalog, task, validate=False).catalog
        stored_size = config.stored_size
    else:
        from zoobot_tf.data.synthetic import make_synthetic_catalog

        stored_size = config.stored_size or config.image_size
        catalog = make_synthetic_catalog(config.synthetic_galaxies, shard_dir.parent / "synthetic",
                                         stored_size=stored_size, seed=config.seed, schema=task.schema,
                                         progress=config.progress)
        stored_size = None  # rendered at that size already: keep the JPEG bytes as they are
    tfrecords.write_shards(catalog, shard_dir, task=task, stored_size=stored_size, progress=config.progress,
                           overwrite=True, remake=f"rm -r {shard_dir} && {config.command_line()}")


def learning_rate(config: TrainConfig, total_steps: int | None):
    """The learning rate of a training config: a float, or a Keras schedule counted in optimizer steps
    (resumes where it was: the step counter is part of the checkpoint)."""
    if config.lr_schedule in ("constant", "plateau"):  # plateau: a callback lowers it (see _callbacks)
        return config.learning_rate
    if not total_steps:
        raise ValueError("A cosine schedule needs the run's total number of steps.")
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else config.learning_rate, decay_steps=max(1, total_steps - warmup),
        alpha=0.01, warmup_target=config.learning_rate if warmup else None, warmup_steps=warmup)


def build_model(config: TrainConfig, task: VoteTask, total_steps: int | None = None) -> Zoobot:
    """The compiled model of a training config (``total_steps``: the step budget, for a schedule)."""
    from zoobot_tf.models.backbones import get_spec

    if (config.precision == "mixed_bfloat16" and get_spec(config.backbone).family.startswith("efficientnet")
            and not tf.config.list_physical_devices("GPU")):
        log.warning("mixed_bfloat16 trains EfficientNets about 2x slower than float32 on a CPU (measured: "
                    "README, Performance); it pays for ConvNeXt training and for predictions.")
    backbone_kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in (config.backbone_kwargs or {}).items()}
    model = Zoobot(task=task, backbone=config.backbone, backbone_kwargs=backbone_kwargs, image_size=config.image_size,
                   channels=config.channels, crop_fraction=config.crop_fraction, augment={"flip": config.flip},
                   dropout_rate=config.dropout_rate, precision=config.precision)
    model.compile(learning_rate=learning_rate(config, total_steps), weight_decay=config.weight_decay,
                  clipnorm=config.clipnorm)
    return model


def fit(model: Zoobot, source: DataSource, config: TrainConfig, paths: "RunPaths",
        strategy: tf.distribute.Strategy) -> None:
    """Keras ``fit`` with the run's callbacks; the best weights are loaded at the end."""
    workers = distribute.num_workers(strategy)
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    log.info("strategy %s: %d replica(s), %d worker(s), global batch %d", config.strategy,
             strategy.num_replicas_in_sync, workers, global_batch)
    kwargs = dict(epochs=config.epochs, verbose=2 if config.progress else 0, shuffle=False,
                  callbacks=_callbacks(config, paths, source, model))
    repeat = config.steps_per_epoch is not None or workers > 1
    if workers > 1:
        # Workers read different shards; with repeated data and a fixed step count every worker takes
        # the same number of steps, so no collective waits for a worker that ran out of data.
        kwargs["steps_per_epoch"] = config.steps_per_epoch or max(1, source.sizes["train"] // global_batch)
        kwargs["validation_steps"] = max(1, -(-source.sizes["val"] // global_batch))
    elif config.steps_per_epoch:
        kwargs["steps_per_epoch"] = config.steps_per_epoch
    data = {split: source.dataset(split, global_batch, model.load_size, training=(split == "train"),
                                  repeat=repeat and (split == "train" or workers > 1), num_workers=workers,
                                  seed=config.seed, deterministic=config.deterministic or None)
            for split in ("train", "val")}
    with source.reading():  # a corrupt shard is named, with the command that remakes it
        model.fit(data["train"], validation_data=data["val"], **kwargs)
    if paths.best.exists():
        model.load_weights(str(paths.best))
    log.info("final weights fingerprint %s (identical on every worker)", weights_fingerprint(model))


def evaluate_model(model: Zoobot, source: DataSource, prior: np.ndarray | None, batch_size: int,
                   split: str = "test") -> pd.DataFrame:
    """Test metrics of ``model`` on a split (the task's metrics), with the no-image baseline alongside."""
    with source.reading():
        outputs, labels = evaluate.predict_batches(model, source.dataset(split, batch_size, model.load_size))
    return model.task.evaluate(labels, outputs, prior=prior)


class RunPaths:
    """Where a process writes: the chief into the run folder, other workers into a scratch folder
    of their own (deleted at the end), so only the chief's checkpoints, logs and exports remain."""

    def __init__(self, out: Path, chief: bool):
        self.out, self.chief = out, chief
        # only the chief locks the folder: the other workers of its cluster write into it by design
        self.lock = RunLock(out, "a training run") if chief else contextlib.nullcontext()
        self.root = out if chief else out / ".workers" / f"worker{distribute.worker_index()}"
        self.history = self.root / "history.csv"
        self.logs = self.root / "logs"
        self.best = self.root / "checkpoints" / "best.weights.h5"
        self.backup = out / "backup"  # shared: written by the chief, read by every worker
        # What a start decides (resume, trained, fresh; the resumed patience and best value) is read from the
        # chief's files by every worker, so that all decide alike: a worker whose scratch folder is gone (it
        # finished and deleted it) would otherwise train while the chief does not, and wait for it forever.
        self.chief_history = out / "history.csv"
        self.chief_best = out / "checkpoints" / "best.weights.h5"

    def start(self, config: TrainConfig) -> None:
        """Check the folder (another configuration, a finished run), then record the config."""
        if self.chief:
            _check_config(self.out, config)
        if (self.out / "metrics.json").exists() and (self.out / "model.keras").exists():
            raise FileExistsError(f"{self.out} holds a finished run (model.keras, metrics.json). "
                                  f"Use a new --output_dir.")
        if self.chief:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(config.to_json())
        self.root.mkdir(parents=True, exist_ok=True)
        self.best.parent.mkdir(parents=True, exist_ok=True)

    def state(self, config: TrainConfig, monitor: str) -> str:
        """How this process starts the run: "resume" (from the backup), "trained" (an earlier process ended
        training, which removes the backup, and died before saving the model: its best weights are final),
        or "fresh". An earlier attempt that left no backup and had not ended steers nothing: its history
        and best checkpoint would set a resumed patience and a best value to beat, so they are moved into
        ``stale-<time>/`` of the run folder (kept, never deleted: e.g. a rerun with a larger --patience)."""
        if self.backup.exists():
            return "resume"
        history = zcallbacks.read_history(self.chief_history)
        if history and self.chief_best.exists():
            _, _, since = zcallbacks.best_so_far(history, monitor)
            if len(history) >= config.epochs or since >= config.patience:
                return "trained"
        stale = [p for p in (self.history, self.best) if p.exists()]
        if stale and not self.chief:  # a worker's scratch, which only the chief's files steer
            for path in stale:
                path.unlink()
        elif stale:
            aside = self.root / f"stale-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}"
            aside.mkdir(parents=True)
            for path in stale:
                path.rename(aside / path.name)
            log.warning("%s: an earlier attempt left %s but no backup to resume from, and had not ended; "
                        "training starts afresh (its files are kept in %s)", self.out,
                        " and ".join(p.name for p in stale), aside)
        return "fresh"

    def finish(self, config: TrainConfig, model: Zoobot, metrics: pd.DataFrame, seconds: float, n_train: int,
               strategy) -> None:
        """The chief saves the model, metrics and export; other workers delete their scratch folder."""
        if not self.chief:
            shutil.rmtree(self.root, ignore_errors=True)
            try:
                self.root.parent.rmdir()
            except OSError:
                pass  # another worker's folder is still there
            return
        model.save(self.out / "model.keras")
        summary = {"seconds": seconds, "epochs_run": len(zcallbacks.read_history(self.history)),
                   "concentration_scale": model.task.concentration_scale,
                   "n_train": int(n_train), "params": int(model.count_params()), "backbone": config.backbone,
                   "workers": distribute.num_workers(strategy), "replicas": strategy.num_replicas_in_sync,
                   "metrics": metrics.to_dict(orient="records")}
        write_json(summary, self.out / "metrics.json")
        if config.export:
            from zoobot_tf.export import export_model

            export_model(model, self.out / "export", name="zoobot")


def _check_config(out: Path, config: TrainConfig) -> None:
    path = out / "config.json"
    if path.exists():
        saved = json.loads(path.read_text())
        mine = config.to_dict()
        defaults = {f.name: f.default for f in dataclasses.fields(config)}  # options newer than a saved run
        diff = {k: (saved.get(k, defaults.get(k)), v) for k, v in mine.items()
                if k not in _RESUMABLE and saved.get(k, defaults.get(k)) != v}
        if diff:
            shown = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"{out} holds a run with a different configuration ({shown}). "
                             f"Use a new --output_dir, or delete the old run.")


def _log_hparams(logdir: Path, config: TrainConfig) -> None:
    from tensorboard.plugins.hparams import api as hp

    values = {k: (v if isinstance(v, (bool, int, float, str)) else str(v))
              for k, v in config.to_dict().items() if v is not None}
    with tf.summary.create_file_writer(str(logdir / "hparams")).as_default():
        hp.hparams(values)


def _callbacks(config: TrainConfig, paths: RunPaths, source: DataSource, model: Zoobot) -> list:
    monitor = model.task.monitor
    prior_best, _, _ = zcallbacks.best_so_far(zcallbacks.read_history(paths.chief_history), monitor)
    cbs = [
        zcallbacks.HistoryLog(paths.history),
        keras.callbacks.TensorBoard(str(paths.logs), update_freq="epoch", histogram_freq=0),
        keras.callbacks.ModelCheckpoint(str(paths.best), monitor=monitor, mode="min", save_best_only=True,
                                        save_weights_only=True,
                                        initial_value_threshold=prior_best if math.isfinite(prior_best) else None),
        zcallbacks.ResumableEarlyStopping(paths.chief_history, monitor=monitor, mode="min", patience=config.patience),
        keras.callbacks.TerminateOnNaN(),
    ]
    if config.lr_schedule == "plateau":  # first, so that the history records each epoch's rate
        cbs.insert(0, zcallbacks.ResumableReduceLROnPlateau(paths.chief_history, monitor=monitor, mode="min", factor=0.3,
                                                            patience=max(1, config.patience // 2),
                                                            min_lr=config.learning_rate * 1e-3, verbose=0))
    if isinstance(paths.lock, RunLock):
        cbs.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: paths.lock.refresh()))
    if paths.chief:
        images, labels = validation_sample(source, model.load_size) if config.galaxy_cards else (None, None)
        if images is not None:
            cbs.insert(2, GalaxyGrids(paths.logs, images, labels, model.task, every=max(1, config.epochs // 10)))
        _log_hparams(paths.logs, config)
    # last, so that an epoch is only marked done after everything else recorded it
    cbs.append(zcallbacks.SharedBackupAndRestore(str(paths.backup), chief=paths.chief, double_checkpoint=True))
    return cbs


def weights_fingerprint(model) -> str:
    """A short hash of all weights (to check that workers agree)."""
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
    return h.hexdigest()[:16]
