"""make-shards, predict and embed on Apache Beam (issue 17): the same outputs as the single-process jobs.

The commands run as a user types them (``zoobot-tf ... --runner direct --workers 2``: Beam's DirectRunner
with two worker processes), on inputs with a corrupt image and a missing file; a failed unit retried by the
engine, and a job rerun after a failure, leave no row twice.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import vote_catalog

pytest.importorskip("apache_beam", reason="the [beam] extra (apache-beam) is not installed")

from zoobot_tf.config import ConfigError, EmbedConfig, PredictConfig, ShardConfig  # noqa: E402
from zoobot_tf.data import tfrecords  # noqa: E402
from zoobot_tf.engines import beam as zbeam  # noqa: E402
from zoobot_tf.tasks import VoteTask  # noqa: E402


def cli(*args, cwd):
    r = subprocess.run([sys.executable, "-m", "zoobot_tf.cli", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert r.returncode == 0, f"{args}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """60 galaxies with votes, one of them a corrupt file; and a prediction catalog with a missing file too."""
    root = tmp_path_factory.mktemp("beam")
    catalog = vote_catalog(root / "images", n=60, size=48)
    Path(catalog.loc[4, "file_loc"]).write_bytes(b"not an image at all")
    catalog.to_csv(root / "votes.csv", index=False)
    plain = catalog[["id_str", "file_loc"]].copy()
    plain.loc[9, "file_loc"] = str(root / "images" / "gone.jpg")
    plain.to_csv(root / "plain.csv", index=False)
    return root


def test_make_shards_on_beam_writes_the_same_shards(inputs, tmp_path):
    catalog = pd.read_csv(inputs / "votes.csv")
    single = tfrecords.write_shards(catalog, tmp_path / "single", task=VoteTask("gz_decals_dr5"),
                                    galaxies_per_shard=8, progress=False)
    out = cli("make-shards", "--catalog", str(inputs / "votes.csv"), "--output_dir", "beam", "--galaxies_per_shard",
              "8", "--runner", "direct", "--workers", "2", cwd=tmp_path)
    assert "skipped 1 unreadable" in out
    beam = tfrecords.read_manifest(tmp_path / "beam")
    assert beam["engine"]["runner"] == "direct" and beam["engine"]["processes"] >= 1
    assert beam["skipped_ids"] == single["skipped_ids"] == ["g0004"]
    for split, entry in single["splits"].items():
        # the same galaxies in the same files, byte for byte
        assert [s["sha256"] for s in beam["splits"][split]["shards"]] == [s["sha256"] for s in entry["shards"]]
        assert tfrecords.read_labels(tmp_path / "beam", split)[0] == tfrecords.read_labels(tmp_path / "single",
                                                                                          split)[0]
    tfrecords.verify_shards(tmp_path / "beam")
    assert not (tmp_path / "beam" / ".entries").exists() and not list((tmp_path / "beam").glob("*.partial"))


def test_predict_and_embed_on_beam_match_the_single_process_tables(inputs, tmp_path):
    # MC dropout and test-time views: a galaxy's draws follow its id, so its samples are the same on any worker
    common = ["--input", str(inputs / "plain.csv"), "--n_samples", "5", "--tta", "true", "--progress", "false"]
    cli("predict", *common, "--output", "one.csv", cwd=tmp_path)
    cli("predict", *common, "--output", "beam.parquet", "--runner", "direct", "--workers", "2", "--chunk", "16",
        cwd=tmp_path)
    one, beam = pd.read_csv(tmp_path / "one.csv"), pd.read_parquet(tmp_path / "beam.parquet")
    assert beam["id_str"].tolist() == one["id_str"].tolist()  # input order, no row twice
    assert len(beam) == 58 and not beam["id_str"].duplicated().any()
    num = [c for c in one.columns if c != "id_str"]
    np.testing.assert_allclose(beam[num].to_numpy(float), one[num].to_numpy(float), atol=1e-5)
    skipped = pd.read_csv(tmp_path / "beam.parquet.skipped.csv")
    assert sorted(skipped["id_str"]) == ["g0004", "g0009"]
    assert not (tmp_path / "beam.parquet.parts").exists()

    cli("embed", "--input", str(inputs / "plain.csv"), "--output", "e_one.parquet", "--progress", "false",
        cwd=tmp_path)
    cli("embed", "--input", str(inputs / "plain.csv"), "--output", "e_beam.parquet", "--runner", "direct",
        "--chunk", "16", "--anomaly_k", "5", cwd=tmp_path)
    e_one, e_beam = pd.read_parquet(tmp_path / "e_one.parquet"), pd.read_parquet(tmp_path / "e_beam.parquet")
    e_beam = e_beam.set_index("id_str").loc[e_one["id_str"]]
    feats = [c for c in e_one.columns if c.startswith("feat_")]
    np.testing.assert_allclose(e_beam[feats].to_numpy(), e_one[feats].to_numpy(), atol=1e-5)
    assert e_beam["anomaly_score"].notna().all()


def test_embed_on_beam_reads_shard_folders(inputs, tmp_path):
    tfrecords.write_shards(pd.read_csv(inputs / "votes.csv"), tmp_path / "shards", task=VoteTask("gz_decals_dr5"),
                           galaxies_per_shard=10, progress=False)
    table = zbeam.run_inference("embed", "zoobot_synthetic", tmp_path / "shards", tmp_path / "e.parquet",
                                workers=2, chunk=16)
    assert len(table) == 59 and not table["id_str"].duplicated().any()
    ids = [i for s in ("train", "val", "test") for i in tfrecords.read_labels(tmp_path / "shards", s)[0]]
    assert sorted(table["id_str"]) == sorted(ids)


def test_a_unit_the_engine_retries_writes_no_row_twice(inputs, tmp_path, monkeypatch):
    """Beam's bundle-based DirectRunner retries a failed bundle (as Dataflow, Flink and Spark do); a unit that
    failed after writing its part is done again and its part replaced."""
    original, failed = zbeam._InferenceFn.process, []

    def fail_once_after_writing(self, unit):
        yield from original(self, unit)
        if unit[1] == 1 and not failed:
            failed.append(unit[1])
            raise RuntimeError("worker lost (injected)")

    monkeypatch.setattr(zbeam._InferenceFn, "process", fail_once_after_writing)
    skipped = zbeam.run_inference("predict", "zoobot_synthetic", inputs / "plain.csv", tmp_path / "p.csv",
                                  beam_options="--runner=BundleBasedDirectRunner", chunk=16,
                                  options={"n_samples": 1, "tta": False, "interval": 0.9})
    assert failed == [1]
    table = pd.read_csv(tmp_path / "p.csv")
    assert len(table) == 58 and not table["id_str"].duplicated().any()
    assert sorted(skipped["id_str"]) == ["g0004", "g0009"]


def test_a_unit_with_no_readable_image_is_an_empty_part_and_none_at_all_is_an_error(inputs, tmp_path):
    """A unit (chunk) whose images are all unreadable writes an empty part (it once crashed the worker while
    making that empty table); when no unit read anything, the job says so and leaves only the list of them."""
    from zoobot_tf.outputs import NoImageReadError

    plain = pd.read_csv(inputs / "plain.csv")
    bad = plain.iloc[[4, 9]]  # the corrupt image and the missing file
    pd.concat([bad, plain.iloc[[0, 1]]]).to_csv(tmp_path / "some.csv", index=False)
    options = {"n_samples": 1, "tta": False, "interval": 0.9}
    direct = "--runner=BundleBasedDirectRunner"
    skipped = zbeam.run_inference("predict", "zoobot_synthetic", tmp_path / "some.csv", tmp_path / "p.csv",
                                  beam_options=direct, chunk=2, options=options)
    assert pd.read_csv(tmp_path / "p.csv")["id_str"].tolist() == ["g0000", "g0001"]
    assert sorted(skipped["id_str"]) == ["g0004", "g0009"]

    bad.to_csv(tmp_path / "none.csv", index=False)
    for job in ("predict", "embed"):
        out = tmp_path / f"none_{job}.csv"
        with pytest.raises(NoImageReadError, match=r"No image could be read from .*none.csv \(2 missing or "
                                                   r"unreadable, listed in none_\w+.csv.skipped.csv\)"):
            zbeam.run_inference(job, "zoobot_synthetic", tmp_path / "none.csv", out, beam_options=direct, chunk=1,
                                options=options if job == "predict" else {})
        assert not out.exists() and not out.with_name(out.name + ".parts").exists()
        assert sorted(pd.read_csv(out.with_name(out.name + ".skipped.csv"))["id_str"]) == ["g0004", "g0009"]


def test_a_rerun_after_a_failed_job_keeps_the_written_units(inputs, tmp_path, monkeypatch):
    original, ran = zbeam._InferenceFn.process, []

    def lose_unit_2(self, unit):
        if unit[1] == 2:
            raise RuntimeError("worker lost (injected)")
        yield from original(self, unit)

    def record(self, unit):
        ran.append(unit[1])
        yield from original(self, unit)

    args = dict(beam_options="--runner=BundleBasedDirectRunner", chunk=16,
                options={"n_samples": 1, "tta": False, "interval": 0.9})
    monkeypatch.setattr(zbeam._InferenceFn, "process", lose_unit_2)
    with pytest.raises(Exception, match="worker lost"):
        zbeam.run_inference("predict", "zoobot_synthetic", inputs / "plain.csv", tmp_path / "p.csv", **args)
    written = {int(p.stem.split("-")[1]) for p in (tmp_path / "p.csv.parts").glob("part-*.parquet")}
    assert 2 not in written and not (tmp_path / "p.csv").exists()
    monkeypatch.setattr(zbeam._InferenceFn, "process", record)
    zbeam.run_inference("predict", "zoobot_synthetic", inputs / "plain.csv", tmp_path / "p.csv", **args)
    assert sorted(ran) == sorted({0, 1, 2, 3} - written)  # only the units without a part ran again
    table = pd.read_csv(tmp_path / "p.csv")
    assert len(table) == 58 and not table["id_str"].duplicated().any()
    assert table["id_str"].tolist() == [f"g{i:04d}" for i in range(60) if i not in (4, 9)]


def test_engine_options_are_checked_at_the_edge(tmp_path):
    (tmp_path / "c.csv").write_text("id_str,file_loc\n")
    with pytest.raises(ConfigError, match="--beam_options needs --runner"):
        ShardConfig(catalog=str(tmp_path / "c.csv"), output_dir="x", beam_options="--project=p")
    with pytest.raises(ConfigError, match="--runner must be one of"):
        EmbedConfig(input=str(tmp_path / "c.csv"), output="e.parquet", runner="yarn")
    with pytest.raises(ConfigError, match="tfds"):
        EmbedConfig(input="tfds:gz_rings", output="e.parquet", runner="direct")
    with pytest.raises(ConfigError, match="--hdf5"):
        PredictConfig(input=str(tmp_path / "c.csv"), output="p.csv", runner="direct", hdf5="s.h5")
    with pytest.raises(zbeam.EngineError, match="path or name"):
        zbeam.run_inference("embed", object(), tmp_path / "c.csv", tmp_path / "e.parquet")
    assert json.loads(json.dumps(zbeam.RUNNERS))["dataflow"] == "DataflowRunner"


@pytest.mark.parametrize("name,config", [("gz2", "kaggle"), ("gz_decals", "dr5")])
def test_tfds_builders_build_on_beam_with_the_same_examples(name, config, tmp_path):
    import tensorflow_datasets as tfds

    import zoobot_tf.datasets  # noqa: F401  (registers the builders)
    from conftest import REPO

    manual = REPO / "datasets" / name / "dummy_data"
    for where, extra in (("one", []), ("beam", ["--beam_options", "runner=DirectRunner,direct_num_workers=2,"
                                                                  "direct_running_mode=multi_processing"])):
        cli("tfds-build", name, "--config", config, "--manual_dir", str(manual), "--data_dir", str(tmp_path / where),
            *extra, cwd=tmp_path)

    def examples(where, split):
        ds = tfds.load(f"{name}/{config}", split=split, data_dir=str(tmp_path / where))
        return {ex["id_str"].decode(): (ex["image"], ex["votes"]) for ex in tfds.as_numpy(ds)}

    for split in ("train", "validation", "test"):
        one, beam = examples("one", split), examples("beam", split)
        assert sorted(one) == sorted(beam) and one
        for key in one:
            np.testing.assert_array_equal(one[key][0], beam[key][0])
            np.testing.assert_array_equal(one[key][1], beam[key][1])
