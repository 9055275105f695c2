"""Where images come from for finetuning, prediction and embeddings: catalogs, folders, shards.

:func:`image_source` turns any of them into a list of expected galaxies (``id_str``, ``file_loc``)
and a ``tf.data`` set of ``(encoded bytes, id_str)``. Unreadable or missing images are dropped by
the pipeline (never crashing the run); callers compare the ids that came out with the expected
ones to list what was skipped.

:func:`catalog_dataset` gives labelled, batched training data from a catalog, through the same
decode/pad/weight tail as the TFRecord path (:mod:`zoobot_tf.data.pipeline`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from zoobot_tf.data import pipeline, tfrecords
from zoobot_tf.data.catalogs import FILE_COL, ID_COL, read_catalog, resolve_file_locs, validate_catalog
from zoobot_tf.data.images import FITS_SUFFIXES, IMAGE_SUFFIXES, is_fits, read_image_file


def _read_bytes_fn(paths: Sequence[str]):
    if any(is_fits(p) for p in paths):
        def read(path):
            raw = tf.numpy_function(lambda p: read_image_file(p.decode()), [path], tf.string, stateful=False)
            return tf.reshape(raw, [])
        return read
    return tf.io.read_file


def folder_catalog(folder: str | Path) -> pd.DataFrame:
    """A catalog of every JPEG/PNG/FITS image in a folder (recursively); ``id_str`` is the file stem."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and (
        p.suffix.lower() in IMAGE_SUFFIXES or is_fits(p)))
    if not files:
        raise FileNotFoundError(f"No images ({', '.join(IMAGE_SUFFIXES + FITS_SUFFIXES)}) found under {folder}")
    ids = [str(p.relative_to(folder).with_suffix("")) for p in files]
    return pd.DataFrame({ID_COL: ids, FILE_COL: [str(p) for p in files]})


def image_source(source, split: str | None = None) -> tuple[pd.DataFrame, tf.data.Dataset]:
    """(expected galaxies, dataset of (encoded bytes, id_str)) for a catalog, folder or shard folder.

    Args:
        source: a DataFrame, a catalog file (CSV/Parquet), a folder of images, or a shard folder
            (with ``manifest.json``; ``split`` chooses the split, default all splits).
    """
    if isinstance(source, pd.DataFrame):
        catalog = source
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"Input not found: {path}")
        if path.is_dir() and (path / tfrecords.MANIFEST).exists():
            manifest = tfrecords.read_manifest(path)
            splits = [split] if split else list(manifest["splits"])
            ids = [i for s in splits for i in tfrecords.read_labels(path, s)[0]]
            ds = None
            for s in splits:
                part = tfrecords.shard_ids_dataset(path, s)
                ds = part if ds is None else ds.concatenate(part)
            return pd.DataFrame({ID_COL: ids, FILE_COL: [f"{path}:{i}" for i in ids]}), ds
        catalog = folder_catalog(path) if path.is_dir() else resolve_file_locs(read_catalog(path), path.parent)
    if ID_COL not in catalog.columns or FILE_COL not in catalog.columns:
        raise ValueError(f"A catalog needs columns {ID_COL!r} and {FILE_COL!r}. Received: {list(catalog.columns)}")
    paths = catalog[FILE_COL].astype(str).tolist()
    read = _read_bytes_fn(paths)
    ds = tf.data.Dataset.from_tensor_slices((paths, catalog[ID_COL].astype(str).tolist()))
    ds = ds.map(lambda p, i: (read(p), i), num_parallel_calls=tf.data.AUTOTUNE)
    return catalog[[ID_COL, FILE_COL]].reset_index(drop=True), ds


def decoded_batches(ds: tf.data.Dataset, batch_size: int, load_size: int) -> tf.data.Dataset:
    """(bytes, id) -> batches of (images [0, 255], ids); images that fail to decode are dropped."""
    from zoobot_tf.data.images import decode_image_bytes

    ds = ds.map(lambda raw, i: (decode_image_bytes(raw, load_size), i), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.ignore_errors()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def encode_labels(values: pd.Series, class_names: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
    """Class labels (names or integers) -> indices into ``class_names`` (inferred, sorted, when None)."""
    if class_names is None:
        class_names = [str(c) for c in sorted(pd.unique(values.astype(str)))]
    index = {str(c): i for i, c in enumerate(class_names)}
    unknown = sorted(set(values.astype(str)) - set(index))
    if unknown:
        raise ValueError(f"Labels not among class_names {list(class_names)}: {unknown[:10]}")
    return np.array([index[str(v)] for v in values], dtype=np.int32), list(class_names)


def catalog_dataset(catalog: pd.DataFrame, label_cols: Sequence[str] | str, task: str, batch_size: int,
                    load_size: int, training: bool = False, class_names: Sequence[str] | None = None,
                    class_weight: dict | None = None, seed: int | None = None, cache: bool | str = "auto",
                    validate: bool = True) -> tf.data.Dataset:
    """Batched ``(images, labels, sample_weight)`` from a catalog (see :mod:`zoobot_tf.data.pipeline`).

    ``task`` is ``votes`` (label_cols = vote counts), ``classification`` (one column of class names
    or indices) or ``regression`` (float columns). ``class_weight`` ({class index: weight})
    multiplies the sample weights of classification examples, for imbalanced labels.
    """
    label_cols = [label_cols] if isinstance(label_cols, str) else list(label_cols)
    if validate:
        validate_catalog(catalog, label_cols=label_cols, label_kind=task)
    if task == "classification":
        labels, _ = encode_labels(catalog[label_cols[0]], class_names)
    else:
        labels = catalog[label_cols].to_numpy(np.float32)
    paths = catalog[FILE_COL].astype(str).tolist()
    read = _read_bytes_fn(paths)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(lambda p, y: (read(p), y), num_parallel_calls=tf.data.AUTOTUNE)
    out = pipeline.finish(ds, batch_size, load_size, training, n_examples=len(catalog), seed=seed, cache=cache,
                          file_based=False)
    if class_weight and task == "classification":
        table = np.ones(max(max(class_weight) + 1, int(labels.max()) + 1), np.float32)
        for k, v in class_weight.items():
            table[int(k)] = float(v)
        lookup = tf.constant(table)
        out = out.map(lambda x, y, w: (x, y, w * tf.gather(lookup, tf.maximum(y, 0))))
    return out
