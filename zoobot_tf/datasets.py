"""Galaxy Zoo data through TensorFlow Datasets. Importing this module registers the builders:

    import tensorflow_datasets as tfds
    import zoobot_tf.datasets            # registers gz_decals, gz2, gz_rings, gz1_sdss, galaxy10_decals, synthetic_gz
    builder = tfds.builder("gz_rings", data_dir="~/tensorflow_datasets")

The builders' code ships inside the package (:mod:`zoobot_tf.tfds`, one folder per data set in TFDS's
layout), so this works from an installed wheel. Build a data set with ``zoobot-tf tfds-build <name>``,
or with TFDS's own command: ``tfds build <name> --imports zoobot_tf.datasets``.

To train on a prepared data set, use :class:`zoobot_tf.data.sources.TFDSSource` (``--tfds <name>`` on
the command line): same preprocessing as shards and catalogs, images kept encoded until the pipeline.
"""
from __future__ import annotations

from pathlib import Path

from zoobot_tf import tfds as _builders  # noqa: F401  (registers every builder with TFDS)
from zoobot_tf.tfds import BUILDERS

__all__ = ["BUILDERS", "builder", "builder_task", "prepare", "builder_dir"]


def builder_dir(name: str) -> Path:
    """The folder of a builder's package (``zoobot_tf/tfds/<name>``)."""
    if name not in BUILDERS:
        raise KeyError(f"Unknown zoobot-tf TFDS builder {name!r}; builders: {', '.join(BUILDERS)}")
    return Path(_builders.__file__).parent / name


def builder(name: str, data_dir: str | Path | None = None, config: str | None = None):
    """The TFDS builder ``name`` (``name/config`` also accepted); any registered TFDS name works."""
    import tensorflow_datasets as tfds

    if "/" in name:
        name, config = name.split("/", 1)
    kwargs = {"data_dir": str(Path(data_dir).expanduser())} if data_dir else {}
    if config:
        kwargs["config"] = config
    return tfds.builder(name, **kwargs)


def builder_task(b):
    """The :class:`~zoobot_tf.tasks.Task` of a builder's labels: its ``TASK`` attribute, or for other TFDS
    data sets a classification over their ``label`` ClassLabel."""
    import tensorflow_datasets as tfds

    task = getattr(type(b), "TASK", None)
    if task is not None:
        return task
    feature = b.info.features.get("label") if hasattr(b.info.features, "get") else None
    if isinstance(feature, tfds.features.ClassLabel):
        from zoobot_tf.tasks import ClassificationTask

        return ClassificationTask(feature.names)
    raise ValueError(f"TFDS data set {b.name!r} has no zoobot-tf TASK and no 'label' ClassLabel feature.")


def prepare(name: str, manual_dir: str | Path | None = None, data_dir: str | Path | None = None):
    """Build a data set offline from files in ``manual_dir``; returns the builder."""
    import tensorflow_datasets as tfds

    b = builder(name, data_dir)
    config = tfds.download.DownloadConfig(manual_dir=str(Path(manual_dir).expanduser())) if manual_dir else None
    b.download_and_prepare(download_config=config)
    return b
