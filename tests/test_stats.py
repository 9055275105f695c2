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


def test_mixture_interval_on_extreme_and_spread_concentrations_matches_brentq():
    from scipy.optimize import brentq

    rng = np.random.default_rng(3)
    c = rng.uniform(1, 101, (2, SCHEMA.n_answers, 16))
    c[0, :3, :] = [[1.0], [1.0], [101.0]] * np.ones((3, 16))  # components at the bounds of the head
    c[1, 0, :8], c[1, 0, 8:] = 1.0, 100.0  # a bimodal mixture: half the samples disagree
    lo, hi = stats.beta_intervals(c, SCHEMA, level=0.9)
    assert np.isfinite(lo).all() and np.isfinite(hi).all()
    for i in range(2):
        for j in range(3):
            a, b = c[i, j], c[i, :3].sum(0) - c[i, j]
            cdf = lambda x: sps.beta.cdf(x, a, b).mean()  # noqa: E731
            np.testing.assert_allclose(lo[i, j], brentq(lambda x: cdf(x) - 0.05, 0, 1, xtol=1e-14), atol=1e-7)
            np.testing.assert_allclose(hi[i, j], brentq(lambda x: cdf(x) - 0.95, 0, 1, xtol=1e-14), atol=1e-7)


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


def _votes_from(alpha, schema, rng, volunteers=40, asked=None):
    """Each galaxy's answer probabilities drawn from Dirichlet(alpha) per question, then its votes."""
    counts = np.zeros_like(alpha)
    for qi, q in enumerate(schema.questions):
        for i in range(len(alpha)):
            if asked is not None and not asked[i, qi]:
                continue
            p = rng.dirichlet(alpha[i, q.start:q.end])
            counts[i, q.start:q.end] = rng.multinomial(volunteers, p)
    return counts


def test_concentration_scale_recovers_how_overconfident_a_model_is():
    """Votes drawn from Dirichlet(alpha) x multinomial; a 'model' that predicts 2.5 x alpha (too sure) must get
    k ~ 0.4, one that predicts alpha k ~ 1, one that predicts alpha / 2 k ~ 2. Questions with too few votes fall
    back to the factor fitted over all questions together."""
    schema = get_schema("gz2")
    rng = np.random.default_rng(0)
    alpha = rng.uniform(0.5, 6.0, (1500, schema.n_answers))
    asked = np.ones((len(alpha), schema.n_questions), dtype=bool)
    asked[20:, -1] = False  # the last question: 20 galaxies only
    counts = _votes_from(alpha, schema, rng, asked=asked)
    for factor in (2.5, 1.0, 0.5):
        samples = np.repeat((alpha * factor)[..., None], 3, axis=-1)
        k = stats.fit_concentration_scale(samples, counts, schema)
        assert k.shape == (schema.n_questions,)
        np.testing.assert_allclose(k[:-1], 1 / factor, rtol=0.2)
        joint = stats.fit_concentration_scale(samples, counts, schema, min_galaxies=10 ** 9)
        assert np.allclose(joint, joint[0]) and abs(joint[0] * factor - 1) < 0.1
        assert k[-1] == joint[-1]  # too few votes: the joint factor
    no_votes = stats.fit_concentration_scale(samples, np.zeros_like(counts), schema)
    assert np.all(no_votes == 1.0)
