"""TFDS test of the gz1_sdss builder on its dummy_data/ (made by datasets/make_dummy_data.py)."""
import tensorflow_datasets as tfds

from zoobot_tf.datasets import register

builder_module = register(["gz1_sdss"])["gz1_sdss"]


class Gz1SdssTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = builder_module.Builder
    SPLITS = {"train": 4, "validation": 2, "test": 2}
    SKIP_CHECKSUMS = True


if __name__ == "__main__":
    tfds.testing.test_main()
