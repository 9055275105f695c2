"""Two worker processes on 127.0.0.1 train one model with MultiWorkerMirroredStrategy."""
import os
import re
import signal
import sys
import time

import pytest
from helpers import vote_catalog

from zoobot_tf import callbacks
from zoobot_tf.data import tfrecords
from zoobot_tf.distribute import launch_local_workers
from zoobot_tf.tasks import VoteTask

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("mw")
    df = vote_catalog(root / "img", n=96)
    tfrecords.write_shards(df, root / "shards", task=VoteTask("gz_decals_dr5"), progress=False, galaxies_per_shard=16)
    return root / "shards"


def _args(shards, out, epochs):
    return [sys.executable, "-m", "zoobot_tf.cli", "train", "--strategy", "multi_worker_mirrored",
            "--shards", str(shards), "--output_dir", str(out), "--epochs", str(epochs), "--batch_size", "4",
            "--image_size", "32", "--backbone", "convnext_zepto", "--export", "false", "--progress", "false",
            "--patience", "100"]


def _fingerprints(log_dir, n=2):
    found = []
    for i in range(n):
        text = (log_dir / f"worker{i}.log").read_text()
        m = re.search(r"final weights fingerprint (\w+)", text)
        assert m, text[-3000:]
        found.append(m.group(1))
    return found


@pytest.fixture(scope="module")
def finished(shards, tmp_path_factory):
    """A 2-epoch run of two workers, and the folder of their logs."""
    logs = tmp_path_factory.mktemp("finished")
    procs = launch_local_workers(_args(shards, logs / "run", 2), 2, log_dir=str(logs))
    codes = [p.wait(timeout=600) for p in procs]
    assert codes == [0, 0], (logs / "worker1.log").read_text()[-3000:]
    return logs / "run", logs


def test_two_workers_train_and_agree_on_the_weights(finished):
    out, logs = finished
    a, b = _fingerprints(logs)
    assert a == b
    assert [r["epoch"] for r in callbacks.read_history(out / "history.csv")] == [0, 1]
    assert (out / "model.keras").exists() and (out / "metrics.json").exists()
    assert not (out / ".workers").exists()  # only the chief keeps files


def test_killed_worker_restart_resumes_from_the_backup(shards, tmp_path):
    out = tmp_path / "run"
    epochs = 5
    procs = launch_local_workers(_args(shards, out, epochs), 2, log_dir=str(tmp_path))
    deadline = time.time() + 300
    while len(callbacks.read_history(out / "history.csv")) < 2 and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # into the next epoch
    os.kill(procs[1].pid, signal.SIGKILL)
    # the surviving worker notices (coordination service) and exits instead of hanging
    assert procs[0].wait(timeout=120) != 0
    done = len(callbacks.read_history(out / "history.csv"))
    assert 2 <= done < epochs
    procs = launch_local_workers(_args(shards, out, epochs), 2, log_dir=str(tmp_path))
    codes = [p.wait(timeout=600) for p in procs]
    assert codes == [0, 0], (tmp_path / "worker0.log").read_text()[-3000:]
    rows = callbacks.read_history(out / "history.csv")
    assert [r["epoch"] for r in rows] == list(range(epochs))
    manifest = tfrecords.read_manifest(shards)
    steps = manifest["splits"]["train"]["n_galaxies"] // 8
    assert [int(r["step"]) for r in rows] == [steps * (e + 1) for e in range(epochs)]
    a, b = _fingerprints(tmp_path)
    assert a == b


def test_a_run_whose_chief_died_before_saving_is_finished_by_both_workers(shards, finished, tmp_path):
    """The chief died after training, before saving (no model.keras); the other worker had finished and deleted
    its scratch folder. Restarted, both evaluate the best weights: before, that worker found no history of its
    own, trained again, and waited for a chief that never joined."""
    out = finished[0]  # (a config.json pins the output folder: the run is restarted where it ran; it ends whole)
    assert not (out / ".workers").exists()
    history = (out / "history.csv").read_bytes()
    (out / "model.keras").unlink()
    (out / "metrics.json").unlink()

    procs = launch_local_workers(_args(shards, out, 2), 2, log_dir=str(tmp_path))
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert codes == [0, 0], (tmp_path / "worker1.log").read_text()[-3000:]
    assert (out / "history.csv").read_bytes() == history  # evaluated, not trained again
    assert (out / "model.keras").exists() and (out / "metrics.json").exists()
    for i in range(2):
        assert "evaluating its best weights" in (tmp_path / f"worker{i}.log").read_text()
