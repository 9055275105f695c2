"""Vote fractions, Beta credible intervals and the probability that a question was asked.

All functions take numpy arrays, shaped (galaxies, answers) or (galaxies, answers, samples)
for MC-dropout samples of concentrations, and follow the schema's answer order.
"""
from __future__ import annotations

import numpy as np
from scipy import special

from zoobot_tf.schemas import Schema


def _question_totals(x: np.ndarray, schema: Schema) -> np.ndarray:
    """Sum over the answers of each question, broadcast back to every answer: same shape as x."""
    m = schema.answer_to_question_matrix()  # (A, Q)
    per_answer = m @ m.T  # (A, A): 1 where two answers share a question
    if x.ndim == 3:  # (N, A, S)
        return np.einsum("nas,ab->nbs", x, per_answer)
    return x @ per_answer


def vote_fractions_from_counts(counts: np.ndarray, schema: Schema) -> np.ndarray:
    """(N, A) observed vote fractions; NaN for questions with no votes."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = _question_totals(counts, schema)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / totals, np.nan)


def question_totals_from_counts(counts: np.ndarray, schema: Schema) -> np.ndarray:
    """(N, Q) number of votes on each question."""
    return np.asarray(counts, dtype=np.float64) @ schema.answer_to_question_matrix()


def expected_vote_fractions(concentrations: np.ndarray, schema: Schema) -> np.ndarray:
    """Mean vote fraction alpha_a / A_q. (N, A) -> (N, A); (N, A, S) -> (N, A) averaged over samples."""
    conc = np.asarray(concentrations, dtype=np.float64)
    frac = conc / _question_totals(conc, schema)
    return frac.mean(axis=-1) if conc.ndim == 3 else frac


def beta_intervals(concentrations: np.ndarray, schema: Schema, level: float = 0.9,
                   tol: float = 1e-9, max_iterations: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Central credible interval of each answer's vote fraction.

    The marginal of answer a under Dirichlet(alpha) is Beta(alpha_a, A_q - alpha_a). With MC-dropout
    samples (N, A, S) the posterior is the equal-weight mixture over samples. Its quantile lies
    between the smallest and largest of the components' own quantiles (exact, ``betaincinv``); inside
    that bracket a safeguarded Newton iteration on the mixture CDF (bisection whenever a Newton step
    would leave the bracket) converges in a handful of steps, instead of ~50 bisections over [0, 1].
    Returns (lower, upper), each (N, A).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1). Received: level={level}")
    conc = np.asarray(concentrations, dtype=np.float64)
    a = conc
    b = _question_totals(conc, schema) - conc
    q_lo, q_hi = (1 - level) / 2, 1 - (1 - level) / 2
    if conc.ndim == 2:
        return special.betaincinv(a, b, q_lo), special.betaincinv(a, b, q_hi)
    log_norm = special.betaln(a, b)

    def mixture_quantile(q):
        components = special.betaincinv(a, b, q)
        lo, hi = components.min(axis=-1), components.max(axis=-1)
        x = components.mean(axis=-1)
        for _ in range(max_iterations):
            xe = np.clip(x, 1e-300, 1 - 1e-16)[..., None]
            f = special.betainc(a, b, xe).mean(axis=-1) - q
            lo = np.where(f < 0, x, lo)
            hi = np.where(f < 0, hi, x)
            pdf = np.exp((a - 1) * np.log(xe) + (b - 1) * np.log1p(-xe) - log_norm).mean(axis=-1)
            with np.errstate(divide="ignore", invalid="ignore"):
                newton = x - f / pdf
            inside = np.isfinite(newton) & (newton >= lo) & (newton <= hi)
            new = np.where(inside, newton, (lo + hi) / 2)
            if np.max(np.abs(new - x)) < tol:
                return new
            x = new
        return x

    return mixture_quantile(q_lo), mixture_quantile(q_hi)


def prob_asked(fractions: np.ndarray, schema: Schema) -> np.ndarray:
    """(N, Q) probability that a volunteer is asked each question: the product of the fractions of
    the answers on the path from the root. ``fractions`` is (N, A), e.g. expected vote fractions."""
    fractions = np.asarray(fractions, dtype=np.float64)
    out = np.ones((fractions.shape[0], schema.n_questions))
    index = {q.name: i for i, q in enumerate(schema.questions)}
    for q in schema.question_order():
        if q.asked_after is None:
            continue
        parent = schema.answer(q.asked_after)
        out[:, index[q.name]] = out[:, index[parent.question]] * fractions[:, parent.index]
    return out


def mask_unlikely_questions(fractions: np.ndarray, schema: Schema, threshold: float = 0.5) -> np.ndarray:
    """Copy of (N, A) fractions with NaN for the answers of questions asked with probability < threshold."""
    p = prob_asked(fractions, schema)
    answer_q = schema.answer_question_index()  # (A,)
    out = np.array(fractions, dtype=np.float64, copy=True)
    out[p[:, answer_q] < threshold] = np.nan
    return out


SCALE_BOUNDS = (0.05, 20.0)  # the factors fit_concentration_scale may choose


def fit_concentration_scale(samples: np.ndarray, counts: np.ndarray, schema: Schema, min_galaxies: int = 30,
                            bounds: tuple[float, float] = SCALE_BOUNDS) -> np.ndarray:
    """Per question, the factor ``k`` by which to multiply the predicted concentrations so that held-out
    votes are most likely: temperature scaling for a Dirichlet-multinomial head, fitted on votes alone.

    A model that is too sure of itself predicts concentrations that are too large, so its credible
    intervals are too narrow (``k < 1`` widens them; vote fractions alpha_a / A_q do not change). For each
    question, the log-likelihood of the observed ``counts`` (N, A) under the equal-weight mixture of the
    MC-dropout ``samples`` (N, A, S) scaled by ``k`` is maximised over log k in ``bounds`` (Brent's bounded
    search). Questions answered for fewer than ``min_galaxies`` galaxies take the factor fitted on all
    questions together (1 with no votes at all). Returns (n_questions,) factors.
    """
    from scipy.optimize import minimize_scalar

    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim == 2:
        samples = samples[..., None]
    counts = np.asarray(counts, dtype=np.float64)
    parts = []  # per question: (votes, samples, vote totals) of the galaxies that were asked it
    for q in schema.questions:
        c = counts[:, q.start:q.end]
        rows = c.sum(axis=1) > 0
        parts.append((c[rows][:, :, None], samples[rows, q.start:q.end], c[rows].sum(axis=1)[:, None]))

    def loglik(log_k: float, qs) -> float:  # terms constant in k (the multinomial coefficient) left out
        total = 0.0
        for c, a, n in (parts[i] for i in qs):
            ak = a * np.exp(log_k)
            a0 = ak.sum(axis=1)
            log_p = special.gammaln(a0) - special.gammaln(n + a0) + (special.gammaln(c + ak)
                                                                    - special.gammaln(ak)).sum(axis=1)
            total += special.logsumexp(log_p, axis=-1).sum()
        return total

    def best(qs) -> float:
        r = minimize_scalar(lambda v: -loglik(v, qs), bounds=np.log(bounds), method="bounded",
                            options={"xatol": 1e-3})
        return float(np.exp(r.x))

    asked = np.array([len(n) for _, _, n in parts])
    joint = best([i for i in range(len(parts)) if asked[i]]) if asked.any() else 1.0
    return np.array([best([i]) if asked[i] >= min_galaxies else joint for i in range(len(parts))])
