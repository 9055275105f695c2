"""zoobot-tf: Galaxy Zoo foundation models for TensorFlow and Keras 3.

The public API, in the order of a user's path (catalog -> shards -> model -> train -> finetune ->
predict/embed -> export -> serve)::

    from zoobot_tf import (get_schema, VoteTask, ClassificationTask, make_synthetic_catalog, write_shards,
                           open_source, Zoobot, define_model, train, load_model, Finetuner, finetune, predict,
                           calibrate, embed, export_model, load_pretrained)
"""
import os as _os

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines, oneDNN notices) hides real output.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.2.0"

_LAZY = {
    "get_schema": "zoobot_tf.schemas",
    "Schema": "zoobot_tf.schemas",
    "list_schemas": "zoobot_tf.schemas",
    "VoteTask": "zoobot_tf.tasks",
    "ClassificationTask": "zoobot_tf.tasks",
    "RegressionTask": "zoobot_tf.tasks",
    "make_synthetic_catalog": "zoobot_tf.data.synthetic",
    "write_shards": "zoobot_tf.data.tfrecords",
    "validate_catalog": "zoobot_tf.data.catalogs",
    "open_source": "zoobot_tf.data.sources",
    "Zoobot": "zoobot_tf.models.zoobot",
    "define_model": "zoobot_tf.models.zoobot",
    "list_backbones": "zoobot_tf.models.backbones",
    "load_model": "zoobot_tf.models.resolve",
    "packaged_models": "zoobot_tf.models.resolve",
    "TrainConfig": "zoobot_tf.config",
    "FinetuneConfig": "zoobot_tf.config",
    "train": "zoobot_tf.training",
    "Finetuner": "zoobot_tf.finetuning",
    "finetune": "zoobot_tf.finetuning",
    "predict": "zoobot_tf.predictions",
    "calibrate": "zoobot_tf.evaluate",
    "embed": "zoobot_tf.representations",
    "export_model": "zoobot_tf.export",
    "load_pretrained": "zoobot_tf.pretrained",
}

__all__ = sorted(_LAZY)


def __getattr__(name):  # imported on first use: `import zoobot_tf` stays fast
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoobot_tf' has no attribute {name!r}")
