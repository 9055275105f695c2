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
