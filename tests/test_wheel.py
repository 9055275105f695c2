"""The installed wheel, outside the checkout, runs the README's main job exactly as a new user types it
(issue 14), and it beats the no-image baseline.

Marked 'wheel': CI runs it with the wheel installed in a venv in an empty folder (.ci/run), next to every
README and docs block (tests/test_docs.py), which run the other first paths from the same wheel (predict,
embed, export, finetune, the TFDS builders after ``import zoobot_tf.datasets``). The commands use the
zoobot-tf and python first on PATH.
"""
import json
import subprocess

import pytest

MAIN_JOB = "zoobot-tf train --output_dir runs/demo"  # the README quick start's second command


def sh(cmd, cwd):
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", cmd], cwd=cwd, capture_output=True, text=True,
                       timeout=3600)
    assert r.returncode == 0, f"{cmd}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-5000:]}"
    return r.stdout


@pytest.mark.wheel
def test_the_main_job_runs_from_the_installed_wheel_and_beats_the_baseline(tmp_path):
    where = sh("python -c 'import zoobot_tf, sys; print(zoobot_tf.__file__); print(sys.prefix)'", tmp_path)
    assert "site-packages" in where.splitlines()[0], where
    assert sh("zoobot-tf --version", tmp_path).startswith("zoobot-tf ")
    out = sh(MAIN_JOB, tmp_path)
    assert "Test loss" in out, out[-3000:]
    metrics = {r["question"]: r for r in json.loads((tmp_path / "runs/demo/metrics.json").read_text())["metrics"]}
    total, first = metrics["total"], metrics["smooth-or-featured"]
    assert total["loss"] < 0.97 * total["baseline_loss"], total
    assert first["accuracy"] > first["baseline_accuracy"] + 0.2, first
    assert (tmp_path / "runs/demo/export/zoobot/1/saved_model.pb").exists()
