"""TFDS test of the gz1_sdss builder on its dummy_data/ (made by datasets/make_dummy_data.py)."""
from pathlib import Path

import tensorflow_datasets as tfds

from zoobot_tf.tfds.gz1_sdss import gz1_sdss_dataset_builder as builder_module

DUMMY_DATA = Path(__file__).parent / "dummy_data"  # only a checkout has it; the builder ships in the wheel



class Gz1SdssTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = builder_module.Builder
    EXAMPLE_DIR = str(DUMMY_DATA)
    SPLITS = {"train": 4, "validation": 2, "test": 2}
    SKIP_CHECKSUMS = True


if __name__ == "__main__":
    tfds.testing.test_main()
