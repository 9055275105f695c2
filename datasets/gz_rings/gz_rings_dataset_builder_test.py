"""TFDS test of the gz_rings builder on its dummy_data/ (made by datasets/make_dummy_data.py)."""
from pathlib import Path

import tensorflow_datasets as tfds

from zoobot_tf.tfds.gz_rings import gz_rings_dataset_builder as builder_module

DUMMY_DATA = Path(__file__).parent / "dummy_data"  # only a checkout has it; the builder ships in the wheel



class GzRingsTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = builder_module.Builder
    EXAMPLE_DIR = str(DUMMY_DATA)
    SPLITS = {'train': 5, 'test': 3}
    SKIP_CHECKSUMS = True


if __name__ == "__main__":
    tfds.testing.test_main()
