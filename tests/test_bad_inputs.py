"""Every bad input a user can give, through the real command line in a subprocess: the exit code, the one-line
message (the option or file named, and what is accepted), and that nothing was written or lost.

The same list is in docs/checks.md ("What zoobot-tf checks"); keep them in step.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import vote_catalog, write_images


def run_cli(args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run([sys.executable, "-m", "zoobot_tf.cli", *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=900)
    return r.returncode, r.stdout + r.stderr


def listing(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small vote catalog, its shards, a Keras model, and a folder of awkward image files."""
    root = tmp_path_factory.mktemp("bad")
    cat = vote_catalog(root / "imgs", n=40, size=32)
    cat.to_csv(root / "catalog.csv", index=False)
    from zoobot_tf.data.tfrecords import write_shards
    from zoobot_tf.models import Zoobot
    from zoobot_tf.tasks import VoteTask

    write_shards(cat, root / "shards", task=VoteTask(), galaxies_per_shard=8, progress=False)
    Zoobot(backbone="resnet_micro", image_size=32).save(root / "m.keras")
    weird = root / "weird"
    write_images(weird, 3, size=40)
    (weird / "truncated.jpg").write_bytes((weird / "g0000.jpg").read_bytes()[:200])
    (weird / "empty.png").write_bytes(b"")
    (weird / "notes.png").write_text("this is not an image")
    rgb = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(np.dstack([rgb, np.full((40, 40), 128, np.uint8)]), "RGBA").save(weird / "rgba.png")
    Image.fromarray((np.random.default_rng(1).integers(0, 65535, (40, 40))).astype(np.uint16)).save(weird / "deep.png")
    Image.fromarray(np.zeros((3000, 3000, 3), np.uint8)).save(weird / "huge.jpg")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(weird / "tiny.jpg")
    return root


def _copy_shards(data, tmp_path) -> Path:
    import shutil

    shutil.copytree(data / "shards", tmp_path / "shards")
    return tmp_path / "shards"


def _truncate_a_shard(shards: Path) -> str:
    shard = sorted(shards.glob("train-*.tfrecord"))[1]
    shard.write_bytes(shard.read_bytes()[:-100])
    return shard.name


def _corrupt_a_shard(shards: Path) -> str:
    """Same size, bytes changed in the middle of a record: only the sha256 (or the reader's CRC) notices."""
    shard = sorted(shards.glob("train-*.tfrecord"))[0]
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
    shard.write_bytes(bytes(raw))
    return shard.name


def _shapes(catalog: pd.DataFrame) -> pd.DataFrame:
    """The catalog with a class column of three classes, two of them mirror images ('cw', 'acw')."""
    return catalog.assign(shape=(["cw", "acw", "e"] * len(catalog))[:len(catalog)])


def _catalog(data, tmp_path, change) -> Path:
    cat = pd.read_csv(data / "catalog.csv", dtype={"id_str": str})
    cat = change(cat)
    path = tmp_path / "bad.csv"
    cat.to_csv(path, index=False)
    return path


TRAIN = ["train", "--output_dir", "run", "--image_size", "32", "--batch_size", "8", "--epochs", "1"]

# (id, make(data, tmp_path) -> argv, exit code, regex the output must contain)
CASES = [
    ("batch_size 0", lambda d, t: TRAIN[:-4] + ["--batch_size", "0"], 2, r"--batch_size must be >= 1"),
    ("epochs negative", lambda d, t: TRAIN + ["--epochs", "-1"], 2, r"--epochs must be >= 1"),
    ("learning_rate 0", lambda d, t: TRAIN + ["--learning_rate", "0"], 2, r"--learning_rate must be > 0"),
    ("train_fraction above 1", lambda d, t: TRAIN + ["--train_fraction", "1.5"], 2,
     r"--train_fraction must be <= 1.0 \(accepted: \(0.0, 1.0\]\)"),
    ("precision unknown", lambda d, t: TRAIN + ["--precision", "fp8"], 2, r"--precision must be one of float32"),
    ("strategy unknown", lambda d, t: TRAIN + ["--strategy", "gpu"], 2, r"--strategy must be one of one_device"),
    ("replicas 0", lambda d, t: TRAIN + ["--strategy", "mirrored", "--cpu_replicas", "0"], 2,
     r"--cpu_replicas must be >= 1"),
    ("image size 8", lambda d, t: TRAIN + ["--image_size", "8"], 2, r"--image_size must be >= 32"),
    ("channels 2", lambda d, t: TRAIN + ["--channels", "2"], 2, r"--channels must be one of 1, 3"),
    ("crop_fraction 0", lambda d, t: TRAIN + ["--crop_fraction", "0"], 2, r"--crop_fraction must be > 0"),
    ("a number that is not", lambda d, t: TRAIN + ["--patience", "ten"], 2, r"--patience must be an integer"),
    ("unknown backbone", lambda d, t: TRAIN + ["--backbone", "resnet9000"], 2, r"--backbone must be one of"),
    ("unknown schema", lambda d, t: TRAIN + ["--schema", "no-such-tree"], 2,
     r"--schema is not a built-in schema nor a readable schema file"),
    ("shards folder missing", lambda d, t: TRAIN + ["--shards", t / "nope"], 2, r"--shards .*nope: no such folder"),
    ("a folder that is not shards", lambda d, t: TRAIN + ["--shards", d / "imgs"], 2,
     r"No manifest.json in .*imgs: not a zoobot-tf shard folder"),
    ("shard truncated after writing", lambda d, t: (_truncate_a_shard(_copy_shards(d, t)),
                                                    TRAIN + ["--shards", t / "shards"])[1], 2,
     r"Shard .*train-00001-of-00004.tfrecord has \d+ bytes; the manifest recorded \d+ .*Remake"),
    # found only when read (checking every sha256 up front would read all the data): the run stops with the shard
    # named; its folder holds the started run (config, logs), nothing finished, and no input is touched
    ("shard corrupted in place", lambda d, t: (_corrupt_a_shard(_copy_shards(d, t)),
                                               TRAIN + ["--shards", t / "shards"])[1], 2,
     r"Shard .*train-00000-of-00004.tfrecord does not match its sha256 .*Remake"),
    ("catalog missing a vote column", lambda d, t: TRAIN + ["--catalog", _catalog(d, t, lambda c: c.drop(
        columns=["bar_weak"]))], 2, r"missing 1 label column\(s\): 'bar_weak'\n"),
    ("finetuning label column misspelt", lambda d, t: ["finetune", "--catalog", d / "catalog.csv", "--label_cols",
                                                       "bar_stronk", "--output_dir", t / "ft"], 2,
     r"missing 1 label column\(s\): 'bar_stronk' \(did you mean 'bar_strong'.*\)\. The catalog's columns: id_str, "),
    # without --schema, the one built-in tree whose columns the catalog has; DR5's columns are also DR8's and DESI's
    ("vote finetuning without --schema", lambda d, t: ["finetune", "--task", "votes", "--catalog", d / "catalog.csv",
                                                      "--output_dir", t / "ftv"], 2,
     r"The catalog has every answer column of gz_decals_dr5, gz_decals_dr8, gz_desi, whose decision trees differ; "
     r"give the one its votes were collected with as the schema \(--schema\)"),
    ("mirror pairs with flips", lambda d, t: ["finetune", "--catalog", _catalog(d, t, _shapes), "--label_cols",
                                              "shape", "--mirror_pairs", "cw:acw", "--output_dir", t / "ft"], 2,
     r"--mirror_pairs cw:acw needs --flip false: a flipped training image would keep the label"),
    ("mirror pair of an unknown class", lambda d, t: ["finetune", "--catalog", _catalog(d, t, _shapes), "--label_cols",
                                                      "shape", "--flip", "false", "--mirror_pairs", "cw:spiral",
                                                      "--output_dir", t / "ft"], 2,
     r"mirror pair 'cw:spiral' names classes the task does not have: \['spiral'\]; its classes: \['acw', 'cw', 'e'\]"),
    ("vote finetuning of a catalog of no tree", lambda d, t: ["finetune", "--task", "votes", "--catalog", _catalog(
        d, t, lambda c: c.drop(columns=["bar_weak"])), "--output_dir", t / "ftv"], 2,
     r"The catalog has the answer columns of no built-in decision tree; give its tree as the schema"),
    ("catalog with NaN and negative votes", lambda d, t: TRAIN + ["--catalog", _catalog(d, t, lambda c: c.assign(
        **{"bar_no": [np.nan] + [-1] + list(c["bar_no"][2:])}))], 2,
     r"'bar_no' has missing or non-finite values at row 0.*\n.*'bar_no' has negative counts at row 1"),
    ("catalog with duplicate ids", lambda d, t: TRAIN + ["--catalog", _catalog(d, t, lambda c: c.assign(
        id_str=["same"] * 2 + list(c["id_str"][2:])))], 2, r"duplicate id_str values at row 0 \(id_str='same'\)"),
    ("catalog with a missing image", lambda d, t: TRAIN + ["--catalog", _catalog(d, t, lambda c: c.assign(
        file_loc=[str(t / "gone.jpg")] + list(c["file_loc"][1:])))], 2, r"image files not found \(1\) at row 0"),
    ("garbled CSV", lambda d, t: (Path(t / "garbled.csv").write_bytes(b'id_str,file_loc\n"unterminated,\x00\xff\n'),
                                  TRAIN + ["--catalog", t / "garbled.csv"])[1], 2,
     r"Cannot read the catalog .*garbled.csv as CSV|missing"),
    ("export a file that is not a Keras archive", lambda d, t: (Path(t / "bad.keras").write_text("nope"),
                                                                ["export", "--model", t / "bad.keras"])[1], 2,
     r"bad.keras is not a Keras archive \(a .keras file is a zip file\)"),
    ("SavedModel without zoobot-tf metadata", lambda d, t: (_bare_savedmodel(t / "sm"),
                                                            ["predict", "--model", t / "sm", "--input", d / "imgs",
                                                             "--output", t / "p.csv"])[1], 2,
     r"is a SavedModel without zoobot-tf metadata"),
    ("timm weights of another architecture", lambda d, t: (_other_weights(t / "w"),
                                                           ["predict", "--model", t / "w", "--input", d / "imgs",
                                                            "--output", t / "p.csv"])[1], 2,
     r"timm weights do not fit this backbone"),
    ("model name that does not exist", lambda d, t: ["predict", "--model", "zoobot_nonesuch", "--input", d / "imgs",
                                                     "--output", t / "p.csv"], 2,
     r"No model 'zoobot_nonesuch': not a file or folder, nor a known name. Accepted: a packaged model name"),
    ("the folder export wrote into, not the export", lambda d, t: (
        (t / "sm" / "zoobot" / "1").mkdir(parents=True),
        (t / "sm" / "zoobot" / "1" / "saved_model.pb").write_bytes(b""),
        ["predict", "--model", t / "sm", "--input", d / "imgs", "--output", t / "p.csv"])[-1], 2,
     r"sm is not itself a model; it holds the export folder\(s\) .*sm/zoobot: pass one of those"),
    ("predict output format", lambda d, t: ["predict", "--input", d / "imgs", "--output", t / "p.txt"], 2,
     r"--output must end in .csv or .parquet"),
    ("predict catalog without image paths", lambda d, t: ["predict", "--input", _catalog(d, t, lambda c: c[[
        "id_str"]]), "--output", t / "p.csv"], 2, r"A catalog needs columns 'id_str' \(each galaxy's id\) and "
     r"'file_loc' \(its image file\); .*bad.csv has no 'file_loc'. Its columns: id_str"),
    ("predict output an existing folder", lambda d, t: ((t / "out.csv").mkdir(), ["predict", "--input", d / "imgs",
                                                                                  "--output", t / "out.csv"])[1], 2,
     r"--output .*out.csv is a folder; give a file name, e.g. .*out.csv/predictions.csv"),
    ("a path given without its option", lambda d, t: ["predict", d / "imgs", "--output", t / "p.csv"], 2,
     r"zoobot-tf predict: error: unrecognized arguments: .*imgs\n  .*imgs: options are given by name \(e.g. --input "
     r".*imgs\); see zoobot-tf predict --help"),
    ("misspelt option", lambda d, t: TRAIN + ["--lerning_rate", "0.1"], 2,
     r"zoobot-tf train: error: unrecognized arguments: --lerning_rate 0.1\n  --lerning_rate: did you mean "
     r"--learning_rate\?"),
    ("--verbose after the command", lambda d, t: TRAIN + ["-v"], 2,
     r"unrecognized arguments: -v\n  -v goes before the command \(zoobot-tf -v train ...\)"),
    ("predict input missing", lambda d, t: ["predict", "--input", t / "nope", "--output", t / "p.csv"], 2,
     r"--input .*nope: no such file or folder"),
    ("scaling grid that is not YAML", lambda d, t: ((t / "g.yaml").write_text("fractions: [0.1\n"),
                                                    ["scaling", "run", "--grid", t / "g.yaml"])[1], 2,
     r"Cannot read the scaling grid .*g.yaml as YAML: while parsing a flow sequence"),
    ("make-shards over existing shards", lambda d, t: (_copy_shards(d, t), [
        "make-shards", "--catalog", d / "catalog.csv", "--output_dir", t / "shards"])[1], 2,
     r"already holds shards; pass overwrite=True"),
]


def _bare_savedmodel(path: Path) -> None:
    import tensorflow as tf

    module = tf.Module()
    module.f = tf.function(lambda x: x + 1, input_signature=[tf.TensorSpec([], tf.float32)])
    tf.saved_model.save(module, str(path))


def _other_weights(folder: Path) -> None:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    save_file({"conv1.weight": np.zeros((8, 3, 7, 7), np.float32)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"architecture": "resnet18"}))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_one_line_error_and_nothing_is_written(data, tmp_path, case):
    import re

    name, make, code, pattern = case
    argv = make(data, tmp_path)
    before = listing(tmp_path)
    shared_before = listing(data)
    status, out = run_cli(argv, cwd=tmp_path)
    assert status == code, out[-3000:]
    assert re.search(pattern, out), out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("zoobot-tf ") and ": error: " in line]
    assert len(errors) == 1, out[-3000:]
    after = listing(tmp_path)
    if name == "shard corrupted in place":  # see the case's comment
        after = {k: v for k, v in after.items() if not k.startswith("run/")}
        assert not (tmp_path / "run" / "model.keras").exists() and not (tmp_path / "run" / "metrics.json").exists()
    assert after == before, "the failed command wrote or changed files"
    assert listing(data) == shared_before, "the failed command changed its inputs"


def test_a_folder_of_awkward_images_predicts_the_readable_and_lists_the_rest(data, tmp_path):
    status, out = run_cli(["predict", "--model", data / "m.keras", "--input", data / "weird", "--output",
                           tmp_path / "p.csv", "--n_samples", "1"], cwd=tmp_path)
    assert status == 0, out[-3000:]
    table = pd.read_csv(tmp_path / "p.csv", dtype={"id_str": str})
    skipped = pd.read_csv(tmp_path / "p.csv.skipped.csv", dtype={"id_str": str})
    assert set(table["id_str"]) == {"g0000", "g0001", "g0002", "rgba", "deep", "huge", "tiny"}
    assert set(skipped["id_str"]) == {"truncated", "empty", "notes"}
    reasons = dict(zip(skipped["id_str"], skipped["reason"]))  # each says why, in TensorFlow's words
    assert reasons["empty"] == "empty file", reasons
    assert reasons["truncated"].startswith("not a readable image: "), reasons
    assert reasons["notes"].startswith("not a readable image: Unknown image file format"), reasons
    assert table.drop(columns="id_str").notna().any(axis=1).all()
    assert "skipped 3 unreadable image(s)" in out


def test_embed_also_lists_the_unreadable_images(data, tmp_path):
    status, out = run_cli(["embed", "--model", data / "m.keras", "--input", data / "weird", "--output",
                           tmp_path / "e.csv", "--progress", "false"], cwd=tmp_path)
    assert status == 0, out[-3000:]
    assert len(pd.read_csv(tmp_path / "e.csv")) == 7
    skipped = pd.read_csv(tmp_path / "e.csv.skipped.csv", dtype={"id_str": str})
    assert set(skipped["id_str"]) == {"truncated", "empty", "notes"}


@pytest.mark.parametrize("command", ["predict", "embed"])
def test_a_folder_with_no_readable_image_is_an_error_that_lists_them(data, tmp_path, command):
    """Not a traceback, and no empty table (or half-made parts) left beside the list of what could not be read."""
    import shutil

    folder = tmp_path / "unreadable"
    folder.mkdir()
    for name in ("truncated.jpg", "empty.png", "notes.png"):
        shutil.copy(data / "weird" / name, folder / name)
    status, out = run_cli([command, "--model", data / "m.keras", "--input", folder, "--output", tmp_path / "o.csv",
                           "--progress", "false"], cwd=tmp_path)
    assert status == 2 and "Traceback" not in out, out[-3000:]
    assert (f"zoobot-tf {command}: error: No image could be read from {folder} (3 missing or unreadable, listed in "
            f"o.csv.skipped.csv); no table was written.") in out, out[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.csv.skipped.csv", "unreadable"]
    assert set(pd.read_csv(tmp_path / "o.csv.skipped.csv")["id_str"]) == {"truncated", "empty", "notes"}


def test_a_half_written_shard_folder_is_refused_and_a_rerun_makes_it_whole(data, tmp_path):
    """make-shards writes each shard as <name>.partial and the manifest last: a folder without a manifest is
    not used, and the same command run again writes it from the start (the galaxies are the same)."""
    out = tmp_path / "shards"
    out.mkdir()
    (out / "train-00000-of-00004.tfrecord.partial").write_bytes(b"half a shard")
    status, msg = run_cli(["train", "--shards", out, "--output_dir", tmp_path / "run", "--epochs", "1"],
                          cwd=tmp_path)
    assert status == 2 and "or its writing did not finish" in msg, msg[-2000:]
    assert not (tmp_path / "run").exists()
    status, msg = run_cli(["make-shards", "--catalog", data / "catalog.csv", "--output_dir", out,
                           "--galaxies_per_shard", "8"], cwd=tmp_path)
    assert status == 0, msg[-2000:]
    assert not list(out.glob("*.partial"))
    from zoobot_tf.data.tfrecords import read_labels, read_manifest

    reference = read_manifest(data / "shards")
    for split in reference["splits"]:
        assert read_labels(out, split)[0] == read_labels(data / "shards", split)[0]


def _all_parsers(parser, name="zoobot-tf"):
    import argparse

    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _all_parsers(sub, f"{name} {sub_name}")


def test_every_command_prints_its_help(tmp_path):
    """``--help`` of every command and subcommand formats (a "%" in an option's text once broke
    ``zoobot-tf train --help``), and the real command line prints it and exits 0."""
    from zoobot_tf.cli import build_parser

    names = []
    for name, parser in _all_parsers(build_parser()):
        text = parser.format_help()
        assert text.startswith("usage: " + name), name
        names.append(name)
    assert {"zoobot-tf train", "zoobot-tf finetune", "zoobot-tf scaling"} <= set(names)
    code, out = run_cli(["train", "--help"], tmp_path)
    assert code == 0 and "--lr_schedule" in out and "1%" in out, out[-2000:]


def test_a_true_or_false_option_given_alone_means_true(tmp_path):
    from zoobot_tf.cli import build_parser
    from zoobot_tf.config import FinetuneConfig

    (tmp_path / "c.csv").write_text("id_str,file_loc,y\n")
    args, extras = build_parser().parse_known_args(["finetune", "--catalog", str(tmp_path / "c.csv"), "--label_cols",
                                                    "y", "--balance_classes", "--flip", "false", "--export"])
    assert not extras
    assert (args.balance_classes, args.flip, args.export, args.cosine_schedule) == ("true", "false", "true", None)
    config = FinetuneConfig.from_namespace(args)
    assert (config.balance_classes, config.flip, config.export, config.cosine_schedule) == (True, False, True, None)
