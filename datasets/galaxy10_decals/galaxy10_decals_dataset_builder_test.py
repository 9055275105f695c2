"""TFDS test of the galaxy10_decals builder on its dummy_data/ (made by datasets/make_dummy_data.py)."""
import tensorflow_datasets as tfds

from zoobot_tf.datasets import register

builder_module = register(["galaxy10_decals"])["galaxy10_decals"]


class Galaxy10DecalsTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = builder_module.Builder
    SPLITS = {'train': 22, 'validation': 2, 'test': 2}
    SKIP_CHECKSUMS = True


if __name__ == "__main__":
    tfds.testing.test_main()
