"""TFDS test of the synthetic_gz builder on its dummy_data/ (made by datasets/make_dummy_data.py)."""
import tensorflow_datasets as tfds

from zoobot_tf.datasets import register

builder_module = register(["synthetic_gz"])["synthetic_gz"]


class SyntheticGzTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = builder_module.Builder
    SPLITS = {'train': 48, 'validation': 6, 'test': 6}
    SKIP_CHECKSUMS = True
    BUILDER_CONFIG_NAMES_TO_TEST = ["tiny"]


if __name__ == "__main__":
    tfds.testing.test_main()
