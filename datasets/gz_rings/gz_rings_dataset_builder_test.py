"""TFDS test of the gz_rings builder on its dummy_data/ (made by datasets/make_dummy_data.py)."""
import tensorflow_datasets as tfds

from zoobot_tf.datasets import register

builder_module = register(["gz_rings"])["gz_rings"]


class GzRingsTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = builder_module.Builder
    SPLITS = {'train': 5, 'test': 3}
    SKIP_CHECKSUMS = True


if __name__ == "__main__":
    tfds.testing.test_main()
