"""Long jobs survive interruption: predict and embed killed at a random point continue without duplicate or
lost rows; a second job into a folder a live job uses is refused, and the live job is left untouched."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from helpers import write_images
from zoobot_tf.locks import FolderInUseError, RunLock


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    write_images(root / "imgs", 600, size=32)
    from zoobot_tf.models import Zoobot

    m = Zoobot(backbone="resnet_micro", image_size=32, dropout_rate=0.3)
    m.init_head_prior(np.linspace(2, 30, 34), kernel_scale=1.0)
    m.save(root / "m.keras")
    return root


def _cli(args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "zoobot_tf.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _kill_after_parts(proc, parts_dir, k, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if len(list(parts_dir.glob("part-*.parquet"))) >= k:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("job", ["predict", "embed"])
def test_killed_job_continues_without_duplicate_or_lost_rows(setup, tmp_path, job):
    out = tmp_path / ("p.csv" if job == "predict" else "e.parquet")
    args = [job, "--model", str(setup / "m.keras"), "--input", str(setup / "imgs"), "--output", str(out),
            "--batch_size", "16", "--chunk", "48", "--progress", "false"]
    if job == "predict":
        args += ["--n_samples", "3", "--hdf5", str(tmp_path / "s.h5")]  # MC samples: the same per galaxy
    reference = tmp_path / ("ref" + out.suffix)
    ref_args = [a if a != str(out) else str(reference) for a in args]
    ref_args = [a if a != str(tmp_path / "s.h5") else str(tmp_path / "ref.h5") for a in ref_args]
    done = _cli(ref_args)
    assert done.wait(timeout=900) == 0, done.stdout.read()[-3000:]

    proc = _cli(args)
    k = random.Random(f"{job}-kill").randint(2, 9)  # a random part, the same on every run of the suite
    assert _kill_after_parts(proc, out.with_name(out.name + ".parts"), k), "the job ended before it could be killed"
    assert not out.exists()
    proc = _cli(args)
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log[-3000:]
    assert not out.with_name(out.name + ".parts").exists()  # merged and cleaned up

    read = pd.read_csv if out.suffix == ".csv" else pd.read_parquet
    got, want = read(out), read(reference)
    got["id_str"], want["id_str"] = got["id_str"].astype(str), want["id_str"].astype(str)
    assert len(got) == 600 and got["id_str"].is_unique
    got, want = got.set_index("id_str").sort_index(), want.set_index("id_str").sort_index()
    pd.testing.assert_frame_equal(got, want[got.columns], rtol=1e-5)
    if job == "predict":
        import h5py

        with h5py.File(tmp_path / "s.h5") as f, h5py.File(tmp_path / "ref.h5") as g:
            a = dict(zip([i.decode() for i in f["id_str"][:]], f["concentrations"][:]))
            b = dict(zip([i.decode() for i in g["id_str"][:]], g["concentrations"][:]))
        assert sorted(a) == sorted(b) and len(a) == 600
        np.testing.assert_allclose(np.stack([a[i] for i in sorted(a)]), np.stack([b[i] for i in sorted(b)]),
                                   rtol=1e-5)


def test_a_rerun_with_other_settings_is_refused_and_keeps_the_parts(setup, tmp_path):
    out = tmp_path / "p.csv"
    args = ["predict", "--model", str(setup / "m.keras"), "--input", str(setup / "imgs"), "--output", str(out),
            "--chunk", "48", "--n_samples", "1", "--progress", "false"]
    proc = _cli(args)
    assert _kill_after_parts(proc, tmp_path / "p.csv.parts", 1)
    other = _cli(args[:-4] + ["--n_samples", "3", "--progress", "false"])
    log, _ = other.communicate(timeout=300)
    assert other.returncode == 2 and "other settings" in log and "n_samples" in log, log[-2000:]
    assert list((tmp_path / "p.csv.parts").glob("part-*.parquet"))


def test_second_train_into_a_live_run_is_refused_and_the_first_finishes(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--output_dir", str(out), "--synthetic_galaxies", "200", "--image_size", "32",
            "--batch_size", "16", "--epochs", "3", "--export", "false"]
    first = _cli(args)
    deadline = time.time() + 600
    while not (out / ".zoobot-tf.lock").exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.1)
    second = _cli(args)
    log2, _ = second.communicate(timeout=300)
    assert second.returncode == 2, log2[-2000:]
    assert "is in use by a training run" in log2 and f"pid {first.pid}" in log2
    log1, _ = first.communicate(timeout=900)
    assert first.returncode == 0, log1[-3000:]
    assert (out / "metrics.json").exists() and not (out / ".zoobot-tf.lock").exists()


def test_a_stale_lock_from_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / ".zoobot-tf.lock"
    import socket

    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x", "command": "y"}))
    with RunLock(tmp_path) as held:
        assert held.held and json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(FolderInUseError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    assert not lock.exists()


def test_zoobot_prediction_layout(setup, tmp_path):
    import h5py

    from zoobot_tf.predictions import predict
    from zoobot_tf.schemas import get_schema

    predict(setup / "m.keras", setup / "imgs", tmp_path / "p.csv", n_samples=3, zoobot_output=tmp_path / "z.hdf5",
            hdf5=tmp_path / "ours.h5", progress=False)
    predict(setup / "m.keras", setup / "imgs", tmp_path / "q.csv", n_samples=2, zoobot_output=tmp_path / "z.csv",
            progress=False)
    with h5py.File(tmp_path / "z.hdf5") as f, h5py.File(tmp_path / "ours.h5") as g:
        assert set(f) == {"predictions", "id_str", "label_cols"}
        assert f["predictions"].shape == (600, 34, 3)
        assert [c.decode() for c in f["label_cols"][:]] == get_schema("gz_decals_dr5").label_cols
        np.testing.assert_array_equal(f["predictions"][:], g["concentrations"][:])
    table = pd.read_csv(tmp_path / "z.csv", dtype={"id_str": str})
    assert list(table.columns) == ["id_str"] + [f"{c}_pred" for c in get_schema("gz_decals_dr5").label_cols]
    samples = table["smooth-or-featured_smooth_pred"].apply(json.loads)
    assert samples.map(len).eq(2).all() and all(1 <= v <= 101 for s in samples for v in s)


_THREADS_AFTER_PARTS = r"""
import os, sys
import numpy as np, pandas as pd
from pathlib import Path
from zoobot_tf.data.catalogs import read_catalog
from zoobot_tf.outputs import Parts, read_table

def threads():
    return len(os.listdir("/proc/self/task"))

out = Path(sys.argv[1]) / "out.parquet"
before = threads()
parts = Parts(out, {"job": "test"}, chunk=50)
for i in range(4):
    parts.add(pd.DataFrame({"id_str": [f"g{i}_{j}" for j in range(30)], "v": np.arange(30.0)}))
parts.write_streamed(out)
parts.cleanup()
rows = len(read_table(out)) + len(read_catalog(out))
after = threads()
if sys.argv[2] == "pandas":  # the control: how pandas reads Parquet
    pd.read_parquet(out)
print(rows, before, after, threads())
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc (Linux)")
def test_parquet_reads_leave_no_arrow_thread_running(tmp_path):
    """A job's last step reads its parts back; Arrow threads still alive at exit can abort the process after
    the output is written (exit 134, seen once in CI). Parts, tables and catalogs are read on the calling
    thread, so a job that has written its output has nothing of Arrow's left running. The control, pandas'
    own reader, starts Arrow's thread pools: the count can tell the two apart."""
    script = tmp_path / "threads.py"
    script.write_text(_THREADS_AFTER_PARTS)
    ours = subprocess.run([sys.executable, str(script), str(tmp_path), "ours"], capture_output=True, text=True)
    assert ours.returncode == 0, ours.stderr
    rows, before, after, _ = map(int, ours.stdout.split())
    assert rows == 240 and after == before
    control = subprocess.run([sys.executable, str(script), str(tmp_path), "pandas"], capture_output=True, text=True)
    assert control.returncode == 0, control.stderr
    _, before, after, with_pandas = map(int, control.stdout.split())
    assert after == before and with_pandas > after
