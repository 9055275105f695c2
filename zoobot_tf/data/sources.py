"""Where galaxies come from: one :class:`DataSource` interface for shards, catalogs/folders and TFDS.

Every job reads data through it (train, finetune, predict, embed, the scaling sweeps)::

    source = open_source("data/shards")                      # TFRecord shards (manifest.json)
    source = open_source("catalog.csv", task=ClassificationTask(["no", "yes"]), label_cols="ring")
    source = open_source("my_images/")                       # a folder of JPEG/PNG/FITS (no labels)
    source = open_source("tfds:gz_rings")                    # a prepared TFDS data set

    source.task                  # the labels' Task (None for unlabelled images)
    source.sizes                 # {"train": n, "val": n, "test": n}
    source.dataset("train", batch_size=64, load_size=72, training=True)   # (images, labels, weights)
    source.labels("train")       # every label of a split, without decoding images
    source.images("test")        # (expected galaxies: id_str, file_loc), tf.data of (encoded bytes, id_str)

Splits are ``train``, ``val`` and ``test`` (:mod:`zoobot_tf.data.splits`). Batches go through the shared
tail of :mod:`zoobot_tf.data.pipeline` (decode, resize to ``load_size``, cache, shuffle, pad, weight).
"""
from __future__ import annotations

import abc
import contextlib
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from zoobot_tf.data import pipeline, tfrecords
from zoobot_tf.data.catalogs import (
    FILE_COL,
    ID_COL,
    CatalogError,
    column_list,
    folder_catalog,
    read_catalog,
    resolve_file_locs,
)
from zoobot_tf.data.images import bytes_reader
from zoobot_tf.data.splits import (
    SPLITS,
    TFDS_SPLIT_NAMES,
    split_by_id,
    subset_filter,
    subset_mask,
)
from zoobot_tf.tasks import Task

FINETUNE_FRACTIONS = (0.7, 0.15, 0.15)  # a catalog without a split column, split by id hash
TFDS_PREFIX = "tfds:"


class ReadError(ValueError):
    """Data that could not be read (a corrupt file the source could not pin down)."""


class DataSource(abc.ABC):
    """Labelled (or unlabelled) galaxies in splits. See the module docstring."""

    task: Task | None = None

    @property
    @abc.abstractmethod
    def sizes(self) -> dict[str, int]:
        """Galaxies per split."""

    @abc.abstractmethod
    def dataset(self, split: str, batch_size: int, load_size: int, training: bool = False, *, repeat: bool = False,
                seed: int | None = None, deterministic: bool | None = None, cache: bool | str = "auto",
                num_workers: int = 1, class_weight: Mapping[int, float] | None = None) -> tf.data.Dataset:
        """Batched ``(images, labels, sample_weight)`` of a split (see :mod:`zoobot_tf.data.pipeline`)."""

    @abc.abstractmethod
    def labels(self, split: str) -> np.ndarray:
        """Every label of a split, in the order of :meth:`images`, without decoding images."""

    @abc.abstractmethod
    def images(self, split: str | None = None, exclude: set[str] | None = None) -> tuple[pd.DataFrame, tf.data.Dataset]:
        """(expected galaxies with ``id_str`` and ``file_loc``, dataset of (encoded bytes, id_str)) of a split,
        or of every galaxy, leaving out the ids in ``exclude`` (those a resumed job has done already).
        Unreadable images fail only when decoded, so callers can skip and list them."""

    def verify(self, deep: bool = True) -> None:
        """Check the source's files (raise an error naming a missing or corrupt one); a no-op by default."""

    @contextlib.contextmanager
    def reading(self):
        """Turn a low-level read failure (a truncated or corrupt file) into an error that names the file and
        says how to remake it: the source verifies itself in depth when TensorFlow reports lost data."""
        try:
            yield
        except tf.errors.DataLossError as e:
            self.verify(deep=True)
            raise ReadError(f"Reading {self} failed: {e.message.splitlines()[0]}. Its files may be corrupt; "
                            f"remake them.") from None

    # ------------------------------------------------------------------ shared checks
    def require_task(self, job: str) -> Task:
        if self.task is None:
            raise ValueError(f"{self} holds no labels; {job} needs labelled galaxies.")
        return self.task

    def require_splits(self, needed: Sequence[str] = SPLITS) -> None:
        empty = [s for s in needed if self.sizes.get(s, 0) == 0]
        if empty:
            raise ValueError(f"{self}: the {', '.join(empty)} split(s) are empty ({self.sizes}); give more "
                             f"galaxies or a split column with train/val/test rows.")

    def _finish(self, ds, batch_size, load_size, training, n, class_weight, **kwargs):
        ds = pipeline.finish(ds, batch_size, load_size, training, n_examples=n, **kwargs)
        if self.task is not None:
            ds = pipeline.weight_by_label(ds, self.task.sample_weight_table(class_weight))
        elif class_weight:
            raise ValueError("class_weight needs labelled galaxies")
        return ds


class ShardSource(DataSource):
    """TFRecord shards made by :func:`zoobot_tf.data.tfrecords.write_shards` (``zoobot-tf make-shards``).

    ``train_fraction`` < 1 keeps a deterministic, nested subset of the training split (scaling studies).
    """

    def __init__(self, shard_dir: str | Path, train_fraction: float = 1.0, fraction_seed: int = 0):
        if not 0.0 < train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1]. Received: train_fraction={train_fraction}")
        self.shard_dir = Path(shard_dir)
        self.manifest = tfrecords.read_manifest(self.shard_dir)
        self.verify(deep=False)  # every shard present, with the size the manifest recorded
        self.task = tfrecords.manifest_task(self.manifest)
        self.train_fraction, self.fraction_seed = float(train_fraction), int(fraction_seed)
        self._sizes = {s: e["n_galaxies"] for s, e in self.manifest["splits"].items()}
        if self.train_fraction < 1.0 and "train" in self._sizes:
            self._sizes["train"] = tfrecords.subset_size(self.shard_dir, "train", self.train_fraction, fraction_seed)
            if self._sizes["train"] == 0:
                raise ValueError(f"train_fraction={train_fraction} leaves no training galaxies in {self.shard_dir}.")

    def __repr__(self) -> str:
        return f"ShardSource({str(self.shard_dir)!r})"

    def verify(self, deep: bool = True) -> None:
        tfrecords.verify_shards(self.shard_dir, deep=deep)

    @property
    def sizes(self) -> dict[str, int]:
        return dict(self._sizes)

    def _fraction(self, split: str) -> float:
        return self.train_fraction if split == "train" else 1.0

    def dataset(self, split, batch_size, load_size, training=False, *, repeat=False, seed=None, deterministic=None,
                cache="auto", num_workers=1, class_weight=None):
        ds = tfrecords.shard_dataset(self.shard_dir, split, batch_size, load_size, training=training, seed=seed,
                                     deterministic=deterministic, repeat=repeat, cache=cache, num_workers=num_workers,
                                     fraction=self._fraction(split), fraction_seed=self.fraction_seed)
        table = self.task.sample_weight_table(class_weight) if self.task is not None else None
        return pipeline.weight_by_label(ds, table)

    def labels(self, split: str) -> np.ndarray:
        ids, labels = tfrecords.read_labels(self.shard_dir, split)
        if self._fraction(split) < 1.0 and ids:
            labels = labels[subset_mask(ids, self.train_fraction, self.fraction_seed)]
        return labels

    def images(self, split=None, exclude=None):
        splits = [split] if split else list(self.manifest["splits"])
        ids, ds = [], None
        for s in splits:
            ids += tfrecords.read_labels(self.shard_dir, s)[0]
            part = tfrecords.shard_ids_dataset(self.shard_dir, s)
            ds = part if ds is None else ds.concatenate(part)
        return _excluding(pd.DataFrame({ID_COL: ids, FILE_COL: [f"{self.shard_dir}:{i}" for i in ids]}), ds, exclude)


class CatalogSource(DataSource):
    """A catalog table (DataFrame, CSV or Parquet) with ``id_str``, ``file_loc`` and label columns, or a
    folder of images (:meth:`from_folder`, no labels).

    Splits come from the ``split_col`` column (``train``/``val``/``test``) when the catalog has one, else
    from a hash of ``id_str`` into ``fractions``. With a ``task`` the catalog is checked once, up front
    (:func:`zoobot_tf.data.catalogs.validate_catalog`); without one, unreadable images are only skipped.
    """

    def __init__(self, catalog: pd.DataFrame | str | Path, task: Task | None = None,
                 label_cols: Sequence[str] | str | None = None, split_col: str | None = "split",
                 fractions: Sequence[float] = FINETUNE_FRACTIONS, validate: bool = True):
        if not isinstance(catalog, pd.DataFrame):
            path = Path(catalog)
            catalog = resolve_file_locs(read_catalog(path), path.parent)
            self.origin = str(path)
        else:
            self.origin = "a DataFrame"
        missing = [col for col in (ID_COL, FILE_COL) if col not in catalog.columns]
        if missing:
            raise CatalogError(f"A catalog needs columns {ID_COL!r} (each galaxy's id) and {FILE_COL!r} (its image "
                               f"file); {self.origin} has no {' and no '.join(map(repr, missing))}. Its columns: "
                               f"{column_list(catalog.columns)}")
        self.catalog = catalog.reset_index(drop=True)
        self.task = task
        self.label_cols = task.label_columns(label_cols) if task is not None else []
        if task is not None and validate:
            task.validate_catalog(self.catalog, self.label_cols)
        if split_col and split_col in self.catalog.columns:
            split = self.catalog[split_col].astype(str).to_numpy()
            unknown = sorted(set(split) - set(SPLITS))
            if unknown:
                raise ValueError(f"Column {split_col!r} of {self.origin} must hold {'/'.join(SPLITS)}; it also holds "
                                 f"{unknown[:5]}")
        else:
            split = split_by_id(self.catalog[ID_COL].astype(str).tolist(), fractions, SPLITS)
        self.split = split

    @classmethod
    def from_folder(cls, folder: str | Path) -> "CatalogSource":
        source = cls(folder_catalog(folder))
        source.origin = str(folder)
        return source

    def __repr__(self) -> str:
        return f"CatalogSource({self.origin!r}, {len(self.catalog)} galaxies)"

    @property
    def sizes(self) -> dict[str, int]:
        return {s: int((self.split == s).sum()) for s in SPLITS}

    def rows(self, split: str | None) -> pd.DataFrame:
        return self.catalog if split is None else self.catalog[self.split == split]

    def labels(self, split: str | None) -> np.ndarray:
        """Labels of a split (None: every row)."""
        return self.require_task("labels").encode(self.rows(split), self.label_cols)

    def dataset(self, split, batch_size, load_size, training=False, *, repeat=False, seed=None, deterministic=None,
                cache="auto", num_workers=1, class_weight=None):
        """Batches of a split (None: every row of the catalog)."""
        rows = self.rows(split)
        paths = rows[FILE_COL].astype(str).tolist()
        read = bytes_reader(paths)
        labels = self.labels(split)
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        ds = ds.map(lambda p, y: (read(p), y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
        return self._finish(ds, batch_size, load_size, training, len(rows), class_weight, seed=seed,
                            deterministic=deterministic, repeat=repeat, cache=cache, file_based=False)

    def images(self, split=None, exclude=None):
        rows = self.rows(split)[[ID_COL, FILE_COL]]
        if exclude:
            rows = rows[~rows[ID_COL].astype(str).isin(exclude)]
        rows = rows.reset_index(drop=True)
        paths = rows[FILE_COL].astype(str).tolist()
        read = bytes_reader(paths)
        ds = tf.data.Dataset.from_tensor_slices((paths, rows[ID_COL].astype(str).tolist()))
        return rows, ds.map(lambda p, i: (read(p), i), num_parallel_calls=tf.data.AUTOTUNE)


class TFDSSource(DataSource):
    """A prepared TFDS data set (``import zoobot_tf.datasets`` registers the Galaxy Zoo builders).

    Its task is the builder's ``TASK`` (votes over its schema, or its ClassLabel's classes). A data set
    without a validation split gets one carved from its training split by a hash of ``id_str``
    (``val_fraction`` of it), so that model selection never looks at the test split.
    """

    def __init__(self, name: str, data_dir: str | Path | None = None, val_fraction: float = 0.15):
        from zoobot_tf import datasets as zdatasets

        self.name, self.data_dir = name, data_dir
        self.builder = zdatasets.builder(name, data_dir)
        self.task = zdatasets.builder_task(self.builder)
        available = set(self.builder.info.splits)
        self.carved = TFDS_SPLIT_NAMES["val"] not in available
        self.val_fraction = float(val_fraction)
        missing = [s for s in ("train", "test") if s not in available]
        if missing:
            raise ValueError(f"TFDS data set {name!r} has no {missing} split(s); it has {sorted(available)}")
        self._sizes = {s: self.builder.info.splits[TFDS_SPLIT_NAMES[s]].num_examples for s in SPLITS if not (
            s == "val" and self.carved)}
        if self.carved:
            ids = self._ids("train")
            in_val = subset_mask(ids, self.val_fraction, seed=0)
            self._sizes["val"], self._sizes["train"] = int(in_val.sum()), int((~in_val).sum())

    def __repr__(self) -> str:
        return f"TFDSSource({self.name!r})"

    def verify(self, deep: bool = True) -> None:
        """TFDS keeps no checksums of its prepared files: check they exist and read the records through."""
        data_dir = Path(self.builder.data_dir)
        hint = (f"Rebuild it: zoobot-tf tfds-build {self.name} --data_dir {data_dir.parents[1]} "
                f"(with --manual_dir where it needs one)")
        files = sorted(data_dir.glob("*.tfrecord*"))
        if not files:
            raise ReadError(f"No TFRecord files in {data_dir}. {hint}")
        if deep:
            for f in files:
                try:
                    for _ in tf.data.TFRecordDataset(str(f)):
                        pass
                except tf.errors.DataLossError:
                    raise ReadError(f"{f} is corrupt (TFDS data set {self.name!r}). {hint}") from None

    @property
    def sizes(self) -> dict[str, int]:
        return dict(self._sizes)

    def _examples(self, split: str, shuffle_files: bool = False) -> tf.data.Dataset:
        import tensorflow_datasets as tfds

        stored = "train" if (self.carved and split == "val") else TFDS_SPLIT_NAMES[split]
        ds = self.builder.as_dataset(split=stored, decoders={"image": tfds.decode.SkipDecoding()},
                                     shuffle_files=shuffle_files)
        if self.carved and split in ("train", "val"):
            keep = subset_filter(self.val_fraction, seed=0)
            ds = ds.filter(lambda ex: keep(ex["id_str"]) if split == "val" else tf.logical_not(keep(ex["id_str"])))
        return ds

    def _ids(self, split: str) -> list[str]:
        import tensorflow_datasets as tfds

        ds = self.builder.as_dataset(split=TFDS_SPLIT_NAMES[split], decoders={"image": tfds.decode.SkipDecoding()})
        return [i.decode() for i in ds.map(lambda ex: ex["id_str"]).as_numpy_iterator()]

    def dataset(self, split, batch_size, load_size, training=False, *, repeat=False, seed=None, deterministic=None,
                cache="auto", num_workers=1, class_weight=None):
        task = self.require_task("training")
        ds = self._examples(split, shuffle_files=training)
        ds = ds.map(lambda ex: (ex["image"], task.parse(ex)), num_parallel_calls=tf.data.AUTOTUNE)
        return self._finish(ds, batch_size, load_size, training, self._sizes[split], class_weight, seed=seed,
                            deterministic=deterministic, repeat=repeat, cache=cache, file_based=True)

    def labels(self, split: str) -> np.ndarray:
        task = self.require_task("labels")
        ds = self._examples(split).map(lambda ex: task.parse(ex))
        return np.stack(list(ds.as_numpy_iterator())) if self._sizes[split] else np.zeros((0,))

    def images(self, split=None, exclude=None):
        splits = [split] if split else [s for s in SPLITS if self._sizes.get(s)]
        ids, ds = [], None
        for s in splits:
            part = self._examples(s).map(lambda ex: (ex["image"], ex["id_str"]))
            ids += [i.decode() for i in part.map(lambda b, i: i).as_numpy_iterator()]
            ds = part if ds is None else ds.concatenate(part)
        return _excluding(pd.DataFrame({ID_COL: ids, FILE_COL: [f"tfds:{self.name}:{i}" for i in ids]}), ds, exclude)


def _excluding(expected: pd.DataFrame, ds: tf.data.Dataset, exclude: set[str] | None):
    """Drop the ``exclude`` ids from the expected table and from a (bytes, id) dataset (before decoding)."""
    if not exclude:
        return expected, ds
    keys = tf.constant(sorted(exclude))
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, tf.ones_like(keys, tf.int32)), 0)
    ds = ds.filter(lambda raw, i: tf.equal(table.lookup(i), 0))
    return expected[~expected[ID_COL].astype(str).isin(exclude)].reset_index(drop=True), ds


def open_source(spec, task: Task | None = None, label_cols: Sequence[str] | str | None = None,
                **kwargs) -> DataSource:
    """A DataSource from what a user passes: a DataSource, a DataFrame, ``tfds:<name>``, a shard folder
    (with ``manifest.json``), a folder of images, or a catalog file (CSV/Parquet)."""
    if isinstance(spec, DataSource):
        return spec
    if isinstance(spec, pd.DataFrame):
        return CatalogSource(spec, task, label_cols, **kwargs)
    text = str(spec)
    if text.startswith(TFDS_PREFIX):
        return TFDSSource(text[len(TFDS_PREFIX):], **kwargs)
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"Input not found: {path} (expected a catalog file, a folder of images, a shard "
                                f"folder, or tfds:<name>)")
    if path.is_dir() and (path / tfrecords.MANIFEST).exists():
        return ShardSource(path, **kwargs)
    if path.is_dir():
        return CatalogSource.from_folder(path)
    return CatalogSource(path, task, label_cols, **kwargs)
