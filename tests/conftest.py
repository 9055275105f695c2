"""Test configuration: 2 logical CPU devices (for MirroredStrategy tests), seeds, shared data paths."""
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Split the CPU into 2 logical devices before anything initialises the runtime, so that
# MirroredStrategy tests can run 2 replicas on this one machine. Single-device code uses /cpu:0.
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
except RuntimeError:  # already initialised (e.g. by a plugin); the 2-replica tests then skip
    pass

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ZOOBOT_TF_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_data_dir(name: str) -> Path:
    """Path of a ../shared/data set, or skip the test with the reason when it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data set {name!r} not found at {path} (set ZOOBOT_TF_SHARED_DATA to its parent)")
    return path


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    yield


@pytest.fixture(scope="session")
def two_replicas():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs 2 logical CPU devices (TensorFlow was initialised before conftest ran)")
    return [d.name for d in devices[:2]]
