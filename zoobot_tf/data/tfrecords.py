"""Catalog -> sharded TFRecords (encoded image bytes + id + labels) with a JSON manifest, and back.

Shards hold the *encoded* JPEG/PNG bytes, not raw pixels: Zoobot's raw-uint8 TFRecords cost
~270 KB per galaxy and were abandoned for disk cost. Optionally images are resized and re-encoded
(JPEG) at shard time (``stored_size``), which makes training at small sizes much faster to decode.

Layout of a shard folder::

    manifest.json                       schema, label columns, splits, counts, sha256 of every shard
    train-00000-of-00004.tfrecord ...
    val-00000-of-00001.tfrecord
    test-00000-of-00001.tfrecord
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from zoobot_tf.data import pipeline
from zoobot_tf.data.catalogs import FILE_COL, ID_COL, validate_catalog
from zoobot_tf.data.images import bytes_reader, decode_image_bytes
from zoobot_tf.data.splits import (
    DEFAULT_FRACTIONS,
    SPLITS,
    split_by_id,
    subset_filter,
    subset_mask,
)
from zoobot_tf.tasks import Task, make_task

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class ShardError(ValueError):
    """Shards that are missing, corrupt or do not fit the request (split, workers, schema)."""


def _join(folder, name: str) -> str:
    """A path inside ``folder`` as a string TF's file systems read (local, gs://, s3://, hdfs://)."""
    return f"{str(folder).rstrip('/')}/{name}"


def _sha256(path) -> str:
    h = hashlib.sha256()
    with tf.io.gfile.GFile(str(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _example(image: bytes, id_str: str, task: Task | None, label) -> bytes:
    feats = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        "id_str": tf.train.Feature(bytes_list=tf.train.BytesList(value=[id_str.encode()])),
    }
    if task is not None:
        feats.update(task.example_features(label))
    # deterministic: map entries in key order, so any process writes the same bytes
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString(deterministic=True)


def _encoded_images(paths: Sequence[str], stored_size: int | None, jpeg_quality: int):
    """Yield (index, encoded bytes) for every readable image, in order; unreadable ones are skipped.

    Runs as a parallel tf.data map; decoding validates each image even when its bytes are kept as-is.
    """
    read = bytes_reader(paths)

    def load(i, path):
        raw = read(path)
        img = decode_image_bytes(raw)
        if stored_size:
            small = tf.image.resize(img, (stored_size, stored_size), antialias=True)
            raw = tf.io.encode_jpeg(tf.cast(tf.clip_by_value(tf.round(small), 0, 255), tf.uint8), quality=jpeg_quality)
        else:
            tf.debugging.assert_positive(tf.size(img))  # keeps the decode in the graph as a validity check
        return i, raw

    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), np.asarray(paths, dtype=object).astype(str)))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
    for i, raw in ds.as_numpy_iterator():
        yield int(i), raw


@dataclasses.dataclass
class ShardWork:
    """One shard to write: its galaxies (catalog rows, in catalog order) and everything needed to write it
    anywhere (a worker of a distributed job gets exactly this)."""

    split: str
    index: int
    of: int
    ids: list
    paths: list
    labels: np.ndarray

    @property
    def file(self) -> str:
        return f"{self.split}-{self.index:05d}-of-{self.of:05d}.tfrecord"


def plan_shards(catalog: pd.DataFrame, task: Task | None = None, label_cols: Sequence[str] | None = None,
                split_col: str | None = "split", splits: dict[str, float] | None = None,
                galaxies_per_shard: int = 1024, min_shards: int = 2) -> tuple[list[ShardWork], list[str]]:
    """Which galaxies go to which shard file (the same for every writer, local or distributed); returns the
    work and the label columns written. See :func:`write_shards` for the arguments."""
    if task is not None:
        task.validate_catalog(catalog, label_cols)
        label_cols = task.label_columns(label_cols)
    else:
        validate_catalog(catalog, label_cols=[])
        label_cols = []
    catalog = catalog.reset_index(drop=True)
    if split_col and split_col in catalog.columns:
        split_of = catalog[split_col].astype(str).to_numpy()
    else:
        splits = splits or dict(zip(SPLITS, DEFAULT_FRACTIONS))
        split_of = split_by_id(catalog[ID_COL].astype(str).tolist(), list(splits.values()), list(splits))
    labels = task.encode(catalog, label_cols) if task is not None else np.zeros((len(catalog), 0))
    ids = catalog[ID_COL].astype(str).to_numpy(dtype=object)
    paths = catalog[FILE_COL].astype(str).to_numpy(dtype=object)
    work = []
    for split in pd.unique(split_of):
        idx = np.flatnonzero(split_of == split)
        n_shards = max(math.ceil(len(idx) / galaxies_per_shard), min(min_shards, len(idx)), 1)
        for s, rows in enumerate(np.array_split(idx, n_shards)):
            work.append(ShardWork(str(split), s, n_shards, ids[rows].tolist(), paths[rows].tolist(), labels[rows]))
    return work, list(label_cols)


def write_shard(work: ShardWork, output_dir, task: Task | None, stored_size: int | None = None,
                jpeg_quality: int = 95, on_image=None) -> dict:
    """Write one shard (to a temporary name, renamed when whole: a retried write replaces it); returns its
    manifest entry, with the ids of unreadable images under ``skipped_ids``."""
    final = _join(output_dir, work.file)
    tmp = final + ".partial"
    written = np.zeros(len(work.ids), dtype=bool)
    with tf.io.TFRecordWriter(tmp) as writer:
        for i, raw in _encoded_images(work.paths, stored_size, jpeg_quality):
            writer.write(_example(raw, work.ids[i], task, work.labels[i]))
            written[i] = True
            if on_image:
                on_image()
    tf.io.gfile.rename(tmp, final, overwrite=True)
    return {"split": work.split, "file": work.file, "n_galaxies": int(written.sum()), "sha256": _sha256(final),
            "bytes": int(tf.io.gfile.stat(final).length),
            "skipped_ids": [work.ids[i] for i in np.flatnonzero(~written)]}


def write_manifest(output_dir, entries: Sequence[dict], task: Task | None, label_cols: Sequence[str],
                   stored_size: int | None, remake: str | None, engine: dict | None = None) -> dict:
    """Assemble the manifest from every shard's entry (in split, then file order) and write it last: a folder
    with a manifest is complete. ``engine``: how a distributed writer ran (runner, processes)."""
    splits: dict = {}
    skipped: list = []
    for e in sorted(entries, key=lambda e: (e["split"], e["file"])):
        skipped += e["skipped_ids"]
        entry = splits.setdefault(e["split"], {"n_galaxies": 0, "shards": []})
        entry["n_galaxies"] += e["n_galaxies"]
        entry["shards"].append({k: e[k] for k in ("file", "n_galaxies", "sha256", "bytes")})
    if skipped:
        log.warning("Skipped %d unreadable images (listed in the manifest): %s", len(skipped), skipped[:10])
    manifest = {
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "label_kind": task.name if task is not None else "none",
        "task": task.get_config() if task is not None else None,
        "label_cols": list(label_cols),
        "image": {"stored_size": stored_size, "encoding": "jpeg" if stored_size else "as-is"},
        "splits": splits,
        "skipped_ids": skipped,
        "remake": remake,
    }
    if engine:
        manifest["engine"] = engine
    path = _join(output_dir, MANIFEST)
    with tf.io.gfile.GFile(path + ".partial", "w") as f:
        f.write(json.dumps(manifest, indent=2))
    tf.io.gfile.rename(path + ".partial", path, overwrite=True)
    return manifest


def prepare_output(output_dir, overwrite: bool) -> None:
    """Refuse a finished shard folder unless ``overwrite``; with it, remove its manifest and shards."""
    output_dir = str(output_dir)
    if tf.io.gfile.exists(_join(output_dir, MANIFEST)):
        if not overwrite:
            raise FileExistsError(f"{output_dir} already holds shards; pass overwrite=True (--overwrite true) "
                                  f"to replace them.")
        tf.io.gfile.remove(_join(output_dir, MANIFEST))
        for old in tf.io.gfile.glob(_join(output_dir, "*.tfrecord")):
            tf.io.gfile.remove(old)
    tf.io.gfile.makedirs(output_dir)


def write_shards(
    catalog: pd.DataFrame,
    output_dir: str | Path,
    task: Task | None = None,
    label_cols: Sequence[str] | None = None,
    split_col: str | None = "split",
    splits: dict[str, float] | None = None,
    galaxies_per_shard: int = 1024,
    min_shards: int = 2,
    stored_size: int | None = None,
    jpeg_quality: int = 95,
    overwrite: bool = False,
    progress: bool = True,
    remake: str | None = None,
) -> dict:
    """Write a catalog as TFRecord shards with a manifest, in this process; return the manifest.
    (:func:`zoobot_tf.engines.beam.write_shards_beam` writes the same shards on Apache Beam.)

    Args:
        catalog: ``id_str``, ``file_loc`` and the label columns.
        task: what the labels are (:mod:`zoobot_tf.tasks`): ``VoteTask(schema)`` writes the schema's vote
            counts, ``ClassificationTask`` one class index, ``RegressionTask`` float targets; None writes
            images only (for prediction).
        label_cols: the catalog's label columns for classification/regression (votes: the schema's).
        split_col: a column of ``train``/``val``/``test``; if absent, galaxies are split by a hash of
            ``id_str`` into ``splits`` (default ``{"train": 0.8, "val": 0.1, "test": 0.1}``;
            deterministic, and stable as the catalog grows).
        galaxies_per_shard, min_shards: shard sizing (``min_shards`` per split when there are enough
            galaxies, so multi-worker training can shard by file).
        stored_size: re-encode images as JPEG at this size (square) to save disk and decode time.
        overwrite: replace an existing shard folder.
        remake: the command that remakes these shards, stored in the manifest and named when a shard is found
            missing or corrupt.
    """
    from tqdm import tqdm

    work, label_cols = plan_shards(catalog, task, label_cols, split_col, splits, galaxies_per_shard, min_shards)
    prepare_output(output_dir, overwrite)
    with tqdm(total=len(catalog), desc=f"writing shards to {output_dir}", unit="galaxy", disable=not progress) as bar:
        entries = [write_shard(w, output_dir, task, stored_size, jpeg_quality, on_image=lambda: bar.update(1))
                   for w in work]
    return write_manifest(output_dir, entries, task, label_cols, stored_size, remake)


def read_manifest(shard_dir: str | Path) -> dict:
    path = _join(shard_dir, MANIFEST)
    if not tf.io.gfile.exists(path):
        raise ShardError(f"No {MANIFEST} in {shard_dir}: not a zoobot-tf shard folder (make one with "
                         f"`zoobot-tf make-shards`), or its writing did not finish.")
    with tf.io.gfile.GFile(path) as f:
        manifest = json.loads(f.read())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ShardError(f"{path} has format_version {manifest.get('format_version')}; expected {FORMAT_VERSION}.")
    return manifest


def remake_hint(manifest: dict, shard_dir) -> str:
    command = manifest.get("remake")
    if command:
        return f"Remake the shards with: {command}"
    return (f"Remake them with `zoobot-tf make-shards --catalog <your catalog> --output_dir {shard_dir} "
            f"--overwrite true` (or, for shards a training run made, delete {shard_dir} and rerun it).")


def shard_files(shard_dir: str | Path, split: str, verify: bool = False) -> list[str]:
    """The shard files of a split, checked to exist with the size the manifest records (cheap), and with
    ``verify`` against their sha256 (reads every byte). A missing or corrupt shard raises ShardError naming
    it and the command that remakes the shards."""
    manifest = read_manifest(shard_dir)
    if split not in manifest["splits"]:
        raise ShardError(f"Split {split!r} not in {shard_dir}; available: {sorted(manifest['splits'])}")
    files = []
    for entry in manifest["splits"][split]["shards"]:
        path = _join(shard_dir, entry["file"])
        if not tf.io.gfile.exists(path):
            raise ShardError(f"Shard {path} is listed in the manifest but missing. {remake_hint(manifest, shard_dir)}")
        size = entry.get("bytes")
        actual = tf.io.gfile.stat(path).length
        if size is not None and actual != size:
            raise ShardError(f"Shard {path} has {actual} bytes; the manifest recorded {size} (truncated "
                             f"or replaced). {remake_hint(manifest, shard_dir)}")
        if verify and _sha256(path) != entry["sha256"]:
            raise ShardError(f"Shard {path} does not match its sha256 in the manifest (corrupt or replaced). "
                             f"{remake_hint(manifest, shard_dir)}")
        files.append(str(path))
    return files


def verify_shards(shard_dir: str | Path, deep: bool = True) -> None:
    """Check every shard of every split (see :func:`shard_files`); raises ShardError on the first bad one."""
    for split in read_manifest(shard_dir)["splits"]:
        shard_files(shard_dir, split, verify=deep)


def manifest_task(manifest: dict) -> Task | None:
    """The task whose labels a shard folder holds (None: images only). Reads manifests written before
    tasks were stored (``label_kind`` with ``schema``/``class_names``/``label_cols``) too."""
    if manifest.get("task"):
        return make_task(manifest["task"])
    if manifest.get("label_kind") in (None, "none"):
        return None
    return make_task(manifest["label_kind"], schema=manifest.get("schema"), class_names=manifest.get("class_names"),
                     target_names=manifest.get("label_cols"))


@tf.autograph.experimental.do_not_convert
def _labels_and_id(image, labels, id_str):
    return labels, id_str


def parse_fn(task: Task | None):
    """Parse one serialized example -> (encoded image bytes, labels, id_str); empty labels without a task."""
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "id_str": tf.io.FixedLenFeature([], tf.string)}
    if task is not None:
        spec.update(task.feature_spec())

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        labels = task.parse(ex) if task is not None else tf.zeros([0], tf.float32)
        return ex["image"], labels, ex["id_str"]

    return parse


def shard_dataset(
    shard_dir: str | Path,
    split: str,
    batch_size: int,
    load_size: int,
    training: bool = False,
    shuffle_buffer: int = 2048,
    seed: int | None = None,
    deterministic: bool | None = None,
    repeat: bool = False,
    cache: bool | str = "auto",
    num_workers: int = 1,
    fraction: float = 1.0,
    fraction_seed: int = 0,
) -> tf.data.Dataset:
    """A batched ``(images, labels, sample_weight)`` dataset from a shard folder (see :mod:`pipeline`).

    Shards are read with a parallel interleave (file order shuffled when training); ``deterministic``
    fixes the order of everything for reproducible runs. ``num_workers`` > 1 checks that the split has
    at least that many shards, since multi-worker training divides the shards between workers.
    ``fraction`` < 1 keeps a deterministic subset of the galaxies (by a hash of ``id_str`` and
    ``fraction_seed``; nested: a smaller fraction is a subset of a larger one), for scaling studies.
    """
    manifest = read_manifest(shard_dir)
    files = shard_files(shard_dir, split)
    if num_workers > 1 and len(files) < num_workers:
        raise ShardError(f"Split {split!r} has {len(files)} shard(s) but training uses {num_workers} workers; each "
                         f"worker needs at least one. Re-make the shards with more (e.g. --galaxies_per_shard).")
    n_examples = manifest["splits"][split]["n_galaxies"]
    parse = parse_fn(manifest_task(manifest))
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    keep = subset_filter(fraction, fraction_seed)

    def in_subset(image, labels, id_str):
        return keep(id_str)

    def drop_id(image, labels, id_str):
        return image, labels

    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if fraction < 1.0:
        ds = ds.filter(in_subset)
        n_examples = subset_size(shard_dir, split, fraction, fraction_seed)
    ds = ds.map(drop_id)
    return pipeline.finish(ds, batch_size, load_size, training, n_examples=n_examples, shuffle_buffer=shuffle_buffer,
                           seed=seed, deterministic=deterministic, repeat=repeat, cache=cache,
                           known_cardinality=num_workers == 1)


def subset_size(shard_dir, split: str, fraction: float, seed: int = 0) -> int:
    ids, _ = read_labels(shard_dir, split)
    return int(subset_mask(ids, fraction, seed).sum())


def shard_ids_dataset(shard_dir: str | Path, split: str) -> tf.data.Dataset:
    """(encoded bytes, id_str) per galaxy in file order: for predictions over shards."""
    parse = parse_fn(manifest_task(read_manifest(shard_dir)))
    ds = tf.data.TFRecordDataset(shard_files(shard_dir, split)).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.map(lambda image, labels, id_str: (image, id_str))


def read_labels(shard_dir: str | Path, split: str) -> tuple[list[str], np.ndarray]:
    """All ids and labels of a split, in file order (for evaluation), without decoding images."""
    parse = parse_fn(manifest_task(read_manifest(shard_dir)))
    ds = tf.data.TFRecordDataset(shard_files(shard_dir, split)).map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                                                                    deterministic=True).map(_labels_and_id)
    ids, labels = [], []
    for y, i in ds.batch(4096).as_numpy_iterator():  # batched: one Python step per 4,096 galaxies
        ids.extend(x.decode() for x in i)
        labels.append(y)
    return ids, (np.concatenate(labels) if labels else np.zeros((0,)))
