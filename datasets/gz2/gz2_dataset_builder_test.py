"""TFDS test of the gz2 builder on its dummy_data/ (made by datasets/make_dummy_data.py)."""
import tensorflow_datasets as tfds

from zoobot_tf.datasets import register

builder_module = register(["gz2"])["gz2"]


class Gz2KaggleTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = builder_module.Builder
    SPLITS = {"train": 4, "validation": 2, "test": 2}
    SKIP_CHECKSUMS = True
    BUILDER_CONFIG_NAMES_TO_TEST = ["kaggle"]


class Gz2Hart16Test(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = builder_module.Builder
    SPLITS = {'train': 4, 'validation': 2, 'test': 2}
    SKIP_CHECKSUMS = True
    BUILDER_CONFIG_NAMES_TO_TEST = ["hart16"]


if __name__ == "__main__":
    tfds.testing.test_main()
