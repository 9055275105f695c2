"""Inference functions traced once per model.

``predict``, ``embed`` and evaluation run the same model over many batches and, in a session, over many
calls; a new ``tf.function`` per call traces the model again each time (seconds for EfficientNetB0, a
tenth of a 500-galaxy folder's time). Each function here is made on first use and kept while its model
lives (weakly: the function holds a weak reference, so it never keeps its model alive), and is called
under :func:`zoobot_tf.ops.startup.inference_calls` (its ops in order on the calling thread: the same rate,
a lower memory peak).
"""
from __future__ import annotations

import weakref

import tensorflow as tf

from zoobot_tf.ops.startup import inference_calls, under

_MADE = weakref.WeakKeyDictionary()  # model -> {key: its function}


def traced_once(model, key, make):
    """``make(ref)`` for ``model`` and ``key`` (``ref()`` is the model), made on first use, then reused;
    every call runs under :func:`~zoobot_tf.ops.startup.inference_calls`."""
    made = _MADE.setdefault(model, {})
    if key not in made:
        made[key] = under(make(weakref.ref(model)), inference_calls)
    return made[key]


def inference_fn(model):
    """``model(images, training=False)`` as a tf.function run in this process only (no cross-worker
    collectives, unlike Keras' predict function under a multi-worker strategy)."""
    return traced_once(model, "inference", lambda ref: tf.function(lambda x: ref()(x, training=False),
                                                                   reduce_retracing=True))


def embedding_fn(model):
    """images [0, 255] -> the pooled embedding (``model.embedding_model()``), as a tf.function."""
    return traced_once(model, "embedding", lambda ref: tf.function(
        lambda x: ref().embedding_model()(x, training=False), reduce_retracing=True))
