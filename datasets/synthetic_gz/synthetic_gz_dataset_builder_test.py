"""TFDS test of the synthetic_gz builder on its dummy_data/ (made by datasets/make_dummy_data.py)."""
from pathlib import Path

import tensorflow_datasets as tfds

from zoobot_tf.tfds.synthetic_gz import synthetic_gz_dataset_builder as builder_module

DUMMY_DATA = Path(__file__).parent / "dummy_data"  # only a checkout has it; the builder ships in the wheel



class SyntheticGzTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = builder_module.Builder
    EXAMPLE_DIR = str(DUMMY_DATA)
    SPLITS = {'train': 48, 'validation': 6, 'test': 6}
    SKIP_CHECKSUMS = True
    BUILDER_CONFIG_NAMES_TO_TEST = ["tiny"]


if __name__ == "__main__":
    tfds.testing.test_main()
