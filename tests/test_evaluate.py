"""The no-image baseline and the test-set noise against direct TensorFlow Probability computations."""
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from zoobot_tf import losses
from zoobot_tf.evaluate import fit_baseline, vote_metrics
from zoobot_tf.schemas import get_schema


def _votes(n=300, seed=0):
    from zoobot_tf.data.synthetic import sample_truth, simulate_votes

    schema = get_schema("gz_decals_dr5")
    rng = np.random.default_rng(seed)
    rows = [simulate_votes(sample_truth(rng), schema, rng, n_volunteers=int(rng.integers(5, 50))) for _ in range(n)]
    return schema, np.array(rows, dtype=np.float64)


def test_baseline_is_the_likelihood_maximum_over_its_grid_by_tfp():
    schema, counts = _votes()
    alpha = fit_baseline(counts, schema)
    grid = np.logspace(-1, 3, 161)
    for s, e in schema.question_index_groups:
        k = counts[:, s:e]
        k = k[k.sum(1) > 0]
        mean = (k.sum(0) + 1e-3) / (k.sum() + 1e-3 * (e - s))
        dist = lambda c: tfp.distributions.DirichletMultinomial(k.sum(1), np.tile(c, (len(k), 1)))  # noqa: E731
        nll = [-float(tf.reduce_sum(dist(g * mean).log_prob(k))) for g in grid]
        np.testing.assert_allclose(alpha[s:e], grid[int(np.argmin(nll))] * mean, rtol=1e-12)


def test_total_row_reports_the_standard_error_of_the_mean_test_loss():
    schema, counts = _votes(200, seed=1)
    conc = np.random.default_rng(2).uniform(0.5, 5.0, counts.shape)
    table = vote_metrics(counts, conc, schema).set_index("question")
    per_galaxy = losses.dirichlet_multinomial_nll(counts, conc, schema).numpy()
    np.testing.assert_allclose(table.loc["total", "loss"], per_galaxy.mean(), rtol=1e-5)
    np.testing.assert_allclose(table.loc["total", "loss_sem"], per_galaxy.std(ddof=1) / np.sqrt(len(counts)), rtol=1e-5)


def test_one_vote_questions_start_the_head_where_it_learns():
    """One vote per galaxy leaves the Dirichlet scale free: the baseline keeps the class ratios (the same
    likelihood as any scale, by tfp) at a scale where the head's sigmoid is not saturated at its floor."""
    from zoobot_tf.evaluate import ONE_VOTE_SCALE
    from zoobot_tf.schemas import Schema
    from zoobot_tf.tasks import make_task

    schema = Schema("flags", {"ring": ["yes", "no"], "gz1": ["a", "b", "c"]})
    rng = np.random.default_rng(0)
    counts = np.zeros((400, 5))
    counts[np.arange(400), rng.choice(2, 400, p=[0.3, 0.7])] = 1
    counts[np.arange(400), 2 + rng.choice(3, 400, p=[0.6, 0.3, 0.1])] = 1
    alpha = fit_baseline(counts, schema)
    assert alpha[1] == ONE_VOTE_SCALE and alpha[2] == ONE_VOTE_SCALE
    np.testing.assert_allclose(alpha[0] / alpha[1], counts[:, 0].sum() / counts[:, 1].sum(), rtol=1e-4)
    for scale in (0.1, 1.0, 100.0):  # the likelihood does not depend on the scale
        k = counts[:, :2]
        lp = lambda c: float(tf.reduce_sum(tfp.distributions.DirichletMultinomial(1.0, c).log_prob(k)))  # noqa: E731
        np.testing.assert_allclose(lp(alpha[:2] * scale), lp(alpha[:2]), rtol=1e-6)
    # the head's sigmoid, started at this prior, has a slope far from zero for every answer above its floor
    bias = make_task("votes", schema=schema).head_bias(alpha)
    slope = 1 / (1 + np.exp(-bias)) * (1 - 1 / (1 + np.exp(-bias)))
    assert slope[[0, 1, 2, 3]].min() > 0.02


def test_predict_batches_traces_the_model_once_and_drops_the_padding_rows():
    import gc
    import weakref

    from zoobot_tf import evaluate
    from zoobot_tf.models import Zoobot
    from zoobot_tf.models.traced import inference_fn

    model = Zoobot(backbone="resnet_micro", image_size=32, channels=1)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (6, 32, 32, 1)).astype("float32")
    w = np.array([1, 1, 1, 1, 0, 0], "float32")  # the last two rows pad a batch
    data = tf.data.Dataset.from_tensor_slices((x, np.arange(6), w)).batch(3)
    outputs, labels = evaluate.predict_batches(model, data)
    again, _ = evaluate.predict_batches(model, data)
    np.testing.assert_array_equal(labels, [0, 1, 2, 3])
    np.testing.assert_allclose(outputs, model(x[:4], training=False).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(again, outputs)
    assert inference_fn(model).experimental_get_tracing_count() == 1  # one trace for both calls
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None  # the cached function does not keep the model alive
