"""Deterministic splits and subsets of galaxies by a hash of their id (one definition for the whole project).

A galaxy's split depends only on its ``id_str`` (and a salt), never on row order or catalog size, so a
catalog can grow without galaxies moving between train and test, and the TFDS builders, shards and
catalogs all put the same galaxy in the same split.

Split names are ``train``, ``val`` and ``test`` everywhere in zoobot-tf; TFDS calls the middle one
``validation`` (:data:`TFDS_SPLIT_NAMES`), and :class:`zoobot_tf.data.sources.TFDSSource` maps between them.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

SPLITS = ("train", "val", "test")
TFDS_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
SALT = "zoobot-tf"


def unit_hash(ids: Sequence[str], salt: str = SALT) -> np.ndarray:
    """A number in [0, 1) per id: the first 48 bits of sha1(``salt:id``)."""
    return np.array([int(hashlib.sha1(f"{salt}:{i}".encode()).hexdigest()[:12], 16) / 16 ** 12 for i in ids],
                    dtype=np.float64)


def split_by_id(ids: Sequence[str], fractions: Sequence[float] = DEFAULT_FRACTIONS,
                names: Sequence[str] = SPLITS, salt: str = SALT) -> np.ndarray:
    """The split name of each id (an object array), by a hash of the id into ``fractions``."""
    if len(fractions) != len(names) or not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise ValueError(f"fractions must be >= 0, one per split name, and sum to 1. "
                         f"Received: fractions={list(fractions)}, names={list(names)}")
    edges = np.cumsum(fractions)
    which = np.searchsorted(edges, unit_hash(ids, salt), side="right").clip(0, len(names) - 1)
    return np.asarray(names, dtype=object)[which]


def split_of(key: str, fractions: Sequence[float] = DEFAULT_FRACTIONS, names: Sequence[str] = SPLITS) -> str:
    """The split of one id (for TFDS builders, which see one example at a time)."""
    return str(split_by_id([key], fractions, names)[0])


def subset_filter(fraction: float, seed: int = 0):
    """A TensorFlow predicate on ``id_str`` keeping a deterministic ``fraction`` of galaxies.

    Nested in ``fraction`` (a smaller fraction is a subset of a larger one with the same seed), for
    scaling studies and for carving a validation set out of a training split.
    """
    import tensorflow as tf

    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1]. Received: fraction={fraction}")
    buckets = 1_000_000
    threshold = int(round(fraction * buckets))

    def keep(id_str):
        salted = tf.strings.join([tf.strings.as_string(seed), id_str], separator=":")
        return tf.strings.to_hash_bucket_fast(salted, buckets) < threshold

    return keep


def subset_mask(ids: Sequence[str], fraction: float, seed: int = 0) -> np.ndarray:
    """``subset_filter`` evaluated on a list of ids: a boolean mask."""
    import tensorflow as tf

    if len(ids) == 0:
        return np.zeros(0, dtype=bool)
    return subset_filter(fraction, seed)(tf.constant(list(ids))).numpy()
