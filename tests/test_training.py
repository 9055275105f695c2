"""End-to-end training runs: the run folder, resume after a kill, and the CLI."""
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoobot_tf import callbacks
from zoobot_tf.config import TrainConfig
from zoobot_tf.tasks import VoteTask
from zoobot_tf.training import train

SMALL = dict(synthetic_galaxies=80, image_size=32, batch_size=16, progress=False)


def _event_tags(logdir):
    tags = set()
    for root, _, files in os.walk(logdir):
        for f in files:
            if f.startswith("events"):
                for e in tf.compat.v1.train.summary_iterator(os.path.join(root, f)):
                    tags.update(v.tag for v in e.summary.value)
    return tags


def test_train_writes_a_complete_run_folder(tmp_path):
    out = tmp_path / "run"
    result = train(TrainConfig(output_dir=str(out), epochs=2, **SMALL))
    for name in ["config.json", "history.csv", "checkpoints/best.weights.h5", "model.keras", "metrics.json",
                 "export/zoobot/1/saved_model.pb", "shards/manifest.json", "synthetic/catalog.csv"]:
        assert (out / name).exists(), name
    assert [r["epoch"] for r in callbacks.read_history(out / "history.csv")] == [0, 1]
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"][-1]["question"] == "total" and np.isfinite(metrics["metrics"][-1]["loss"])
    tags = _event_tags(out / "logs")
    assert {"epoch_loss", "epoch_nll", "epoch_learning_rate", "epoch_loss_smooth-or-featured",
            "galaxies/validation", "galaxies/worst_predicted"} <= tags, tags
    again = keras.models.load_model(out / "model.keras")
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(again.predict(x, verbose=0), result.model.predict(x, verbose=0), rtol=1e-6)
    # the credible intervals' calibration, fitted on the validation split, is saved with the model and export
    scale = metrics["concentration_scale"]
    assert len(scale) == result.model.task.schema.n_questions and all(0.05 <= v <= 20 for v in scale)
    assert again.task.concentration_scale == pytest.approx(scale)
    meta = json.loads((out / "export/zoobot/1/assets.extra/zoobot_metadata.json").read_text())
    assert meta["task_config"]["concentration_scale"] == pytest.approx(scale)
    # a finished run is never silently retrained, and a different config is refused
    with pytest.raises(FileExistsError, match="finished run"):
        train(TrainConfig(output_dir=str(out), epochs=2, **SMALL))
    with pytest.raises(ValueError, match="different configuration"):
        train(TrainConfig(output_dir=str(out), epochs=2, **{**SMALL, "image_size": 48}))


def test_history_log_keeps_one_row_per_epoch_across_restarts(tmp_path):
    path = tmp_path / "history.csv"
    log = callbacks.HistoryLog(path)
    for e in range(3):
        log.on_epoch_begin(e)
        log.on_epoch_end(e, {"loss": float(e), "val_nll": 10.0 - e})
    # restart from a backup taken after epoch 1: epoch 2 is re-run
    log = callbacks.HistoryLog(path)
    log.on_epoch_begin(2)
    log.on_epoch_end(2, {"loss": 2.5, "val_nll": 7.5})
    rows = callbacks.read_history(path)
    assert [r["epoch"] for r in rows] == [0, 1, 2] and rows[2]["loss"] == 2.5
    assert callbacks.best_so_far(rows, "val_nll") == (7.5, 2, 0)
    assert all(0 <= r["seconds"] < 5 for r in rows)  # each epoch's wall time


def test_history_log_times_each_epoch(tmp_path, monkeypatch):
    clock = iter([100.0, 102.5, 110.0, 111.25])
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    log = callbacks.HistoryLog(tmp_path / "history.csv")
    for e in range(2):
        log.on_epoch_begin(e)
        log.on_epoch_end(e, {"loss": 1.0})
    assert [r["seconds"] for r in callbacks.read_history(tmp_path / "history.csv")] == [2.5, 1.25]
    # resuming a run whose history was written without the column: its rows are kept, the new ones timed
    (tmp_path / "old.csv").write_text("epoch,loss\n0,3.0\n")
    clock = iter([200.0, 204.0])
    log = callbacks.HistoryLog(tmp_path / "old.csv")
    log.on_epoch_begin(1)
    log.on_epoch_end(1, {"loss": 2.0})
    assert callbacks.read_history(tmp_path / "old.csv") == [{"epoch": 0, "loss": 3.0},
                                                           {"epoch": 1, "loss": 2.0, "seconds": 4.0}]



def test_resumed_early_stopping_counts_only_the_epochs_before_the_one_it_resumes_at(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,val_nll\n0,5.0\n1,3.0\n2,4.0\n3,4.5\n")  # epoch 3 is re-run: its backup was lost
    stopping = callbacks.ResumableEarlyStopping(path, monitor="val_nll", mode="min", patience=3)
    stopping.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    stopping.on_train_begin()
    stopping.on_epoch_begin(3)
    assert (stopping.best, stopping.best_epoch, stopping.wait) == (3.0, 1, 1)


def _rates_under_plateau(callback, values, first_epoch=0, history=None):
    """Feed validation losses to a plateau callback (on a one-weight model) as fit would; returns the rate
    each epoch trained at, and writes HistoryLog rows to ``history`` when given."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(callback.rate_at_start), loss="mse")
    callback.set_model(model)
    log = callbacks.HistoryLog(history) if history else None
    callback.on_train_begin()
    rates = []
    for epoch, value in enumerate(values, start=first_epoch):
        callback.on_epoch_begin(epoch)
        rates.append(float(model.optimizer.learning_rate.numpy()))
        logs = {"val_loss": value}
        callback.on_epoch_end(epoch, logs)  # adds the epoch's rate to the logs, then maybe lowers it
        if log:
            log.on_epoch_begin(epoch)
            log.on_epoch_end(epoch, logs)
    return rates


def test_plateau_rate_resumes_where_an_uninterrupted_run_would_be(tmp_path):
    # validation losses with stalls long enough to lower the rate (patience 2), cut in the middle of a stall
    values = [5.0, 4.0, 4.1, 4.05, 3.0, 3.2, 3.1, 3.3, 3.2, 2.0, 2.1, 2.2, 2.3, 2.4]
    kw = dict(monitor="val_loss", mode="min", factor=0.3, patience=2, min_lr=1e-4, verbose=0)

    def stock():
        cb = keras.callbacks.ReduceLROnPlateau(**kw)
        cb.rate_at_start = 1e-2
        return cb

    reference = _rates_under_plateau(stock(), values)  # Keras's own callback, never interrupted
    assert len(set(reference)) >= 3, "the sequence should lower the rate at least twice"
    for cut in (7, 11):  # resumed from the backup of epoch cut - 1, in a stall (its patience count is 1);
        # killed after epoch cut had written its history row but not its backup: that row must not count
        history = tmp_path / f"history_{cut}.csv"
        before = _rates_under_plateau(stock(), values[:cut + 1], history=history)[:cut]
        resumed = callbacks.ResumableReduceLROnPlateau(history, **kw)
        resumed.rate_at_start = reference[cut]  # the rate comes back with the optimizer's backup
        after = _rates_under_plateau(resumed, values[cut:], first_epoch=cut)
        # after[0]: the replay lowered only a stand-in's rate, not the restored one
        np.testing.assert_allclose(before + after, reference, rtol=1e-6)

def _run_cli(args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "zoobot_tf.cli", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_killed_run_resumes_without_lost_or_repeated_epochs(tmp_path):
    out = tmp_path / "run"
    args = ["--output_dir", str(out), "--epochs", "5", "--synthetic_galaxies", "200", "--stored_size",
            "32", "--image_size", "32", "--batch_size", "16", "--export", "false", "--progress", "false",
            "--patience", "100"]
    proc = _run_cli(args)
    deadline = time.time() + 300
    while time.time() < deadline:
        if len(callbacks.read_history(out / "history.csv")) >= 2 and (out / "backup").exists():
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(callbacks.read_history(out / "history.csv"))
    assert 2 <= done_before < 5 and not (out / "model.keras").exists()
    proc = _run_cli(args)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    rows = callbacks.read_history(out / "history.csv")
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3, 4]
    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    steps = -(-manifest["splits"]["train"]["n_galaxies"] // 16)
    # the resumed optimizer continued counting: the same step count as an uninterrupted run, epoch by epoch
    assert [int(r["step"]) for r in rows] == [steps * (e + 1) for e in range(5)]
    keras.models.load_model(out / "model.keras")


def test_cli_reports_user_errors_without_a_traceback(tmp_path):
    from zoobot_tf.cli import main

    assert main(["train", "--shards", str(tmp_path / "nope")]) == 2
    assert main(["make-shards", "--catalog", str(tmp_path / "missing.csv"), "--output_dir", str(tmp_path)]) == 2
    assert main(["train", "--output_dir", str(tmp_path / "r"), "--schema", "no-such-tree"]) == 2


def test_bfloat16_efficientnet_training_on_cpu_warns_that_it_is_slower(caplog):
    from zoobot_tf.config import TrainConfig
    from zoobot_tf.training import build_model

    with caplog.at_level("WARNING", logger="zoobot_tf.training"):
        model = build_model(TrainConfig(backbone="efficientnet_b0", image_size=32, precision="mixed_bfloat16"),
                            VoteTask())
    assert model.precision == "mixed_bfloat16"
    assert any("2x slower than float32" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="zoobot_tf.training"):
        build_model(TrainConfig(backbone="convnext_zepto", image_size=32, precision="mixed_bfloat16"), VoteTask())
    assert not any("slower" in r.getMessage() for r in caplog.records)


def test_cosine_schedule_warms_up_then_decays_to_one_percent_over_the_step_budget():
    from zoobot_tf.config import TrainConfig
    from zoobot_tf.training import learning_rate

    assert learning_rate(TrainConfig(learning_rate=2e-3), 1000) == 2e-3  # constant: a float, as before
    lr = learning_rate(TrainConfig(learning_rate=2e-3, lr_schedule="cosine", warmup_steps=100), 1000)
    at = lambda step: float(lr(step))  # noqa: E731
    assert at(0) == 0.0 and abs(at(50) - 1e-3) < 1e-9 and abs(at(100) - 2e-3) < 1e-9
    # half way through the decay: the mean of the peak and the floor; at the budget: the floor, and it stays
    np.testing.assert_allclose(at(100 + 450), (2e-3 + 2e-5) / 2, rtol=1e-5)
    np.testing.assert_allclose([at(1000), at(5000)], [2e-5, 2e-5], rtol=1e-5)


def test_a_run_that_died_after_training_is_evaluated_not_retrained_and_one_that_left_no_backup_restarts(
        tmp_path, monkeypatch):
    from zoobot_tf import training

    config = TrainConfig(output_dir=str(tmp_path / "run"), epochs=2, export=False, galaxy_cards=False, **SMALL)
    real_evaluate = training.evaluate_model

    def die(*args, **kwargs):
        raise RuntimeError("killed after fit")

    monkeypatch.setattr(training, "evaluate_model", die)
    with pytest.raises(RuntimeError, match="killed after fit"):
        train(config)
    run = tmp_path / "run"
    # Keras removed the backup at the end of fit; the history and the best weights are what training left
    assert not (run / "backup").exists() and not (run / "metrics.json").exists()
    best = (run / "checkpoints" / "best.weights.h5").read_bytes()
    history = (run / "history.csv").read_text()

    monkeypatch.setattr(training, "evaluate_model", real_evaluate)
    monkeypatch.setattr(training, "fit", lambda *a, **k: pytest.fail("a trained run was trained again"))
    result = train(config)
    assert (run / "history.csv").read_text() == history and (run / "metrics.json").exists()
    reference = training.build_model(config, VoteTask(config.schema))
    reference.load_weights(str(run / "checkpoints" / "best.weights.h5"))
    assert (run / "checkpoints" / "best.weights.h5").read_bytes() == best
    for a, b in zip(result.model.weights, reference.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    # an attempt that had not ended and left no backup (killed between its history row and its backup)
    # does not steer a new one: without the fix, its history made the new run stop at once (patience)
    # and its best value kept the new run's weights from being checkpointed
    again = tmp_path / "again"
    monkeypatch.undo()
    config = config.replace(output_dir=str(again), epochs=3, patience=2)
    again.mkdir()
    (again / "checkpoints").mkdir()
    (again / "history.csv").write_text("epoch,val_nll\n0,1.0\n1,2.0\n")  # best 1.0, one epoch without gain
    (again / "checkpoints" / "best.weights.h5").write_bytes(best)
    train(config)
    rows = callbacks.read_history(again / "history.csv")
    assert rows[0]["val_nll"] > 1.0 and (again / "checkpoints" / "best.weights.h5").read_bytes() != best
    # nothing lost: the earlier attempt's files are set aside, not deleted
    (aside,) = again.glob("stale-*")
    assert (aside / "history.csv").read_text() == "epoch,val_nll\n0,1.0\n1,2.0\n"
    assert (aside / "best.weights.h5").read_bytes() == best


def test_every_worker_decides_how_a_run_starts_from_the_chiefs_files(tmp_path, monkeypatch):
    """A worker's start (resume / trained / fresh) follows the chief's history and best checkpoint, never its
    own scratch folder, and never moves the chief's files: workers that decided differently would wait for
    each other forever."""
    from zoobot_tf.training import RunPaths

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "history.csv").write_text("epoch,val_nll\n0,2.0\n1,1.0\n")
    (out / "checkpoints" / "best.weights.h5").write_bytes(b"best")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    worker = RunPaths(out, chief=False)
    assert worker.root == out / ".workers" / "worker1" and not worker.root.exists()  # its scratch is gone
    ended = TrainConfig(epochs=2, patience=5)  # both epochs ran: training had ended
    assert worker.state(ended, "val_nll") == "trained" == RunPaths(out, chief=True).state(ended, "val_nll")

    # an attempt that had not ended and left no backup: both start afresh; the worker clears only its scratch
    going = TrainConfig(epochs=5, patience=5)
    (worker.root / "checkpoints").mkdir(parents=True)
    (worker.root / "history.csv").write_text("epoch,val_nll\n0,9.0\n")
    (worker.root / "checkpoints" / "best.weights.h5").write_bytes(b"old")
    assert worker.state(going, "val_nll") == "fresh"
    assert not worker.history.exists() and not worker.best.exists()
    assert (out / "history.csv").exists() and (out / "checkpoints" / "best.weights.h5").read_bytes() == b"best"
    assert RunPaths(out, chief=True).state(going, "val_nll") == "fresh"
    (aside,) = out.glob("stale-*")  # the chief sets its own files aside, as a single process does
    assert (aside / "best.weights.h5").read_bytes() == b"best"

    (out / "backup").mkdir()  # the shared backup: every process resumes
    assert worker.state(going, "val_nll") == "resume" == RunPaths(out, chief=True).state(going, "val_nll")


def test_plateau_schedule_lowers_the_rate_when_validation_stalls_and_records_it(tmp_path):
    # a rate too small to improve the validation loss by Keras's min_delta: every plateau check fires
    result = train(TrainConfig(output_dir=str(tmp_path / "run"), epochs=4, patience=2, learning_rate=1e-8,
                               lr_schedule="plateau", export=False, galaxy_cards=False, **SMALL))
    rates = [h["learning_rate"] for h in result.history]  # the rate each epoch trained at
    # epoch 0 sets the best; after epoch 1 (no gain for patience // 2 = 1 epoch) x0.3; early stopping ends
    # the run after epoch 2 (no gain for 2 epochs)
    np.testing.assert_allclose(rates, [1e-8, 1e-8, 3e-9], rtol=1e-5)
