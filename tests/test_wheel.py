"""The installed wheel, outside the checkout, does what a new user does first (issue 14): train on the embedded
default, predict and embed with the packaged model, finetune from it, register the TFDS builders, build one.

Marked 'wheel': CI runs it with the wheel installed in a venv in an empty folder (.ci/run); the commands
use the zoobot-tf and python first on PATH.
"""
import json
import subprocess

import pandas as pd
import pytest


def sh(cmd, cwd):
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", cmd], cwd=cwd, capture_output=True, text=True,
                       timeout=3600)
    assert r.returncode == 0, f"{cmd}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-5000:]}"
    return r.stdout


@pytest.mark.wheel
def test_the_first_user_paths_run_from_the_installed_wheel(tmp_path):
    where = sh("python -c 'import zoobot_tf, sys; print(zoobot_tf.__file__); print(sys.prefix)'", tmp_path)
    assert "site-packages" in where.splitlines()[0], where
    assert sh("zoobot-tf --version", tmp_path).startswith("zoobot-tf ")
    sh("zoobot-tf train --output_dir runs/demo --epochs 3", tmp_path)
    metrics = json.loads((tmp_path / "runs/demo/metrics.json").read_text())
    assert metrics["metrics"][-1]["question"] == "total" and (tmp_path / "runs/demo/export/zoobot/1").exists()
    sh("zoobot-tf make-synthetic --n_galaxies 30 --output_dir imgs --progress false", tmp_path)
    sh("zoobot-tf predict --input imgs/images --output p.csv && zoobot-tf embed --input imgs/images --output e.parquet",
       tmp_path)
    assert len(pd.read_csv(tmp_path / "p.csv")) == 30 and len(pd.read_parquet(tmp_path / "e.parquet")) == 30
    catalog = pd.read_csv(tmp_path / "imgs/catalog.csv")
    catalog.assign(kind=catalog["true_kind"])[["id_str", "file_loc", "kind"]].to_csv(tmp_path / "labels.csv",
                                                                                     index=False)
    sh("zoobot-tf finetune --catalog labels.csv --label_cols kind --output_dir runs/ft --epochs 2", tmp_path)
    assert (tmp_path / "runs/ft/model.keras").exists()
    out = sh("python -c \"import zoobot_tf.datasets; import tensorflow_datasets as tfds; "
             "print(tfds.builder('gz_rings').name)\"", tmp_path)
    assert out.strip().endswith("gz_rings")
    sh("zoobot-tf tfds-build synthetic_gz --config tiny --data_dir tfds", tmp_path)
    assert list((tmp_path / "tfds" / "synthetic_gz").rglob("*.tfrecord*"))
