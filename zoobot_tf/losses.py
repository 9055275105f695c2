"""Dirichlet-multinomial loss over a decision tree, and the per-question loss metric.

Per galaxy and question q with vote counts k (N_q = sum k) and predicted concentrations alpha:

    log p(k | N_q, alpha) = lgamma(A) + lgamma(N_q + 1) - lgamma(N_q + A)
                            + sum_a [lgamma(k_a + alpha_a) - lgamma(alpha_a) - lgamma(k_a + 1)],  A = sum alpha

The loss is ``-sum_q log p``. A question with N_q = 0 (not asked, or another campaign's column)
contributes exactly zero loss and zero gradient, so no masks are needed anywhere.

Everything here is computed in float32, whatever the model's compute dtype (mixed precision).
The Keras loss returns one value per galaxy and lets Keras reduce it: dividing by the number of
replicas by hand double-scales under Keras 3 (REFERENCE section 3).
"""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from zoobot_tf.ops import fast
from zoobot_tf.schemas import Schema, get_schema, question_matrix

IndexGroups = Sequence[Sequence[int]]


def _groups(schema_or_groups) -> list[tuple[int, int]]:
    if isinstance(schema_or_groups, (Schema, str)):
        return get_schema(schema_or_groups).question_index_groups
    return [(int(s), int(e)) for s, e in schema_or_groups]


def question_log_likelihood(counts: tf.Tensor, concentrations: tf.Tensor) -> tf.Tensor:
    """Dirichlet-multinomial log-likelihood of one question.

    Args:
        counts: (batch, n_answers) vote counts (exact integers, any numeric dtype).
        concentrations: (batch, n_answers) alpha > 0.
    Returns:
        (batch,) float32 log p; exactly 0 (with zero gradient) where the question has no votes.
    """
    counts = tf.cast(counts, tf.float32)
    concentrations = tf.cast(concentrations, tf.float32)
    total = tf.reduce_sum(counts, axis=-1)
    asked = total > 0
    # validate_args stays off: it rejects counts that are not exact integers in float, which
    # the caller guarantees; the catalog validation checks integrality once, up front.
    # imported here, not with the module: only the stock path and tests use it, and importing it costs every
    # process ~50 MB of memory and a second Keras (tfp imports tf-keras)
    import tensorflow_probability as tfp

    log_p = tfp.distributions.DirichletMultinomial(total_count=total, concentration=concentrations).log_prob(counts)
    return tf.where(asked, log_p, tf.zeros_like(log_p))


def per_question_nll(counts: tf.Tensor, concentrations: tf.Tensor, schema_or_groups) -> tf.Tensor:
    """(batch, n_questions) negative log-likelihood of each question, float32.

    On the fast path (:func:`zoobot_tf.ops.fast`) every question at once: the closed form above with the
    per-question sums as products with a 0/1 answer-to-question matrix, ~20 graph ops for any tree instead of ~26 per
    question through ``tfp.distributions.DirichletMultinomial`` (the stock path, one question at a time),
    which the same terms in the same float32 arithmetic (``lbeta`` is a sum of ``lgamma``) compute.
    """
    groups = _groups(schema_or_groups)
    if fast():
        return _per_question_nll_at_once(counts, concentrations, groups)
    return tf.stack(
        [-question_log_likelihood(counts[:, s:e], concentrations[:, s:e]) for s, e in groups], axis=-1
    )


def _per_question_nll_at_once(counts, concentrations, groups: list[tuple[int, int]]) -> tf.Tensor:
    k = tf.cast(counts, tf.float32)
    a = tf.cast(concentrations, tf.float32)
    width = k.shape[-1]
    if width is None:  # an unknown label width: the columns up to the last group's end
        width = max(e for _, e in groups)
        k, a = k[..., :width], a[..., :width]
    to_question = tf.constant(question_matrix(groups, width))
    per_answer = tf.math.lgamma(k + a) - tf.math.lgamma(a) - tf.math.lgamma(k + 1.0)
    total, big_a, answer_terms = (tf.matmul(x, to_question) for x in (k, a, per_answer))
    log_p = tf.math.lgamma(big_a) + tf.math.lgamma(total + 1.0) - tf.math.lgamma(total + big_a) + answer_terms
    return tf.where(total > 0, -log_p, tf.zeros_like(log_p))


def dirichlet_multinomial_nll(counts: tf.Tensor, concentrations: tf.Tensor, schema_or_groups) -> tf.Tensor:
    """(batch,) negative log-likelihood of all votes of each galaxy (summed over questions), float32."""
    return tf.reduce_sum(per_question_nll(counts, concentrations, schema_or_groups), axis=-1)


@keras.saving.register_keras_serializable(package="zoobot_tf")
class DirichletMultinomialLoss(keras.losses.Loss):
    """Keras loss: y_true = vote counts (batch, n_answers), y_pred = concentrations (batch, n_answers).

    Returns per-galaxy losses; Keras averages them over the batch ("sum_over_batch_size"), using
    sample weights when given (the pipeline uses them to pad partial batches with zero-weight rows).
    """

    def __init__(self, question_index_groups: IndexGroups, name: str = "dirichlet_multinomial",
                 reduction: str = "sum_over_batch_size", **kwargs):
        kwargs.pop("dtype", None)
        super().__init__(name=name, reduction=reduction, dtype="float32", **kwargs)
        self.question_index_groups = _groups(question_index_groups)

    def call(self, y_true, y_pred):
        return dirichlet_multinomial_nll(y_true, y_pred, self.question_index_groups)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction,
                "question_index_groups": [list(g) for g in self.question_index_groups]}


def real_rows(sample_weight):
    """Sample weights -> 1 for real galaxies, 0 for padding rows.

    The pipeline weights real rows of a padded batch by ``batch / n_real`` so the *loss* is the mean
    over real galaxies; metrics accumulate over many batches and must count every galaxy once.
    """
    if sample_weight is None:
        return None
    return tf.cast(tf.convert_to_tensor(sample_weight) > 0, tf.float32)


_SHARED: dict = {}


def _shared_per_question_nll(y_true, y_pred, groups) -> tf.Tensor:
    """per_question_nll, computed once per (labels, predictions) pair in a traced step.

    Keras updates each metric separately with the same tensors; without sharing, every per-question
    metric and the total would rebuild the Dirichlet-multinomial graph (11 copies per step to trace).
    """
    if tf.executing_eagerly():
        return per_question_nll(y_true, y_pred, groups)
    graph = tf.compat.v1.get_default_graph()
    key = (id(graph), id(y_true), id(y_pred), tuple(groups))
    if _SHARED.get("graph") is not graph:
        _SHARED.clear()
        _SHARED["graph"] = graph
    if key not in _SHARED:
        _SHARED[key] = (per_question_nll(y_true, y_pred, groups), y_true, y_pred)  # keep the tensors alive
    return _SHARED[key][0]


@keras.saving.register_keras_serializable(package="zoobot_tf")
class QuestionLoss(keras.metrics.Mean):
    """Mean Dirichlet-multinomial loss of one question over all galaxies seen (padding rows excluded).

    Galaxies where the question was not asked count with loss 0, so the per-question losses add up
    to the total loss. Built on ``keras.metrics.Mean``, whose sum/count variables are aggregated
    across replicas, so the value is the same under any distribution strategy.
    """

    def __init__(self, question: str, start: int, end: int, question_index_groups: IndexGroups | None = None,
                 name: str | None = None, **kwargs):
        kwargs.pop("dtype", None)
        super().__init__(name=name or f"loss_{question}", dtype="float32", **kwargs)
        self.question, self.start, self.end = question, int(start), int(end)
        # with the schema's groups, all questions' losses are computed once per step and shared
        self.question_index_groups = _groups(question_index_groups) if question_index_groups else None

    def update_state(self, y_true, y_pred, sample_weight=None):
        if self.question_index_groups:
            column = self.question_index_groups.index((self.start, self.end))
            values = _shared_per_question_nll(y_true, y_pred, self.question_index_groups)[:, column]
        else:
            values = -question_log_likelihood(y_true[:, self.start:self.end], y_pred[:, self.start:self.end])
        return super().update_state(values, sample_weight=real_rows(sample_weight))

    def get_config(self):
        groups = [list(g) for g in self.question_index_groups] if self.question_index_groups else None
        return {"question": self.question, "start": self.start, "end": self.end, "name": self.name,
                "question_index_groups": groups}


@keras.saving.register_keras_serializable(package="zoobot_tf")
class TotalLoss(keras.metrics.Mean):
    """Mean Dirichlet-multinomial loss per galaxy (all questions), exact over real galaxies.

    Keras' own ``loss`` log weights every batch by its full size, so a padded last batch counts a
    little too much; this metric does not, and is what checkpoints and early stopping monitor.
    """

    def __init__(self, question_index_groups: IndexGroups, name: str = "nll", **kwargs):
        kwargs.pop("dtype", None)
        super().__init__(name=name, dtype="float32", **kwargs)
        self.question_index_groups = _groups(question_index_groups)

    def update_state(self, y_true, y_pred, sample_weight=None):
        values = tf.reduce_sum(_shared_per_question_nll(y_true, y_pred, self.question_index_groups), axis=-1)
        return super().update_state(values, sample_weight=real_rows(sample_weight))

    def get_config(self):
        return {"name": self.name, "question_index_groups": [list(g) for g in self.question_index_groups]}


def question_loss_metrics(schema: Schema) -> list[keras.metrics.Metric]:
    """The total loss (``nll``) and one :class:`QuestionLoss` per question of the schema."""
    groups = schema.question_index_groups
    return [TotalLoss(groups)] + [QuestionLoss(q.name, q.start, q.end, groups) for q in schema.questions]


@keras.saving.register_keras_serializable(package="zoobot_tf")
class PaddedAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """Sparse categorical accuracy that counts each real galaxy once (padding rows excluded)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, y_pred, sample_weight=real_rows(sample_weight))


@keras.saving.register_keras_serializable(package="zoobot_tf")
class PaddedMAE(keras.metrics.MeanAbsoluteError):
    """Mean absolute error that counts each real galaxy once (padding rows excluded)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, y_pred, sample_weight=real_rows(sample_weight))


@keras.saving.register_keras_serializable(package="zoobot_tf")
class SmoothedSparseCrossEntropy(keras.losses.Loss):
    """Cross-entropy of class indices against probabilities, with label smoothing (as PyTorch's
    ``cross_entropy(label_smoothing=e)``: the target puts 1 - e on the true class and e / n_classes on every
    class). Keras' sparse cross-entropy has no smoothing. Float32; one value per galaxy."""

    def __init__(self, n_classes: int, label_smoothing: float = 0.1, name: str = "cross_entropy", **kwargs):
        kwargs.pop("dtype", None)
        super().__init__(name=name, dtype="float32", **kwargs)
        self.n_classes, self.label_smoothing = int(n_classes), float(label_smoothing)

    def call(self, y_true, y_pred):
        target = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), self.n_classes, dtype=tf.float32)
        target = target * (1.0 - self.label_smoothing) + self.label_smoothing / self.n_classes
        log_p = tf.math.log(tf.clip_by_value(tf.cast(y_pred, tf.float32), 1e-7, 1.0))
        return -tf.reduce_sum(target * log_p, axis=-1)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction, "n_classes": self.n_classes,
                "label_smoothing": self.label_smoothing}
