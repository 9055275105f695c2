import numpy as np
from scipy import stats as sps

from zoobot_tf import stats
from zoobot_tf.schemas import get_schema

SCHEMA = get_schema("gz_decals_dr5")


def _conc(n=5, s=None, seed=0):
    shape = (n, SCHEMA.n_answers) + ((s,) if s else ())
    return np.random.default_rng(seed).uniform(1, 101, shape)


def test_expected_fractions_sum_to_one_per_question():
    frac = stats.expected_vote_fractions(_conc(), SCHEMA)
    for s, e in SCHEMA.question_index_groups:
        np.testing.assert_allclose(frac[:, s:e].sum(1), 1.0)
    c = _conc()
    np.testing.assert_allclose(frac[:, 0], c[:, 0] / c[:, 0:3].sum(1))


def test_beta_interval_matches_scipy_beta_marginal():
    c = _conc()
    lo, hi = stats.beta_intervals(c, SCHEMA, level=0.9)
    a, b = c[:, 4], c[:, 3:5].sum(1) - c[:, 4]  # disk-edge-on_no
    np.testing.assert_allclose(lo[:, 4], sps.beta.ppf(0.05, a, b), rtol=1e-6)
    np.testing.assert_allclose(hi[:, 4], sps.beta.ppf(0.95, a, b), rtol=1e-6)


def test_mixture_interval_has_the_right_coverage():
    c = _conc(n=3, s=4, seed=1)
    lo, hi = stats.beta_intervals(c, SCHEMA, level=0.9)
    a = c[:, 0, :]
    b = c[:, 0:3, :].sum(1) - a
    for i in range(3):
        mix_cdf = lambda x: np.mean([sps.beta.cdf(x, a[i, k], b[i, k]) for k in range(4)])  # noqa: E731
        np.testing.assert_allclose(mix_cdf(lo[i, 0]), 0.05, atol=1e-6)
        np.testing.assert_allclose(mix_cdf(hi[i, 0]), 0.95, atol=1e-6)


def test_prob_asked_is_product_of_parent_fractions():
    frac = stats.expected_vote_fractions(_conc(seed=2), SCHEMA)
    p = stats.prob_asked(frac, SCHEMA)
    q = {q.name: i for i, q in enumerate(SCHEMA.questions)}
    lab = {l: i for i, l in enumerate(SCHEMA.label_cols)}
    featured = frac[:, lab["smooth-or-featured_featured-or-disk"]]
    not_edge = frac[:, lab["disk-edge-on_no"]]
    spiral = frac[:, lab["has-spiral-arms_yes"]]
    np.testing.assert_allclose(p[:, q["smooth-or-featured"]], 1.0)
    np.testing.assert_allclose(p[:, q["merging"]], 1.0)
    np.testing.assert_allclose(p[:, q["bar"]], featured * not_edge)
    np.testing.assert_allclose(p[:, q["spiral-winding"]], featured * not_edge * spiral)


def test_masking_hides_questions_unlikely_to_be_asked():
    frac = np.zeros((2, SCHEMA.n_answers))
    for s, e in SCHEMA.question_index_groups:
        frac[:, s:e] = 1.0 / (e - s)
    lab = {l: i for i, l in enumerate(SCHEMA.label_cols)}
    frac[0, 0:3] = [0.9, 0.05, 0.05]  # smooth: disk questions hidden
    frac[1, 0:3] = [0.05, 0.9, 0.05]
    frac[1, 3:5] = [0.1, 0.9]  # featured, face-on: bar is asked with p = 0.81
    masked = stats.mask_unlikely_questions(frac, SCHEMA)
    assert np.isnan(masked[0, lab["bar_strong"]]) and not np.isnan(masked[0, lab["how-rounded_round"]])
    assert not np.isnan(masked[1, lab["bar_strong"]]) and np.isnan(masked[1, lab["how-rounded_round"]])
    assert not np.isnan(masked[:, lab["merging_none"]]).any()


def test_fractions_from_counts_nan_when_unasked():
    counts = np.zeros((1, SCHEMA.n_answers))
    counts[0, :3] = [2, 6, 2]
    f = stats.vote_fractions_from_counts(counts, SCHEMA)
    np.testing.assert_allclose(f[0, :3], [0.2, 0.6, 0.2])
    assert np.isnan(f[0, 3:]).all()
