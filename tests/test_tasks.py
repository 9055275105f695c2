"""The Task contract, checked for every registered task (a new task gets these checks by registering), and
the pieces specific to each: label smoothing against the direct formula, the unit interval, schedules."""
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from zoobot_tf.tasks import (ClassificationTask, RegressionTask, UnitIntervalRegressionTask, VoteTask, make_task,
                             task_names)

EXAMPLES = {
    "votes": lambda: VoteTask("gz_rings"),
    "classification": lambda: ClassificationTask(["faint", "bright", "odd"]),
    "regression": lambda: RegressionTask(["size", "flux"]),
    "unit_interval_regression": lambda: UnitIntervalRegressionTask(["fraction"]),
}


def _labels(task, n, rng):
    """(catalog, labels) of n galaxies for ``task``."""
    cols = {"id_str": [f"g{i}" for i in range(n)], "file_loc": ["x.jpg"] * n}
    if isinstance(task, VoteTask):
        counts = rng.integers(0, 9, (n, task.n_outputs))
        cols.update(dict(zip(task.output_labels, counts.T)))
        return pd.DataFrame(cols), None
    if isinstance(task, ClassificationTask):
        cols["label"] = rng.choice(task.class_names, n)
        return pd.DataFrame(cols), ["label"]
    values = rng.uniform(0, 1, (n, task.n_outputs))
    cols.update(dict(zip(task.target_names, values.T)))
    return pd.DataFrame(cols), task.target_names


def test_every_registered_task_is_exercised_here():
    assert set(task_names()) == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_task_contract(name, tmp_path):
    rng = np.random.default_rng(0)
    task = EXAMPLES[name]()
    assert make_task(task.get_config()) == task and task.name == name  # config round trip
    catalog, columns = _labels(task, 12, rng)
    task.validate_catalog(catalog, columns, require_files=False)
    labels = task.encode(catalog, columns)
    assert len(labels) == 12 and labels.dtype == np.dtype(task.label_dtype)
    # labels through a TFRecord example and back
    example = tf.train.Example(features=tf.train.Features(feature={
        **task.example_features(labels[3])})).SerializeToString()
    parsed = task.parse(tf.io.parse_single_example(example, task.feature_spec())).numpy()
    np.testing.assert_allclose(parsed, labels[3], rtol=1e-6)
    # the head: a prior, a bias that reproduces it through the output layer, a finite loss
    prior = task.prior(labels)
    assert prior.shape == (task.n_outputs,)
    out = task.output_layer()(tf.constant(task.head_bias(prior)[None], tf.float32)).numpy()[0]
    np.testing.assert_allclose(out, prior if name != "classification" else prior / prior.sum(), rtol=1e-4,
                               atol=1e-5)
    outputs = np.tile(out, (12, 1)).astype("float32")
    losses = task.loss()(tf.constant(labels), tf.constant(outputs))
    assert np.isfinite(float(losses))
    # outputs: the table, the serving outputs, the test metrics
    table = task.table([f"g{i}" for i in range(12)], outputs[..., None].repeat(3, axis=-1))
    assert len(table) == 12 and table["id_str"].iloc[0] == "g0"
    served = task.serving_outputs(tf.constant(outputs))
    assert sorted(served) == sorted(task.serving_output_names) and task.output_name in served
    metrics = task.evaluate(labels, outputs, prior=prior)
    assert metrics.iloc[-1]["question"] == "total"
    assert task.metadata()["task"] == name
    # what TensorBoard shows: one chart per galaxy (predicted next to observed) and categorical descriptions
    chart = task.chart(outputs[0], labels[0])
    assert chart and all(rows and all(len(r) == 3 and np.isfinite(r[1]) for r in rows) for _, rows in chart)
    assert all(np.isnan(r[2]) for _, rows in task.chart(outputs[0]) for r in rows)  # no label: nothing observed
    described = task.categories(outputs)
    assert len(described) == 12 and described.shape[1] >= 1


def test_classification_metrics_carry_the_confusion_matrix():
    task = ClassificationTask(["elliptical", "spiral", "merger"])
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    predicted = np.array([0, 1, 0, 1, 2, 2, 0, 2, 2])
    outputs = np.full((9, 3), 0.1)
    outputs[np.arange(9), predicted] = 0.8
    table = task.evaluate(labels, outputs).set_index("question")
    expected = np.zeros((3, 3), int)  # counted by hand: rows are the true class, columns the prediction
    for t, p in zip(labels, predicted):
        expected[t, p] += 1
    got = table.loc[task.class_names, [f"as_{c}" for c in task.class_names]].to_numpy()
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(table.loc[task.class_names, "recall"], [2 / 3, 1 / 2, 3 / 4])
    assert table.loc["total", "balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 3 / 4) / 3)


def test_label_smoothing_matches_the_direct_formula():
    task = ClassificationTask(["a", "b", "c"], label_smoothing=0.1)
    y, p = np.array([0, 2]), np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], "float32")
    got = task.loss().call(y, p).numpy()
    target = np.full((2, 3), 0.1 / 3) + 0.9 * np.eye(3)[y]  # PyTorch's cross_entropy(label_smoothing=0.1)
    np.testing.assert_allclose(got, -(target * np.log(p)).sum(1), rtol=1e-6)
    assert make_task(task.get_config()).label_smoothing == 0.1


def test_unit_interval_predictions_stay_in_range_and_targets_are_checked():
    from zoobot_tf.data.catalogs import CatalogError

    task = UnitIntervalRegressionTask(["fraction"])
    out = task.output_layer()(tf.constant([[-50.0], [0.0], [50.0]])).numpy()
    assert (out >= 0).all() and (out <= 1).all() and abs(out[1, 0] - 0.5) < 1e-6
    bad = pd.DataFrame({"id_str": ["a", "b"], "file_loc": ["x", "y"], "fraction": [0.5, 1.5]})
    with pytest.raises(CatalogError, match=r"targets in \[0, 1\]"):
        task.validate_catalog(bad, require_files=False)


def test_cosine_schedule_with_warmup():
    from zoobot_tf.finetuning import learning_rate_at

    s = dict(learning_rate=1e-3, warmup_epochs=2, cosine_schedule=True, max_cosine_epochs=12, min_lr_factor=0.01)
    lrs = [learning_rate_at(e, s) for e in range(14)]
    np.testing.assert_allclose(lrs[:3], [1e-3 / 3, 2e-3 / 3, 1e-3])  # warmup, then the full rate
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))  # then decaying
    np.testing.assert_allclose(lrs[12:], 1e-5)  # to the floor, and staying there
    assert learning_rate_at(5, {**s, "cosine_schedule": False}) == 1e-3


def test_vote_task_concentration_scale_widens_intervals_and_is_saved():
    """The calibrated task's intervals are the raw ones of concentrations x its per-question factor (against
    stats.beta_intervals directly); fractions are unchanged; the factor survives the task's config; a factor
    of the wrong length or sign is refused."""
    from zoobot_tf import stats

    raw = VoteTask("gz2")
    scale = np.linspace(0.3, 1.5, raw.schema.n_questions)
    task = make_task(VoteTask("gz2", concentration_scale=scale).get_config())
    assert task.concentration_scale == pytest.approx(list(scale))
    rng = np.random.default_rng(0)
    samples = rng.uniform(1.5, 60.0, (4, raw.schema.n_answers, 3))
    ids = [str(i) for i in range(4)]
    a, b = raw.table(ids, samples, asked_threshold=0.0), task.table(ids, samples, asked_threshold=0.0)
    per_answer = scale[np.argmax(raw.schema.answer_to_question_matrix(), axis=1)]
    lower, upper = stats.beta_intervals(samples * per_answer[:, None], raw.schema)
    cols = raw.schema.label_cols
    np.testing.assert_allclose(b[[f"{c}_fraction_lower" for c in cols]].to_numpy(), lower)
    np.testing.assert_allclose(b[[f"{c}_fraction_upper" for c in cols]].to_numpy(), upper)
    np.testing.assert_allclose(b[[f"{c}_fraction" for c in cols]], a[[f"{c}_fraction" for c in cols]])
    first = [f"{c}_fraction" for c in cols[:2]]  # question 0 has the smallest factor (0.3): wider intervals
    width = lambda t: t[[f + "_upper" for f in first]].to_numpy() - t[[f + "_lower" for f in first]].to_numpy()
    assert np.all(width(b) > width(a))
    with pytest.raises(ValueError, match="concentration_scale must be"):
        VoteTask("gz2", concentration_scale=[1.0, 2.0])
    with pytest.raises(ValueError, match="concentration_scale must be"):
        VoteTask("gz2", concentration_scale=-scale)
    from zoobot_tf.evaluate import calibrate
    from zoobot_tf.models import Zoobot

    classifier = Zoobot(task="classification", n_classes=2, backbone="resnet_micro", image_size=32)
    with pytest.raises(ValueError, match="vote models"):
        calibrate(classifier, tf.data.Dataset.from_tensors((tf.zeros((1, 32, 32, 3)), tf.zeros((1,)), tf.ones((1,)))))


@pytest.mark.parametrize("tree", ["gz_candels", "gz_rings", "gz_cosmic_dawn"])
def test_a_vote_catalog_is_read_with_the_only_tree_whose_columns_it_has(tree):
    """`finetune --task votes` without a schema: the catalog's columns name its tree (extra columns ignored);
    columns that several trees share, or that no tree has, are an error that says so."""
    from zoobot_tf.data.catalogs import CatalogError
    from zoobot_tf.schemas import get_schema
    from zoobot_tf.tasks import make_task_for_catalog

    columns = get_schema(tree).label_cols + ["id_str", "file_loc", "redshift"]
    catalog = pd.DataFrame(np.ones((2, len(columns)), int), columns=columns)
    assert make_task_for_catalog("votes", catalog).schema.name == tree
    assert make_task_for_catalog("votes", catalog, schema="gz_decals_dr5").schema.name == "gz_decals_dr5"
    with pytest.raises(CatalogError, match="answer columns of no built-in decision tree"):
        make_task_for_catalog("votes", catalog.drop(columns=get_schema(tree).label_cols[0]))
    shared = pd.DataFrame(columns=get_schema("gz_decals_dr8").label_cols)
    with pytest.raises(CatalogError, match="every answer column of gz_decals_dr5, gz_decals_dr8, gz_desi, whose "):
        make_task_for_catalog("votes", shared)


def test_replace_changes_only_the_named_options_and_keeps_the_task_type():
    task = ClassificationTask(["cw", "acw", "other"], mirror=[("cw", "acw")])
    smoothed = task.replace(label_smoothing=0.1)
    assert type(smoothed) is ClassificationTask and smoothed.label_smoothing == 0.1 and task.label_smoothing == 0.0
    assert smoothed.class_names == task.class_names and smoothed.mirror == task.mirror
    assert smoothed.replace(mirror=None).mirror is None and smoothed.mirror == task.mirror
    votes = make_task("votes", schema="gz2")
    assert votes.replace() == votes and type(votes.replace()) is VoteTask
