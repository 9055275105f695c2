"""Finetuning: encoder weights carried over, freezing, layer-wise learning rates, heads, class weights."""
import json
import re
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf
import pandas as pd
import pytest

from helpers import vote_catalog
from zoobot_tf.finetuning import Finetuner, finetune
from zoobot_tf.models import Zoobot
from zoobot_tf.models.resolve import load_model
from zoobot_tf.tasks import ClassificationTask


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    path = tmp_path_factory.mktemp("pre") / "pre.keras"
    m = Zoobot(backbone="resnet_micro", image_size=32)
    m.save(path)
    return path


def two_class_catalog(folder, classes: dict, n=48, seed=0, sd=20.0, prefix="b"):
    """Uniform 32-px images of two classes alternating, each ``{name: (mean RGB, extra columns)}``, with
    Gaussian pixel noise ``sd``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    rows = []
    for i in range(n):
        kind = list(classes)[i % 2]
        mean, extra = classes[kind]
        img = np.clip(rng.normal(mean, sd, (32, 32, 3)), 0, 255).astype(np.uint8)
        path = folder / f"{prefix}{i}.png"
        Image.fromarray(img).save(path)
        rows.append({"id_str": f"{prefix}{i}", "file_loc": str(path), "kind": kind, **extra})
    return pd.DataFrame(rows)


def bright_faint_catalog(folder, n=48, seed=0):
    """An easy task: the class is the image brightness."""
    return two_class_catalog(folder, {"faint": (40, {"brightness": 40 / 255}),
                                      "bright": (200, {"brightness": 200 / 255})}, n=n, seed=seed)


def _stage_weights(model, stage):
    return [w.copy() for layer in model.stage_groups()[stage] for w in layer.get_weights()]


def test_encoder_weights_are_carried_over_and_frozen(pretrained, tmp_path):
    pre = load_model(pretrained)
    tuner = Finetuner(pretrained, task="classification", class_names=["faint", "bright"], n_blocks=0,
                      learning_rate=1e-2)
    for a, b in zip(tuner.model.encoder.get_weights(), pre.encoder.get_weights()):
        np.testing.assert_array_equal(a, b)
    cat = bright_faint_catalog(tmp_path / "img")
    before = tuner.model.encoder.get_weights()
    head_before = tuner.model.get_layer("head_dense").get_weights()[0].copy()
    tuner.model.fit(tuner.dataset(cat, "kind", training=True), epochs=2, verbose=0)
    for a, b in zip(tuner.model.encoder.get_weights(), before):  # BN statistics included
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(tuner.model.get_layer("head_dense").get_weights()[0], head_before)


def red_blue_catalog(folder, n=48, seed=0):
    """Red and blue galaxies of the same mean brightness (90): only colour tells them apart."""
    return two_class_catalog(folder, {"blue": ((60, 60, 150), {}), "red": ((150, 60, 60), {})}, n=n, seed=seed,
                             sd=4.0, prefix="c")


def test_a_greyscale_encoder_finetunes_on_colour_images(pretrained, tmp_path):
    """channels=3 spreads the greyscale stem over the three channels: a colour image gives exactly the
    greyscale encoder's features of its channel mean to start with, and training can then use colour."""
    pre = load_model(pretrained)
    assert pre.channels == 1
    tuner = Finetuner(pretrained, task="classification", class_names=["blue", "red"], channels=3, n_blocks=-1,
                      learning_rate=1e-2, augment=False)
    assert tuner.model.channels == 3 and tuner.model.encoder.inputs[0].shape[-1] == 3
    rgb = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(tuner.model.encoder(rgb).numpy(), pre.encoder(rgb.mean(-1, keepdims=True)).numpy(),
                               rtol=1e-4, atol=1e-5)
    scores = {}
    for channels in (1, 3):
        keras.utils.set_random_seed(0)
        tuner = Finetuner(pretrained, task="classification", class_names=["blue", "red"], channels=channels,
                          n_blocks=-1, learning_rate=1e-2, augment=False)
        tuner.model.fit(tuner.dataset(red_blue_catalog(tmp_path / "train"), "kind", training=True, seed=0),
                        epochs=6, verbose=0)
        unseen = red_blue_catalog(tmp_path / "unseen", n=32, seed=1)
        probs = tuner.model.predict(tuner.dataset(unseen, "kind"), verbose=0)
        scores[channels] = float(np.mean(np.argmax(probs, -1) == (unseen["kind"] == "red").to_numpy()))
    assert scores[3] >= 0.9 and scores[1] <= 0.75, scores  # greyscale cannot see the difference


def test_stem_adaptation_rejects_other_channel_counts():
    from zoobot_tf.models.stem import adapt_input_channels

    k = np.arange(2 * 2 * 1 * 4, dtype="float32").reshape(2, 2, 1, 4)
    np.testing.assert_allclose(adapt_input_channels(adapt_input_channels(k, 3), 1), k)  # split, then summed
    with pytest.raises(ValueError, match="2 input channels"):
        adapt_input_channels(np.zeros((2, 2, 2, 4)), 3)


def test_unfreezing_the_last_blocks_with_layerwise_lr(pretrained, tmp_path):
    tuner = Finetuner(pretrained, task="classification", class_names=["faint", "bright"], n_blocks=2,
                      lr_decay=0.5, learning_rate=1e-2)
    groups = tuner.model.stage_groups()
    mult = tuner.model.optimizer.lr_multipliers
    top = [v.path for v in groups[-1][0].trainable_weights]
    second = [v.path for v in groups[-2][0].trainable_weights]
    # as Zoobot: the top trained stage learns at the full rate (decay^0), the next at lr x decay
    assert all(mult[p] == 1.0 for p in top) and all(mult[p] == 0.5 for p in second)
    assert not any(layer.trainable for g in groups[:-2] for layer in g)
    # BatchNorm stays in inference mode even in unfrozen stages
    assert not any(l.trainable for g in groups for l in g if isinstance(l, keras.layers.BatchNormalization))
    cat = bright_faint_catalog(tmp_path / "img")
    low_before, top_before = _stage_weights(tuner.model, 0), _stage_weights(tuner.model, len(groups) - 2)
    tuner.model.fit(tuner.dataset(cat, "kind", training=True), epochs=1, verbose=0)
    for a, b in zip(_stage_weights(tuner.model, 0), low_before):
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, b) for a, b in zip(_stage_weights(tuner.model, len(groups) - 2), top_before))


def test_layerwise_multiplier_scales_the_step():
    """With AdamW, a variable's first step is -lr * multiplier * sign(grad) (to first order)."""
    from zoobot_tf.ops.optimizer import ZoobotAdamW

    a, b = keras.Variable(np.zeros(3, np.float32), name="a"), keras.Variable(np.zeros(3, np.float32), name="b")
    opt = ZoobotAdamW(learning_rate=0.1, weight_decay=0.0, lr_multipliers={b.path: 0.25})
    opt.apply([np.ones(3, np.float32), np.ones(3, np.float32)], [a, b])
    np.testing.assert_allclose(a.numpy(), -0.1, rtol=1e-3)
    np.testing.assert_allclose(b.numpy(), -0.025, rtol=1e-3)


def test_finetune_learns_an_easy_task_and_regression_and_votes_heads(pretrained, tmp_path):
    cat = bright_faint_catalog(tmp_path / "img", n=120)
    res = finetune(pretrained, cat, "kind", epochs=15, n_blocks=-1, learning_rate=1e-3, verbose=0, batch_size=16,
                   augment=False, train_batchnorm=True, logdir=tmp_path / "logs")
    assert min(res.history["loss"][1:]) < res.history["loss"][0]
    grids = tf.io.gfile.glob(str(tmp_path / "logs" / "validation" / "events*"))
    tags = {v.tag for f in grids for e in tf.compat.v1.train.summary_iterator(f) for v in e.summary.value}
    assert {"galaxies/validation", "galaxies/worst_predicted"} <= tags, tags
    assert res.test_metrics["accuracy"] >= 0.8
    # a fresh process loads the compiled, finetuned model (its archive names zoobot-tf's loss and metrics)
    res.model.save(tmp_path / "ft.keras")
    path = str(tmp_path / "ft.keras")
    code = f"from zoobot_tf.models.resolve import load_model; print(load_model({path!r}).task.name)"
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0 and fresh.stdout.strip().endswith("classification"), fresh.stderr[-2000:]
    reg = Finetuner(pretrained, task="regression", target_names=["brightness"], n_blocks=-1, learning_rate=3e-3)
    h = reg.model.fit(reg.dataset(cat, ["brightness"], training=True), epochs=4, verbose=0).history
    assert h["loss"][-1] < h["loss"][0]
    votes = Finetuner(pretrained, task="votes", schema="gz_rings")
    assert votes.model.output_shape == (None, 2) and votes.model.schema.name == "gz_rings"


def test_random_encoder_baseline_and_errors(tmp_path):
    tuner = Finetuner("resnet_micro", task="classification", n_classes=3, image_size=32)
    assert tuner.model.n_classes == 3
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope.keras")


def test_a_class_without_training_galaxies_is_named_in_a_warning(pretrained, tmp_path, caplog):
    task = ClassificationTask(["a", "b", "c"])
    one, two = task.label_warnings(np.array([0, 2, 2, -1])), task.label_warnings(np.array([0, 0, 0]))
    assert one[0].startswith("1 of 3 classes has no galaxy in the train split ('b'):"), one
    assert two[0].startswith("2 of 3 classes have no galaxy in the train split ('b', 'c'):"), two
    assert task.label_warnings(np.array([0, 1, 2])) == []
    cat = bright_faint_catalog(tmp_path / "img", n=24)
    cat["split"] = ["train"] * 16 + ["val"] * 4 + ["test"] * 4
    cat.loc[cat["split"] != "train", "kind"] = "medium"  # a class only the val and test splits have
    with caplog.at_level("WARNING", logger="zoobot_tf.finetuning"):
        finetune(pretrained, cat, "kind", epochs=1, verbose=0, batch_size=8)
    warned = [r.getMessage() for r in caplog.records if "no galaxy in the train split" in r.getMessage()]
    assert warned == ["1 of 3 classes has no galaxy in the train split ('medium'): the new head cannot learn "
                      "them, and their galaxies in the val and test splits will be predicted as other classes."]


def test_class_weights_balance_and_reach_the_loss(tmp_path):
    labels = np.array([0] * 30 + [1] * 10)
    w = ClassificationTask(["a", "b"]).balanced_class_weight(labels)
    assert w[1] == 3 * w[0] and np.isclose(np.mean([w[l] for l in labels]), 1.0)
    cat = bright_faint_catalog(tmp_path / "img", n=8)
    tuner = Finetuner("resnet_micro", task="classification", class_names=["faint", "bright"], image_size=32)
    ds = tuner.dataset(cat, "kind", class_weight={0: 1.0, 1: 5.0})
    _, y, sw = next(iter(ds))  # 8 galaxies padded to a batch of 32: real rows weigh 32/8 = 4 x class weight
    y, sw = y.numpy(), sw.numpy()
    np.testing.assert_allclose(sw[:8], 4.0 * np.where(y[:8] == 1, 5.0, 1.0))
    np.testing.assert_array_equal(sw[8:], 0.0)


def test_finetuning_a_new_decision_tree_calibrates_its_intervals(pretrained, tmp_path, capsys):
    """`zoobot-tf finetune --task votes` reads the catalog with the only built-in tree whose columns it has (no
    --schema), ends with the intervals fitted on the val votes (saved and reported) and prints the test metrics
    per question."""
    from zoobot_tf.cli import main
    from zoobot_tf.evaluate import calibrate

    df = vote_catalog(tmp_path / "img", n=60, schema="gz_rings", size=32)
    rng = np.random.default_rng(1)  # Beta(50, 50) x 30 volunteers: near what the fresh head predicts
    df["ring_yes"] = rng.binomial(30, rng.beta(50, 50, len(df)))
    df["ring_no"] = 30 - df["ring_yes"]
    df.to_csv(tmp_path / "votes.csv", index=False)
    out = tmp_path / "ft"
    assert main(["finetune", "--pretrained", str(pretrained), "--catalog", str(tmp_path / "votes.csv"),
                 "--task", "votes", "--label_cols", "ring_yes,ring_no", "--epochs", "2",
                 "--batch_size", "8", "--output_dir", str(out), "--progress", "false"]) == 0
    printed = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["task:", "VoteTask('gz_rings':"] in [words[:2] for words in printed], printed
    header = next(i for i, words in enumerate(printed) if words[:1] == ["question"])
    assert "loss" in printed[header] and printed[header + 1][0] == "ring", printed
    scale = json.loads((out / "metrics.json").read_text())["concentration_scale"]
    model = load_model(out / "model.keras")
    assert model.schema.name == "gz_rings" and len(scale) == 1 and model.task.concentration_scale == pytest.approx(scale)
    # the saved factor is what calibrate() fits for the finished model on the same val split
    refit = calibrate(model, str(tmp_path / "votes.csv"), batch_size=8)
    assert 0.1 < scale[0] < 10 and refit == pytest.approx(scale, rel=0.1)  # fitted, not at a bound; MC noise


@pytest.mark.parametrize("from_prior", [True, False])
def test_a_new_vote_head_starts_at_the_training_votes_baseline(pretrained, tmp_path, monkeypatch, from_prior):
    """finetune() starts a vote head at the training votes' constant Dirichlet, the no-image baseline, where a
    randomly initialised head predicts ~51 for every answer (benchmarks/vote_head_start.py: from random, a new
    tree finetuned on 200 synthetic galaxies ended worse than the baseline). After one epoch at a negligible
    learning rate the test loss is the baseline's; from a random head (the switch off) it is far above."""
    from zoobot_tf.tasks.votes import VoteTask

    monkeypatch.setattr(VoteTask, "finetune_from_prior", from_prior)
    df = vote_catalog(tmp_path / "img", n=60, schema="gz_rings", size=32)
    rng = np.random.default_rng(2)  # about one volunteer in five sees a ring
    df["ring_yes"] = rng.binomial(30, rng.beta(2, 8, len(df)))
    df["ring_no"] = 30 - df["ring_yes"]
    result = finetune(pretrained, df, task="votes", schema="gz_rings", epochs=1, learning_rate=1e-12,
                      batch_size=8, verbose=0)
    total = result.test_table.set_index("question").loc["total"]
    if from_prior:
        assert total["loss"] == pytest.approx(total["baseline_loss"], rel=0.02)
    else:
        assert total["loss"] > 1.5 * total["baseline_loss"]


def test_a_saved_finetuned_model_loads_with_its_frozen_layers_and_optimizer_state(pretrained, tmp_path):
    import warnings

    tuner = Finetuner(pretrained, task="classification", class_names=["faint", "bright"], n_blocks=1)
    cat = bright_faint_catalog(tmp_path / "img", n=16)
    tuner.model.fit(tuner.dataset(cat, "kind", training=True), epochs=1, verbose=0)
    tuner.model.save(tmp_path / "ft.keras")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = load_model(tmp_path / "ft.keras")
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)], [str(w.message) for w in caught]
    live = [v.path for v in tuner.model.trainable_variables]
    assert 0 < len(live) < len(tuner.model.variables) and [v.path for v in again.trainable_variables] == live
    assert int(again.optimizer.iterations) == int(tuner.model.optimizer.iterations) > 0
    for a, b in zip(again.optimizer.variables, tuner.model.optimizer.variables):  # moments restored
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _strict_json(text):
    """json.loads that refuses NaN / Infinity, as JavaScript's JSON.parse, jq and most JSON readers do."""
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


def test_the_classification_metrics_file_is_strict_json_with_null_for_no_value(pretrained, tmp_path, capsys):
    """`zoobot-tf finetune` writes metrics.json that any JSON reader parses: the per-class table's total rows
    have no per-class values (recall of 'all classes' is not a number), written as null, not as NaN."""
    from zoobot_tf.cli import main

    bright_faint_catalog(tmp_path / "img", n=32).to_csv(tmp_path / "c.csv", index=False)
    out = tmp_path / "ft"
    assert main(["finetune", "--pretrained", str(pretrained), "--catalog", str(tmp_path / "c.csv"),
                 "--label_cols", "kind", "--epochs", "1", "--batch_size", "8", "--output_dir", str(out),
                 "--progress", "false"]) == 0
    text = (out / "metrics.json").read_text()
    metrics = _strict_json(text)  # json.loads(text) alone accepts NaN
    table = pd.DataFrame(metrics["test_table"])
    per_class = table[table["question"].isin(["bright", "faint"])]
    assert len(per_class) == 2 and per_class["n"].sum() == metrics["sizes"]["test"]
    totals = table[~table["question"].isin(["bright", "faint"])]
    assert len(totals) and totals["as_bright"].isna().all()  # null in the file, NaN again in pandas
    counts = [row[f"as_{c}"] for row in metrics["test_table"] if row["question"] in ("bright", "faint")
              for c in ("bright", "faint")]
    assert all(type(v) is int for v in counts) and sum(counts) == metrics["sizes"]["test"]  # counts, not 7.0
    lines = capsys.readouterr().out.splitlines()
    test_line = next(line for line in lines if line.startswith("test:"))
    assert re.search(r"'collapsed': (True|False)[,}]", test_line), test_line  # shown as a flag, not as 0.0
    printed = [line.split() for line in lines]
    header = next(words for words in printed if words[:1] == ["question"])
    rows = [words for words in printed if words[:1] in (["bright"], ["faint"])]
    column = header.index("as_bright")
    assert len(rows) == 2 and all(words[column].isdigit() for words in rows), printed  # printed as integers
    assert not list(out.glob(".*tmp*"))  # written through a temporary file, renamed


def test_write_json_makes_plain_strict_json(tmp_path):
    from zoobot_tf.outputs import write_json

    obj = {"a": np.float32(0.5), "b": float("nan"), "c": [np.int64(3), float("inf"), -np.inf],
           "d": tf.constant([1.0, 2.0]), "e": np.array([[1, 2]]), "f": np.bool_(True), 1: "key"}
    write_json(obj, tmp_path / "m.json")
    assert _strict_json((tmp_path / "m.json").read_text()) == {
        "a": 0.5, "b": None, "c": [3, None, None], "d": [1.0, 2.0], "e": [[1, 2]], "f": True, "1": "key"}


def test_label_smoothing_reaches_the_model_from_a_task_object_and_from_finetune(pretrained, tmp_path):
    task = ClassificationTask(["faint", "bright"])
    assert Finetuner(pretrained, task=task, label_smoothing=0.1).task.label_smoothing == 0.1
    assert Finetuner(pretrained, task=task).task.label_smoothing == 0.0
    result = finetune(pretrained, bright_faint_catalog(tmp_path / "imgs", n=24), label_cols="kind", epochs=1,
                      verbose=0, label_smoothing=0.1)
    assert result.model.task.label_smoothing == 0.1 and result.model.task.loss().__class__.__name__ == \
        "SmoothedSparseCrossEntropy"
