"""TFDS builders: offline builds, clear errors, the shared pipeline, and real data when present."""
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, shared_data_dir

from zoobot_tf import datasets as zdatasets
from zoobot_tf.data.sources import TFDSSource


def test_import_registers_every_builder_in_a_fresh_process(tmp_path):
    """Exactly as the README writes it, in a new interpreter: the import alone registers the builders."""
    code = ("import zoobot_tf.datasets; import tensorflow_datasets as tfds\n"
            "for name in zoobot_tf.datasets.BUILDERS:\n    print(name, tfds.builder_cls(name).__module__)\n"
            "print(tfds.builder('gz_rings', data_dir=%r).name)" % str(tmp_path))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "gz_rings"
    assert {line.split()[0] for line in lines[:-1]} == set(zdatasets.BUILDERS)
    assert all(line.split()[1].startswith("zoobot_tf.tfds.") for line in lines[:-1])  # the package's own code


def test_registration_does_not_shadow_huggingface_datasets(tmp_path):
    assert not (REPO / "datasets" / "__init__.py").exists()  # a folder of builder data, not a package
    # A real `datasets` package (as Hugging Face's) wins even when the repository root comes first on
    # sys.path: a folder without __init__.py is only a namespace-package fallback (PEP 420).
    fake = tmp_path / "site" / "datasets"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("WHO = 'huggingface'\n")
    code = "import sys, datasets; import zoobot_tf.datasets as z; print(datasets.WHO)"
    env = {**__import__("os").environ, "PYTHONPATH": f"{REPO}:{tmp_path / 'site'}"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.stdout.strip().endswith("huggingface"), result.stderr[-2000:]


def test_wrong_manual_files_give_a_clear_error_and_leave_nothing(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "labels.csv").write_text("iauname,file,ring\nJ1,images/J1.jpg,1\n")
    with pytest.raises(Exception) as e:
        zdatasets.prepare("gz_rings", tmp_path / "manual", tmp_path / "data")
    assert "images" in str(e.value) and "labels.csv" in str(e.value)
    assert not list((tmp_path / "data").rglob("*.tfrecord*")) and not list((tmp_path / "data").rglob("dataset_info.json"))


def test_tfds_build_command_builds_offline(tmp_path):
    # TFDS's build command (the `tfds` entry point itself needs apache_beam in tfds 4.9.10)
    cmd = [sys.executable, "-m", "zoobot_tf.cli", "tfds-build", "gz_rings",
           "--manual_dir", str(REPO / "datasets" / "gz_rings" / "dummy_data"), "--data_dir", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(tmp_path.rglob("gz_rings-train.tfrecord*"))


def test_tfds_pipeline_matches_the_shard_pipeline(tmp_path):
    b = zdatasets.prepare("synthetic_gz/tiny", data_dir=tmp_path)
    source = TFDSSource("synthetic_gz/tiny", data_dir=tmp_path)
    ds = source.dataset("train", 8, 32)
    x, y, w = next(iter(ds))
    assert x.shape == (8, 32, 32, 3) and y.shape == (8, 34) and x.dtype == tf.float32
    assert float(tf.reduce_max(x)) > 1.0  # pixels stay in [0, 255]; the model divides once
    # the same galaxy through both paths: TFDS stores its JPEG, the pipeline decodes it like a shard
    raw = next(iter(b.as_dataset(split="train", decoders={"image": __import__("tensorflow_datasets").decode
                                                           .SkipDecoding()}).take(1)))
    from zoobot_tf.data.images import decode_image_bytes

    np.testing.assert_array_equal(decode_image_bytes(raw["image"], 32).numpy(), x.numpy()[0])
    votes = source.labels("train")
    assert votes.shape[1] == 34 and (votes.sum(1) > 0).all()
    assert source.sizes == {"train": 48, "val": 6, "test": 6} and not source.carved


def test_a_tfds_set_without_validation_split_gets_one_from_train_never_from_test(tmp_path):
    zdatasets.prepare("gz_rings", REPO / "datasets" / "gz_rings" / "dummy_data", tmp_path)
    source = TFDSSource("gz_rings", data_dir=tmp_path, val_fraction=0.4)
    assert source.carved and source.sizes["test"] == 3
    assert source.sizes["train"] + source.sizes["val"] == 5 and source.sizes["val"] > 0
    ids = {s: set(source.images(s)[0]["id_str"]) for s in ("train", "val", "test")}
    assert not ids["val"] & ids["train"] and not ids["val"] & ids["test"] and not ids["train"] & ids["test"]
    x, y, w = next(iter(source.dataset("val", 4, 32)))
    assert int((w.numpy() > 0).sum()) == source.sizes["val"]


def test_train_accepts_a_tfds_data_set(tmp_path):
    from zoobot_tf.training import train

    zdatasets.prepare("synthetic_gz/tiny", data_dir=tmp_path / "tfds")
    result = train(output_dir=str(tmp_path / "run"), tfds="synthetic_gz/tiny", tfds_data_dir=str(tmp_path / "tfds"),
                   image_size=32, epochs=1, batch_size=8, progress=False, export=False)
    assert np.isfinite(result.metrics.iloc[-1]["loss"])


@pytest.mark.realdata
def test_gz_rings_from_shared_data(tmp_path):
    manual = shared_data_dir("gz_decals_rings")
    b = zdatasets.prepare("gz_rings", manual, tmp_path)
    assert b.info.splits["train"].num_examples == 274 and b.info.splits["test"].num_examples == 196
    labels = TFDSSource("gz_rings", data_dir=tmp_path).labels("train")
    assert set(np.unique(labels)) == {0, 1}


@pytest.mark.realdata
@pytest.mark.slow
def test_gz1_sdss_from_shared_data(tmp_path):
    manual = shared_data_dir("gz1_sdss")
    b = zdatasets.prepare("gz1_sdss", manual, tmp_path)
    total = sum(s.num_examples for s in b.info.splits.values())
    assert total == 4014
    labels = TFDSSource("gz1_sdss", data_dir=tmp_path).labels("train")
    assert np.bincount(labels).argmax() == 0  # ellipticals dominate
