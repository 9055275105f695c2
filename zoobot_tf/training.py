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
from zoobot_tf.data import tfrecords
from zoobot_tf.data.catalogs import read_catalog, resolve_file_locs
from zoobot_tf.models.zoobot import Zoobot
from zoobot_tf.schemas import get_schema

log = logging.getLogger(__name__)

MONITOR = "val_nll"  # exact mean validation loss per galaxy (see losses.TotalLoss)


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run. Saved as ``config.json`` in the run folder."""

    output_dir: str = "runs/default"
    # data: one of shards / catalog / synthetic (the default)
    shards: str | None = None
    catalog: str | None = None
    synthetic_galaxies: int = 5000
    synthetic_image_size: int = 64
    shard_image_size: int | None = None  # re-encode images at this size when making shards
    train_fraction: float = 1.0  # train on a deterministic subset of the training split (scaling studies)
    tfds: str | None = None  # a prepared TFDS data set with votes (e.g. synthetic_gz, gz_decals/dr5)
    tfds_data_dir: str | None = None
    schema: str = "gz_decals_dr5"
    # model
    backbone: str = "resnet_micro"
    backbone_kwargs: dict | None = None  # overrides of the backbone's builder arguments (JSON on the command line)
    image_size: int = 64
    channels: int = 1
    crop_fraction: float = 1.0
    flip: bool = True
    dropout_rate: float = 0.2
    precision: str = "float32"
    # optimisation
    batch_size: int = 64  # per replica; the global batch is batch_size x replicas
    epochs: int = 10
    patience: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    clipnorm: float | None = 0.3
    steps_per_epoch: int | None = None
    # execution
    strategy: str = "one_device"
    cpu_replicas: int | None = None
    seed: int = 0
    deterministic: bool = False
    export: bool = True
    progress: bool = True

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"Unknown training options: {sorted(unknown)}")
        return cls(**d)


# settings that may change when a run is resumed (the rest must match the saved config)
_RESUMABLE = {"epochs", "patience", "export", "progress", "strategy", "cpu_replicas"}


@dataclasses.dataclass
class TrainResult:
    output_dir: Path
    model: Zoobot
    metrics: pd.DataFrame
    history: list
    seconds: float
    n_train: int = 0


def _check_config(out: Path, config: TrainConfig) -> None:
    path = out / "config.json"
    if path.exists():
        saved = json.loads(path.read_text())
        mine = dataclasses.asdict(config)
        diff = {k: (saved.get(k), v) for k, v in mine.items() if k not in _RESUMABLE and saved.get(k) != v}
        if diff:
            shown = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"{out} holds a run with a different configuration ({shown}). "
                             f"Use a new --output_dir, or delete the old run.")


def prepare_shards(config: TrainConfig, chief: bool = True, wait_seconds: float = 600) -> Path:
    """The shard folder for this run: given, or made once from the catalog or synthetic galaxies."""
    out = Path(config.output_dir)
    if config.shards:
        tfrecords.read_manifest(config.shards)
        return Path(config.shards)
    shard_dir = out / "shards"
    if (shard_dir / tfrecords.MANIFEST).exists():
        return shard_dir
    if not chief:  # the chief makes the shards; other workers wait for its manifest
        start = time.time()
        while not (shard_dir / tfrecords.MANIFEST).exists():
            if time.time() - start > wait_seconds:
                raise TimeoutError(f"Timed out waiting for the chief to write {shard_dir}")
            time.sleep(1)
        return shard_dir
    if config.catalog:
        catalog = resolve_file_locs(read_catalog(config.catalog), Path(config.catalog).parent)
    else:
        from zoobot_tf.data.synthetic import make_synthetic_catalog

        catalog = make_synthetic_catalog(config.synthetic_galaxies, out / "synthetic",
                                         image_size=config.synthetic_image_size, seed=config.seed,
                                         schema=config.schema, progress=config.progress)
    tfrecords.write_shards(catalog, shard_dir, schema=config.schema, resize=config.shard_image_size,
                           progress=config.progress, overwrite=True)
    return shard_dir


class VoteData:
    """The training data of a run, from TFRecord shards or a prepared TFDS data set, behind one interface."""

    def __init__(self, config: TrainConfig, schema, chief: bool = True):
        self.config, self.schema = config, schema
        if not 0.0 < config.train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1]. Received: train_fraction={config.train_fraction}")
        if config.tfds and config.train_fraction < 1.0:
            raise ValueError("train_fraction < 1 needs TFRecord shards (--shards or a catalog); "
                             "a TFDS source has no per-galaxy subset selection here.")
        if config.tfds:
            from zoobot_tf import datasets as zdatasets

            self.source = config.tfds
            builder = zdatasets.builder(config.tfds, config.tfds_data_dir)
            if "votes" not in builder.info.features:
                raise ValueError(f"TFDS data set {config.tfds!r} has no vote counts; train needs votes.")
            n_votes = builder.info.features["votes"].shape[0]
            self.sizes = {s: builder.info.splits[zdatasets.SPLIT_ALIASES.get(s, s)].num_examples
                          for s in ("train", "val", "test")}
        else:
            self.shard_dir = prepare_shards(config, chief=chief)
            self.source = str(self.shard_dir)
            manifest = tfrecords.read_manifest(self.shard_dir)
            if manifest["label_kind"] != "votes" or get_schema(manifest["schema"]) != schema:
                raise ValueError(f"Shards in {self.shard_dir} hold labels for schema "
                                 f"{(manifest.get('schema') or {}).get('name')!r}, not {schema.name!r}.")
            n_votes = len(manifest["label_cols"])
            self.sizes = {s: manifest["splits"][s]["n_galaxies"] for s in ("train", "val", "test")}
            if config.train_fraction < 1.0:
                self.sizes["train"] = tfrecords.subset_size(self.shard_dir, "train", config.train_fraction, config.seed)
                if self.sizes["train"] == 0:
                    raise ValueError(f"train_fraction={config.train_fraction} leaves no training galaxies.")
        if n_votes != schema.n_answers:
            raise ValueError(f"{self.source} has {n_votes} vote columns but schema {schema.name!r} has "
                             f"{schema.n_answers} answers; pass the matching --schema.")

    def dataset(self, split: str, batch_size: int, load_size: int, training: bool = False, repeat: bool = False,
                num_workers: int = 1, cache="auto"):
        c = self.config
        if c.tfds:
            from zoobot_tf import datasets as zdatasets

            ds = zdatasets.tfds_dataset(c.tfds, split, batch_size, load_size, training, c.tfds_data_dir, c.seed)
            return ds.repeat() if repeat else ds
        fraction = c.train_fraction if split == "train" else 1.0
        return tfrecords.shard_dataset(self.shard_dir, split, batch_size, load_size, training=training, seed=c.seed,
                                       deterministic=c.deterministic or None, repeat=repeat,
                                       num_workers=num_workers, cache=cache, fraction=fraction,
                                       fraction_seed=c.seed)

    def labels(self, split: str) -> np.ndarray:
        if self.config.tfds:
            from zoobot_tf import datasets as zdatasets

            return zdatasets.tfds_labels(self.config.tfds, split, self.config.tfds_data_dir)
        ids, labels = tfrecords.read_labels(self.shard_dir, split)
        if split == "train" and self.config.train_fraction < 1.0 and ids:
            keep = tfrecords.subset_filter(self.config.train_fraction, self.config.seed)(tf.constant(ids)).numpy()
            labels = labels[keep]
        return labels


def build_model(config: TrainConfig) -> Zoobot:
    from zoobot_tf.models.backbones import get_spec

    if (config.precision == "mixed_bfloat16" and get_spec(config.backbone).family.startswith("efficientnet")
            and not tf.config.list_physical_devices("GPU")):
        log.warning("mixed_bfloat16 trains EfficientNets about 2x slower than float32 on a CPU (measured: "
                    "README, Performance); it pays for ConvNeXt training and for predictions.")
    backbone_kwargs = config.backbone_kwargs
    if isinstance(backbone_kwargs, str):
        backbone_kwargs = json.loads(backbone_kwargs)
    backbone_kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in (backbone_kwargs or {}).items()}
    model = Zoobot(task="votes", schema=config.schema, backbone=config.backbone, backbone_kwargs=backbone_kwargs,
                   image_size=config.image_size,
                   channels=config.channels, crop_fraction=config.crop_fraction,
                   augment={"flip": config.flip}, dropout_rate=config.dropout_rate, precision=config.precision)
    model.compile(learning_rate=config.learning_rate, weight_decay=config.weight_decay, clipnorm=config.clipnorm)
    return model


def _log_hparams(logdir: Path, config: TrainConfig) -> None:
    from tensorboard.plugins.hparams import api as hp

    values = {k: (v if isinstance(v, (bool, int, float, str)) else str(v))
              for k, v in dataclasses.asdict(config).items() if v is not None}
    with tf.summary.create_file_writer(str(logdir / "hparams")).as_default():
        hp.hparams(values)


def _fixed_batch(dataset: tf.data.Dataset, n: int = 8):
    for x, y, w in dataset.take(1):
        keep = w.numpy() > 0
        return x.numpy()[keep][:n], y.numpy()[keep][:n]
    return None, None


def train(config: TrainConfig | None = None, **overrides) -> TrainResult:
    """Train (or resume) a run. ``train(epochs=5, backbone="resnet18")`` or ``train(TrainConfig(...))``."""
    config = dataclasses.replace(config or TrainConfig(), **overrides)
    schema = get_schema(config.schema)
    out = Path(config.output_dir)
    start = time.time()
    strategy = distribute.get_strategy(config.strategy, cpu_replicas=config.cpu_replicas)
    chief = distribute.is_chief(strategy)
    workers = distribute.num_workers(strategy)
    if chief:
        out.mkdir(parents=True, exist_ok=True)
        _check_config(out, config)
        (out / "config.json").write_text(config.to_json())
    if (out / "metrics.json").exists() and (out / "model.keras").exists():
        raise FileExistsError(f"{out} holds a finished run (model.keras, metrics.json). Use a new --output_dir.")
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()

    data = VoteData(config, schema, chief=chief)
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    log.info("strategy %s: %d replica(s), %d worker(s), global batch %d", config.strategy, replicas, workers,
             global_batch)

    with strategy.scope():
        model = build_model(config)
    paths = RunPaths(out, chief)
    baseline = evaluate.fit_baseline(data.labels("train"), schema)
    if not paths.backup.exists():  # a fresh run starts from the baseline; a resumed one from its backup
        model.init_head_prior(baseline)
    load_size = model.view.pre_size

    fit_kwargs = dict(epochs=config.epochs, verbose=2 if config.progress else 0, shuffle=False,
                      callbacks=_callbacks(config, paths, data, schema, load_size))
    repeat = config.steps_per_epoch is not None or workers > 1
    if workers > 1:
        # Workers read different shards; with repeated data and a fixed step count every worker takes
        # the same number of steps, so no collective waits for a worker that ran out of data.
        fit_kwargs["steps_per_epoch"] = config.steps_per_epoch or max(1, data.sizes["train"] // global_batch)
        fit_kwargs["validation_steps"] = max(1, -(-data.sizes["val"] // global_batch))
    elif config.steps_per_epoch:
        fit_kwargs["steps_per_epoch"] = config.steps_per_epoch
    datasets = {split: data.dataset(split, global_batch, load_size, training=(split == "train"),
                                    repeat=repeat and (split == "train" or workers > 1), num_workers=workers)
                for split in ("train", "val")}
    model.fit(datasets["train"], validation_data=datasets["val"], **fit_kwargs)

    if paths.best.exists():
        model.load_weights(str(paths.best))
    seconds = time.time() - start
    log.info("final weights fingerprint %s (identical on every worker)", weights_fingerprint(model))
    metrics = evaluate_run(model, data, schema, global_batch, load_size, baseline)
    if chief:
        model.save(out / "model.keras")
        summary = {"seconds": seconds, "epochs_run": len(zcallbacks.read_history(paths.history)),
                   "n_train": int(data.sizes["train"]),
                   "params": int(model.count_params()), "backbone": config.backbone,
                   "workers": workers, "replicas": replicas, "metrics": metrics.to_dict(orient="records")}
        (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
        if config.export:
            from zoobot_tf.export import export_model

            export_model(model, out / "export", name="zoobot")
    else:
        shutil.rmtree(paths.root, ignore_errors=True)  # only the chief keeps files
        try:
            paths.root.parent.rmdir()
        except OSError:
            pass  # another worker's folder is still there
    return TrainResult(out, model, metrics, zcallbacks.read_history(paths.history), seconds, int(data.sizes["train"]))


class RunPaths:
    """Where a process writes: the chief into the run folder, other workers into a scratch folder
    of their own (deleted at the end), so only the chief's checkpoints, logs and exports remain."""

    def __init__(self, out: Path, chief: bool):
        self.root = out if chief else out / ".workers" / f"worker{distribute.worker_index()}"
        self.root.mkdir(parents=True, exist_ok=True)
        self.history = self.root / "history.csv"
        self.logs = self.root / "logs"
        self.best = self.root / "checkpoints" / "best.weights.h5"
        self.backup = out / "backup"  # shared: written by the chief, read by every worker
        self.best.parent.mkdir(parents=True, exist_ok=True)
        self.chief = chief


def _callbacks(config: TrainConfig, paths: RunPaths, data: VoteData, schema, load_size) -> list:
    prior_best, _, _ = zcallbacks.best_so_far(zcallbacks.read_history(paths.history), MONITOR)
    cbs = [
        zcallbacks.HistoryLog(paths.history),
        keras.callbacks.TensorBoard(str(paths.logs), update_freq="epoch", histogram_freq=0),
        keras.callbacks.ModelCheckpoint(str(paths.best), monitor=MONITOR, mode="min", save_best_only=True,
                                        save_weights_only=True,
                                        initial_value_threshold=prior_best if math.isfinite(prior_best) else None),
        zcallbacks.ResumableEarlyStopping(paths.history, monitor=MONITOR, mode="min", patience=config.patience),
        keras.callbacks.TerminateOnNaN(),
    ]
    if paths.chief:
        images, counts = _fixed_batch(data.dataset("val", 8, load_size, cache=False))
        if images is not None:
            cbs.insert(2, zcallbacks.GalaxyGrid(paths.logs, images, counts, schema, every=max(1, config.epochs // 10)))
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


def evaluate_run(model: Zoobot, data: VoteData, schema, batch_size: int, load_size: int,
                 baseline: np.ndarray | None = None, split: str = "test") -> pd.DataFrame:
    """Test metrics of ``model`` on a split, with the training-set baseline."""
    conc, counts = evaluate.predict_batches(model, data.dataset(split, batch_size, load_size))
    if baseline is None:
        baseline = evaluate.fit_baseline(data.labels("train"), schema)
    return evaluate.vote_metrics(counts, conc, schema, baseline=baseline)
