"""Evaluate vote predictions the way the GZ DECaLS paper does, against a no-image baseline.

Per question: the Dirichlet-multinomial loss (mean over all galaxies, so the questions add up to
the total); the accuracy of the most-voted answer on galaxies where at least half the volunteers
were asked the question (and on "confident" galaxies, where one answer has > 80% of the votes);
and the mean absolute error of the vote fractions on the same galaxies.

The baseline predicts the same vote fractions for every galaxy: the training set's mean fractions,
with a concentration fitted by maximum likelihood per question. A model that learned anything
from the images must beat it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from zoobot_tf import losses, stats
from zoobot_tf.models.traced import inference_fn
from zoobot_tf.schemas import Schema


def predict_batches(model, dataset: tf.data.Dataset, fn=None) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` (inference mode; or ``fn``, images -> outputs) over ``(images, labels, weights)`` batches.

    Returns (outputs, labels) for the real rows only (padding rows, weight 0, are dropped).
    """
    step = fn or inference_fn(model)

    outputs, labels = [], []
    for x, y, w in dataset:
        keep = w.numpy() > 0
        outputs.append(np.asarray(step(x))[keep])
        labels.append(y.numpy()[keep])
    return np.concatenate(outputs), np.concatenate(labels)


def calibrate(model, data, split: str = "val", n_samples: int = 5, batch_size: int = 64,
              seed: int = 0) -> np.ndarray:
    """Fit a vote model's credible intervals on held-out votes (a validation split, never the test one):
    per question, the concentration scale that makes the observed votes most likely under ``n_samples``
    MC-dropout passes, as ``predict`` draws them (:func:`stats.fit_concentration_scale`). ``data``: a
    tf.data set of ``(images, votes, weights)`` batches, or anything ``open_source`` takes (a catalog with
    vote columns, shards, ``tfds:...``), of which ``split`` is used. Stored on ``model.task`` (saved with the
    model and its exports) and returned."""
    from zoobot_tf.data.sources import open_source
    from zoobot_tf.predictions import sample_fn

    if not hasattr(model.task, "concentration_scale"):
        raise ValueError(f"calibrate fits the credible intervals of vote models (Dirichlet-multinomial heads); "
                         f"this model's task is {model.task!r}.")
    dataset = data if isinstance(data, tf.data.Dataset) else \
        open_source(data, model.task).dataset(split, batch_size, model.load_size)
    run, seen = sample_fn(model, n_samples), [0]

    def draw(images):  # galaxies keyed by their place in the split
        keys = tf.range(seen[0], seen[0] + tf.shape(images)[0], dtype=tf.int64)
        seen[0] += int(images.shape[0])
        return run(images, keys, tf.constant(seed, tf.int64))[0]

    samples, labels = predict_batches(model, dataset, fn=draw)
    scale = stats.fit_concentration_scale(samples, labels, model.task.schema)
    model.task.concentration_scale = [float(v) for v in scale]
    return scale


def root_totals(counts: np.ndarray, schema: Schema) -> np.ndarray:
    """(N,) number of volunteers who saw each galaxy: the most votes on any always-asked question."""
    totals = stats.question_totals_from_counts(counts, schema)
    roots = [i for i, q in enumerate(schema.questions) if q.asked_after is None]
    return totals[:, roots].max(axis=1)


# A question whose galaxies have one vote each (a class label: GZ1's class, a flag) has a likelihood that
# does not depend on the concentrations' scale, only on their ratios; its baseline takes this scale for the
# largest answer, inside the head's responsive range (heads.py: 1 to 101), not the smallest on the grid,
# which would start the head's sigmoid saturated at its floor, where it hardly learns.
ONE_VOTE_SCALE = 10.0


def fit_baseline(train_counts: np.ndarray, schema: Schema) -> np.ndarray:
    """(n_answers,) constant concentrations: mean training fractions x a per-question ML concentration
    (the scale chosen on a log grid by the Dirichlet-multinomial likelihood of the training votes; for a
    question answered by one vote per galaxy, where the likelihood leaves the scale free, the largest
    concentration is :data:`ONE_VOTE_SCALE`)."""
    from scipy.special import gammaln

    counts = np.asarray(train_counts, dtype=np.float64)
    alpha = np.ones(schema.n_answers)
    grid = np.logspace(-1, 3, 161)
    for s, e in schema.question_index_groups:
        k = counts[:, s:e]
        k = k[k.sum(1) > 0]
        if len(k) == 0:
            continue
        mean = (k.sum(0) + 1e-3) / (k.sum() + 1e-3 * (e - s))
        if k.sum(1).max() <= 1:
            alpha[s:e] = ONE_VOTE_SCALE * mean / mean.max()
            continue
        candidates = grid[:, None] * mean[None, :]  # (G, A_q)
        n = k.sum(1)
        # the terms of -log p that depend on alpha, summed over galaxies (the multinomial coefficient does not)
        nll = [-(gammaln(c.sum()) * len(k) - gammaln(n + c.sum()).sum() + (gammaln(k + c) - gammaln(c)).sum())
               for c in candidates]
        alpha[s:e] = candidates[int(np.argmin(nll))]
    return alpha


def vote_metrics(counts: np.ndarray, concentrations: np.ndarray, schema: Schema,
                 baseline: np.ndarray | None = None, asked_threshold: float = 0.5,
                 confident_threshold: float = 0.8) -> pd.DataFrame:
    """One row per question (plus ``total``): loss, accuracy, confident accuracy and fraction MAE,
    for the model and (if given) the constant ``baseline`` concentrations."""
    counts = np.asarray(counts, dtype=np.float64)
    observed = stats.vote_fractions_from_counts(counts, schema)
    q_totals = stats.question_totals_from_counts(counts, schema)
    asked = q_totals / np.maximum(root_totals(counts, schema), 1)[:, None] >= asked_threshold
    preds = {"model": np.asarray(concentrations, dtype=np.float64)}
    if baseline is not None:
        preds["baseline"] = np.tile(np.asarray(baseline, dtype=np.float64), (len(counts), 1))
    rows = []
    per_q_loss = {k: losses.per_question_nll(counts, v, schema).numpy() for k, v in preds.items()}
    fractions = {k: stats.expected_vote_fractions(v, schema) for k, v in preds.items()}
    for qi, q in enumerate(schema.questions):
        m = asked[:, qi]
        obs = observed[m, q.start:q.end]
        confident = obs.max(axis=1) > confident_threshold if m.any() else np.zeros(0, bool)
        row = {"question": q.name, "n_asked": int(m.sum()), "n_confident": int(confident.sum())}
        for k in preds:
            pred = fractions[k][m, q.start:q.end]
            correct = np.argmax(pred, 1) == np.argmax(obs, 1) if m.any() else np.zeros(0, bool)
            prefix = "" if k == "model" else "baseline_"
            row[f"{prefix}loss"] = float(per_q_loss[k][:, qi].mean())
            row[f"{prefix}accuracy"] = float(correct.mean()) if m.any() else np.nan
            row[f"{prefix}confident_accuracy"] = float(correct[confident].mean()) if confident.any() else np.nan
            row[f"{prefix}fraction_mae"] = float(np.abs(pred - obs).mean()) if m.any() else np.nan
        rows.append(row)
    df = pd.DataFrame(rows)
    total = {"question": "total", "n_asked": int(len(counts)), "n_confident": int(df["n_confident"].sum())}
    galaxy_loss = per_q_loss["model"].sum(axis=1)  # the test set's own noise: the standard error of its mean
    total["loss_sem"] = float(galaxy_loss.std(ddof=1) / np.sqrt(len(galaxy_loss))) if len(galaxy_loss) > 1 else np.nan
    for col in df.columns:
        if col.endswith("loss"):
            total[col] = float(df[col].sum())
        elif col not in total:
            total[col] = float(np.nanmean(df[col])) if df[col].notna().any() else np.nan
    return pd.concat([df, pd.DataFrame([total])], ignore_index=True)


def format_table(df: pd.DataFrame) -> str:
    cols = [c for c in ["question", "n_asked", "loss", "baseline_loss", "accuracy", "baseline_accuracy",
                        "confident_accuracy", "fraction_mae", "baseline_fraction_mae"] if c in df.columns]
    return df[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}")
