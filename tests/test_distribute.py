"""MirroredStrategy on 2 logical CPUs gives the same training step as one device."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import vote_catalog

from zoobot_tf import distribute
from zoobot_tf.data import tfrecords
from zoobot_tf.models import Zoobot
from zoobot_tf.tasks import VoteTask


def _train_one_epoch(strategy, shard_dir, init_weights, optimizer):
    with strategy.scope():
        model = Zoobot(backbone="convnext_zepto", image_size=32, augment=False, dropout_rate=0.0)
        if optimizer == "sgd":  # updates proportional to the gradient: catches any mis-scaling
            model.compile(optimizer=keras.optimizers.SGD(0.05))
        else:  # AdamW with global clipping: catches clipping before the cross-replica sum
            model.compile(clipnorm=0.3, learning_rate=1e-2)
    model.set_weights(init_weights)
    ds = tfrecords.shard_dataset(shard_dir, "train", 8, model.view.load_size, training=False)
    hist = model.fit(ds, epochs=1, verbose=0).history
    return model.get_weights(), hist


@pytest.mark.parametrize("optimizer", ["sgd", "adamw_clipped"])
def test_two_replicas_match_one_device_including_a_partial_batch(tmp_path, two_replicas, optimizer):
    df = vote_catalog(tmp_path / "img", n=12)  # one full batch of 8 and a partial batch of 4
    tfrecords.write_shards(df, tmp_path / "shards", task=VoteTask("gz_decals_dr5"), progress=False, split_col=None,
                           splits={"train": 1.0})
    init = Zoobot(backbone="convnext_zepto", image_size=32, augment=False, dropout_rate=0.0).get_weights()
    w1, h1 = _train_one_epoch(tf.distribute.OneDeviceStrategy(two_replicas[0]), tmp_path / "shards", init, optimizer)
    w2, h2 = _train_one_epoch(tf.distribute.MirroredStrategy(two_replicas), tmp_path / "shards", init, optimizer)
    assert np.isfinite(h2["loss"][0])
    np.testing.assert_allclose(h2["nll"][0], h1["nll"][0], rtol=1e-5)
    moved = max(np.abs(a - b).max() for a, b in zip(w1, init))
    assert moved > 1e-3  # the steps did something
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, atol=1e-4 * moved / 1e-2, rtol=1e-3)


def test_strategy_by_name_and_errors(two_replicas):
    assert isinstance(distribute.get_strategy("one_device"), tf.distribute.OneDeviceStrategy)
    s = distribute.get_strategy("mirrored", cpu_replicas=2)
    assert s.num_replicas_in_sync == 2
    with pytest.raises(ValueError, match="strategy"):
        distribute.get_strategy("horovod")


def test_tf_config_helpers(monkeypatch):
    assert distribute.expand_slurm_nodelist("gpu[01-03,07],login1") == ["gpu01", "gpu02", "gpu03", "gpu07", "login1"]
    cfg = distribute.tf_config_from_slurm(port=2222, environ={"SLURM_JOB_NODELIST": "n[1-2]", "SLURM_NTASKS": "2",
                                                              "SLURM_PROCID": "1"})
    assert cfg == {"cluster": {"worker": ["n1:2222", "n2:2222"]}, "task": {"type": "worker", "index": 1}}
    cfg = distribute.tf_config_from_slurm(port=2222, environ={"SLURM_JOB_NODELIST": "n1", "SLURM_NTASKS": "2",
                                                              "SLURM_PROCID": "1"})
    assert cfg["cluster"]["worker"] == ["n1:2222", "n1:2223"]
    with pytest.raises(RuntimeError, match="SLURM"):
        distribute.tf_config_from_slurm(environ={})
    monkeypatch.setenv("TF_CONFIG", json.dumps(distribute.tf_config(["a:1", "b:2"], 1)))
    assert not distribute.is_chief() and distribute.worker_index() == 1
    monkeypatch.setenv("TF_CONFIG", json.dumps(distribute.tf_config(["a:1", "b:2"], 0)))
    assert distribute.is_chief()
