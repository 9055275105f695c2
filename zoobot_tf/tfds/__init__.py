"""TFDS builders for Galaxy Zoo data, one package per data set in TFDS's layout
(``<name>/<name>_dataset_builder.py``). Importing this package registers all of them with TFDS;
``import zoobot_tf.datasets`` does the same and adds the helpers users call.

Each builder carries ``TASK``, the :class:`zoobot_tf.tasks.Task` of its labels, so zoobot-tf knows how
to train on it (``zoobot-tf train --tfds ...``, ``zoobot-tf finetune --tfds ...``).
"""
from zoobot_tf.tfds.galaxy10_decals import galaxy10_decals_dataset_builder  # noqa: F401
from zoobot_tf.tfds.gz1_sdss import gz1_sdss_dataset_builder  # noqa: F401
from zoobot_tf.tfds.gz2 import gz2_dataset_builder  # noqa: F401
from zoobot_tf.tfds.gz_decals import gz_decals_dataset_builder  # noqa: F401
from zoobot_tf.tfds.gz_rings import gz_rings_dataset_builder  # noqa: F401
from zoobot_tf.tfds.synthetic_gz import synthetic_gz_dataset_builder  # noqa: F401

BUILDERS = ("gz_decals", "gz2", "gz_rings", "gz1_sdss", "galaxy10_decals", "synthetic_gz")
