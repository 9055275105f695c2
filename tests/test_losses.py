"""The Dirichlet-multinomial loss against an independent lgamma formula, on real vote counts too."""
import gzip

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import shared_data_dir
from scipy.special import gammaln

from zoobot_tf import losses
from zoobot_tf.schemas import get_schema


def reference_nll(counts, alpha, groups):
    """-log p summed over questions, float64, written directly from the closed form."""
    counts = np.asarray(counts, np.float64)
    alpha = np.asarray(alpha, np.float64)
    total = np.zeros(len(counts))
    for s, e in groups:
        k, a = counts[:, s:e], alpha[:, s:e]
        n, big_a = k.sum(1), a.sum(1)
        log_p = (gammaln(big_a) + gammaln(n + 1) - gammaln(n + big_a)
                 + (gammaln(k + a) - gammaln(a) - gammaln(k + 1)).sum(1))
        total -= np.where(n > 0, log_p, 0.0)
    return total


def random_votes(rng, schema, n, max_votes=40):
    counts = np.zeros((n, schema.n_answers))
    for s, e in schema.question_index_groups:
        asked = rng.random(n) < 0.7
        totals = rng.integers(1, max_votes, n) * asked
        for i in range(n):
            counts[i, s:e] = rng.multinomial(totals[i], rng.dirichlet(np.ones(e - s)))
    return counts


def test_matches_closed_form_on_the_decals_tree():
    rng = np.random.default_rng(0)
    schema = get_schema("gz_decals_dr5")
    counts = random_votes(rng, schema, 64)
    alpha = rng.uniform(1, 101, counts.shape)
    got = losses.dirichlet_multinomial_nll(counts, alpha, schema).numpy()
    np.testing.assert_allclose(got, reference_nll(counts, alpha, schema.question_index_groups), rtol=2e-5, atol=2e-3)
    assert got.dtype == np.float32


def test_unasked_question_gives_exactly_zero_loss_and_gradient():
    schema = get_schema("gz_decals_dr5")
    counts = np.zeros((2, schema.n_answers), np.float32)
    counts[:, 0:3] = [[10, 20, 3], [0, 5, 0]]
    alpha = tf.Variable(np.random.default_rng(1).uniform(1, 101, counts.shape).astype(np.float32))
    with tf.GradientTape() as tape:
        per_q = losses.per_question_nll(counts, alpha, schema)
        total = tf.reduce_sum(per_q)
    grad = tape.gradient(total, alpha).numpy()
    assert np.all(per_q.numpy()[:, 1:] == 0.0)
    assert np.all(grad[:, 3:] == 0.0)
    assert np.all(grad[:, :3] != 0.0)


def test_keras_loss_is_mean_of_per_galaxy_losses_and_respects_weights():
    rng = np.random.default_rng(2)
    schema = get_schema("gz2")
    counts = random_votes(rng, schema, 8).astype(np.float32)
    alpha = rng.uniform(1, 50, counts.shape).astype(np.float32)
    loss = losses.DirichletMultinomialLoss(schema.question_index_groups)
    ref = reference_nll(counts, alpha, schema.question_index_groups)
    np.testing.assert_allclose(float(loss(counts, alpha)), ref.mean(), rtol=1e-5)
    w = np.array([2, 2, 2, 2, 0, 0, 0, 0], np.float32)  # padding rows carry weight 0
    np.testing.assert_allclose(float(loss(counts, alpha, sample_weight=w)), ref[:4].mean(), rtol=1e-5)
    # config round trip
    again = losses.DirichletMultinomialLoss.from_config(loss.get_config())
    np.testing.assert_allclose(float(again(counts, alpha)), float(loss(counts, alpha)))


def test_float32_under_mixed_precision_inputs():
    schema = get_schema("gz_rings")
    counts = tf.constant([[30.0, 10.0]])
    alpha16 = tf.constant([[60.0, 20.0]], tf.bfloat16)
    got = losses.dirichlet_multinomial_nll(counts, alpha16, schema)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), reference_nll([[30, 10]], [[60, 20]], [(0, 2)]), rtol=1e-5)


@pytest.mark.parametrize("alpha_value", [1e-6, 1.0, 101.0, 1e4, 1e7])
def test_gradients_finite_for_extreme_alphas(alpha_value):
    schema = get_schema("gz_decals_dr5")
    counts = random_votes(np.random.default_rng(3), schema, 4, max_votes=400).astype(np.float32)
    alpha = tf.Variable(np.full(counts.shape, alpha_value, np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(losses.dirichlet_multinomial_nll(counts, alpha, schema))
    grad = tape.gradient(loss, alpha)
    assert np.isfinite(loss.numpy())
    assert np.all(np.isfinite(grad.numpy()))


def test_real_decals_smooth_votes_against_closed_form():
    path = shared_data_dir("gz_decals_smooth_votes") / "votes.csv"
    df = pd.read_csv(path)
    cols = ["smooth-or-featured_smooth", "smooth-or-featured_featured-or-disk", "smooth-or-featured_artifact"]
    counts = df[cols].to_numpy(np.float64)
    assert (counts.sum(1) == df["smooth-or-featured_total-votes"]).all()
    rng = np.random.default_rng(4)
    alpha = rng.uniform(1, 101, counts.shape)
    got = losses.dirichlet_multinomial_nll(counts, alpha, [(0, 3)]).numpy()
    np.testing.assert_allclose(got, reference_nll(counts, alpha, [(0, 3)]), rtol=3e-5, atol=3e-3)
    # A constant Dirichlet fitted to the data beats a flat one (the loss sees real structure).
    frac = counts.sum(0) / counts.sum()
    fitted = np.tile(frac * 5.0, (len(counts), 1))
    flat = np.ones_like(counts)
    assert (losses.dirichlet_multinomial_nll(counts, fitted, [(0, 3)]).numpy().mean()
            < losses.dirichlet_multinomial_nll(counts, flat, [(0, 3)]).numpy().mean())


def test_real_gz2_votes_all_questions_and_masking():
    path = shared_data_dir("gz2_stripe82_votes") / "table5.csv.gz"
    from zoobot_tf.data.catalogs import gz2_willett_to_schema_columns

    with gzip.open(path, "rt") as f:
        table = pd.read_csv(f, nrows=2000)
    schema = get_schema("gz2_willett")
    df = gz2_willett_to_schema_columns(table)
    counts = df[schema.label_cols].to_numpy(np.float64)
    # real data: many questions have zero votes for a galaxy (not asked)
    totals = counts @ schema.answer_to_question_matrix()
    assert (totals == 0).any()
    alpha = np.random.default_rng(5).uniform(1, 101, counts.shape)
    per_q = losses.per_question_nll(counts, alpha, schema).numpy()
    np.testing.assert_allclose(per_q.sum(1), reference_nll(counts, alpha, schema.question_index_groups),
                               rtol=3e-5, atol=5e-3)
    assert np.all(per_q[totals == 0] == 0.0)
    assert np.all(per_q[totals > 0] > 0.0)


def test_question_loss_metrics_sum_to_total():
    rng = np.random.default_rng(6)
    schema = get_schema("gz_decals_dr5")
    counts = random_votes(rng, schema, 16).astype(np.float32)
    alpha = rng.uniform(1, 101, counts.shape).astype(np.float32)
    total_metric, *metrics = losses.question_loss_metrics(schema)
    for m in [total_metric] + metrics:
        m.update_state(counts[:8], alpha[:8])
        # a padded batch: 8 real rows weighted 16/8 = 2 and 8 padding rows weighted 0
        m.update_state(np.concatenate([counts[8:], counts[8:]]), np.concatenate([alpha[8:], alpha[8:]]),
                       sample_weight=np.array([2.0] * 8 + [0.0] * 8))
    expected = reference_nll(counts, alpha, schema.question_index_groups).mean()
    np.testing.assert_allclose(sum(float(m.result()) for m in metrics), expected, rtol=1e-5)
    np.testing.assert_allclose(float(total_metric.result()), expected, rtol=1e-5)


def test_question_loss_metric_is_correct_across_replicas(two_replicas):
    """Each replica sees different galaxies; the metric must report the global mean."""
    rng = np.random.default_rng(7)
    schema = get_schema("gz_decals_dr5")
    counts = random_votes(rng, schema, 12).astype(np.float32)
    alpha = rng.uniform(1, 101, counts.shape).astype(np.float32)
    strategy = tf.distribute.MirroredStrategy(two_replicas)
    with strategy.scope():
        metric = losses.QuestionLoss("smooth-or-featured", 0, 3)
    # unequal halves: 4 galaxies on one replica, 8 on the other
    parts = [(counts[:4], alpha[:4]), (counts[4:], alpha[4:])]
    values = strategy.experimental_distribute_values_from_function(lambda ctx: parts[ctx.replica_id_in_sync_group])

    @tf.function
    def step(v):
        strategy.run(lambda c_a: metric.update_state(c_a[0], c_a[1]), args=(v,))

    step(values)
    expected = reference_nll(counts[:, :3], alpha[:, :3], [(0, 3)]).mean()
    np.testing.assert_allclose(float(metric.result()), expected, rtol=1e-5)


@pytest.mark.parametrize("schema_name", ["gz_decals_dr5", "gz2"])
def test_all_questions_at_once_equals_tfp_one_question_at_a_time(schema_name):
    """The fast path (products with a 0/1 answer-to-question matrix) against the stock path (tfp's
    DirichletMultinomial per question): values and gradients, with unasked questions, bfloat16 predictions
    and extreme concentrations."""
    from zoobot_tf.ops import fast_path

    rng = np.random.default_rng(8)
    schema = get_schema(schema_name)
    counts = random_votes(rng, schema, 32, max_votes=400).astype(np.float32)
    alpha = rng.uniform(1, 101, counts.shape).astype(np.float32)
    alpha[0] = 1e-6
    alpha[1] = 1e6

    def run(enabled, dtype=tf.float32):
        a = tf.Variable(tf.cast(alpha, dtype))
        with fast_path(enabled), tf.GradientTape() as tape:
            per_q = losses.per_question_nll(counts, a, schema)
            total = tf.reduce_sum(per_q)
        return per_q.numpy(), tape.gradient(total, a).numpy()

    (fast_q, fast_g), (stock_q, stock_g) = run(True), run(False)
    assert fast_q.shape == (32, len(schema.questions)) and fast_q.dtype == np.float32
    normal = np.arange(32) != 1
    np.testing.assert_allclose(fast_q[normal], stock_q[normal], rtol=1e-5, atol=5e-3)
    np.testing.assert_allclose(fast_g, stock_g, rtol=1e-4, atol=1e-4)
    # alpha = 1e6: lgamma(A) - lgamma(N + A) cancels in float32 on both paths (tfp's lbeta is the same sum
    # of lgammas); each stays within a few float32 steps of lgamma(N + A) of the float64 closed form
    groups = schema.question_index_groups
    exact = np.array([reference_nll(counts[1:2], alpha[1:2], [g])[0] for g in groups])
    scale = np.array([gammaln(counts[1, s:e].sum() + alpha[1, s:e].astype(np.float64).sum()) for s, e in groups])
    for got in (fast_q[1], stock_q[1]):
        assert np.all(np.abs(got - exact) <= 8 * np.spacing(scale.astype(np.float32))), (got, exact)
    asked = counts @ schema.answer_to_question_matrix() > 0
    assert np.all(fast_q[~asked] == 0.0) and np.all(np.isfinite(fast_g))
    (bf_q, _), (bf_stock_q, _) = run(True, tf.bfloat16), run(False, tf.bfloat16)
    np.testing.assert_allclose(bf_q[normal], bf_stock_q[normal], rtol=1e-5, atol=5e-3)


def test_groups_that_skip_columns_read_only_their_own():
    """Groups need not cover every column (a task may score a subset): columns outside them are ignored."""
    rng = np.random.default_rng(9)
    counts = rng.integers(0, 20, (16, 7)).astype(np.float32)
    alpha = rng.uniform(1, 50, counts.shape).astype(np.float32)
    groups = [(1, 3), (5, 7)]
    got = losses.per_question_nll(counts, alpha, groups).numpy()
    np.testing.assert_allclose(got.sum(1), reference_nll(counts, alpha, groups), rtol=2e-5, atol=2e-3)
    unknown_width = tf.function(lambda c, a: losses.per_question_nll(c, a, groups),
                                input_signature=[tf.TensorSpec([None, None], tf.float32)] * 2)
    np.testing.assert_allclose(unknown_width(counts, alpha).numpy(), got, rtol=1e-6)
