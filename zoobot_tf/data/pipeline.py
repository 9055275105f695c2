"""The common tail of every input pipeline: decode, resize, cache, shuffle, batch, pad, prefetch.

Batches are ``(images, labels, sample_weight)``:

* images: float32 (B, load_size, load_size, 3), pixels in [0, 255];
* labels: vote counts (B, n_answers) float32, class indices (B,) int32 or targets (B, n) float32;
* sample_weight: (B,) float32.

The last, partial batch is padded to the full batch size by repeating its own rows with zeroed
labels and zero weight, and its real rows get weight ``B / n_real``. Keras' mean-over-batch then
equals the mean over real galaxies, on one device or split across replicas, and no replica ever
receives an empty batch (which crashes TF 2.21's oneDNN convolutions under MirroredStrategy;
REFERENCE section 6). With the Dirichlet-multinomial loss a zero-vote row adds exactly zero loss
and gradient anyway.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from zoobot_tf.data.images import decode_image_bytes

AUTOTUNE = tf.data.AUTOTUNE
CACHE_LIMIT_BYTES = 2 * 1024 ** 3  # cache decoded images in memory below this size


def pad_batch(images, labels, batch_size: int):
    """Pad a batch to ``batch_size`` rows; return (images, labels, weights)."""
    n = tf.shape(images)[0]
    idx = tf.range(batch_size) % n
    real = tf.range(batch_size) < n
    images = tf.gather(images, idx)
    gathered = tf.gather(labels, idx)
    mask = tf.reshape(real, [-1] + [1] * (len(labels.shape) - 1))
    labels = tf.where(mask, gathered, tf.zeros_like(gathered))
    weight = tf.cast(batch_size, tf.float32) / tf.cast(n, tf.float32)
    weights = tf.where(real, weight, 0.0)
    images = tf.ensure_shape(images, [batch_size] + images.shape[1:].as_list())
    return images, labels, weights


def decode_element(load_size: int):
    def fn(encoded, labels):
        return decode_image_bytes(encoded, load_size), labels

    return fn


def finish(ds: tf.data.Dataset, batch_size: int, load_size: int, training: bool, n_examples: int | None = None,
           shuffle_buffer: int = 2048, seed: int | None = None, deterministic: bool | None = None,
           repeat: bool = False, cache: bool | str = "auto", pad: bool = True,
           file_based: bool = True, known_cardinality: bool = True) -> tf.data.Dataset:
    """``ds`` yields (encoded bytes, labels) one galaxy at a time -> batched training tuples.

    ``file_based``: the source reads files (TFRecords), so multi-worker training shards it by file;
    otherwise (in-memory catalogs) by data.
    """
    ds = ds.map(decode_element(load_size), num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if cache == "auto":
        cache = n_examples is not None and n_examples * load_size * load_size * 3 * 4 < CACHE_LIMIT_BYTES
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if n_examples is not None and not repeat and known_cardinality:
        # lets Keras show progress and avoid "ran out of data" warnings; not valid when sharded by workers
        ds = ds.apply(tf.data.experimental.assert_cardinality(-(-n_examples // batch_size)))
    if pad:
        ds = ds.map(lambda x, y: pad_batch(x, y, batch_size), num_parallel_calls=AUTOTUNE)
    else:
        ds = ds.map(lambda x, y: (x, y, tf.ones([tf.shape(x)[0]], tf.float32)))
    options = pipeline_options()
    if deterministic is not None:
        options.deterministic = deterministic
    policy = tf.data.experimental.AutoShardPolicy
    options.experimental_distribute.auto_shard_policy = policy.FILE if file_based else policy.DATA
    return ds.with_options(options).prefetch(AUTOTUNE)


def pipeline_options() -> tf.data.Options:
    """The options every pipeline here starts from. On the fast path (:mod:`zoobot_tf.ops`) tf.data's
    autotuning is off: deleting an iterator waits for the autotuning thread's next wake-up, whose period
    doubles from 10 ms (measured: an epoch of 5.9 s of model work took 10.24 s), and Keras deletes one at
    every epoch and validation pass, ``predict`` at its end (benchmarks/pipeline_autotune.py). ``AUTOTUNE``
    parallelism then means one call per core."""
    from zoobot_tf.ops import fast

    options = tf.data.Options()
    if fast():
        options.autotune.enabled = False
    return options


def weight_by_label(ds: tf.data.Dataset, table: np.ndarray | None) -> tf.data.Dataset:
    """Multiply each example's sample weight by ``table[label]`` (class weights); unchanged for None."""
    if table is None:
        return ds
    lookup = tf.constant(np.asarray(table, np.float32))
    return ds.map(lambda x, y, w: (x, y, w * tf.gather(lookup, tf.maximum(tf.cast(y, tf.int32), 0))))


def decoded_batches(ds: tf.data.Dataset, batch_size: int, load_size: int) -> tf.data.Dataset:
    """(bytes, id) -> batches of (images [0, 255], ids) for predictions; images that fail to decode are
    dropped (callers list them by comparing the ids that came out with the ones that went in)."""
    ds = ds.map(lambda raw, i: (decode_image_bytes(raw, load_size), i), num_parallel_calls=AUTOTUNE)
    ds = ds.ignore_errors()
    return ds.batch(batch_size).with_options(pipeline_options()).prefetch(AUTOTUNE)
