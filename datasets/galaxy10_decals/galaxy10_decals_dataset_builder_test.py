"""TFDS test of the galaxy10_decals builder on its dummy_data/ (made by datasets/make_dummy_data.py)."""
from pathlib import Path

import tensorflow_datasets as tfds

from zoobot_tf.tfds.galaxy10_decals import (
    galaxy10_decals_dataset_builder as builder_module,
)

DUMMY_DATA = Path(__file__).parent / "dummy_data"  # only a checkout has it; the builder ships in the wheel



class Galaxy10DecalsTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = builder_module.Builder
    EXAMPLE_DIR = str(DUMMY_DATA)
    SPLITS = {'train': 22, 'validation': 2, 'test': 2}
    SKIP_CHECKSUMS = True


if __name__ == "__main__":
    tfds.testing.test_main()
