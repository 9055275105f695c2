"""Volunteer votes over a decision tree: Zoobot's Dirichlet-multinomial task.

Labels are raw vote counts, one column per answer of the schema (``smooth-or-featured_smooth``...).
The head outputs Dirichlet concentrations in (1, 101); the loss is the Dirichlet-multinomial negative
log-likelihood summed over questions, with unasked questions contributing exactly nothing.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from zoobot_tf.schemas import Schema, get_schema, schemas_with_columns
from zoobot_tf.tasks.base import Task, register_task


@register_task
class VoteTask(Task):
    """Dirichlet-multinomial over ``schema`` (a Schema, a built-in name, a dict or a YAML/JSON path)."""

    name = "votes"
    output_name = "concentrations"
    monitor = "val_nll"  # exact mean loss per galaxy over real galaxies (losses.TotalLoss)
    tfds_label = "votes"
    label_values = "counts"
    fixed_label_columns = True  # the schema's answer columns
    minimum, maximum = 1.0, 101.0  # concentration range of the head (Zoobot: sigmoid(x) * 100 + 1)
    # from Keras' initialisation a head predicts ~51 for every answer, far from the votes' no-image baseline, and
    # with few labels a finetuned head spent them getting back to it (benchmarks/vote_head_start.py)
    finetune_from_prior = True

    def __init__(self, schema: Schema | str | Mapping = "gz_decals_dr5",
                 concentration_scale: Sequence[float] | None = None):
        """``concentration_scale``: per question, the factor applied to the predicted concentrations when
        credible intervals are computed (fitted on held-out votes by :func:`zoobot_tf.evaluate.calibrate`;
        None: intervals straight from the head)."""
        self.schema = get_schema(schema)
        self.concentration_scale = None
        if concentration_scale is not None:
            scale = np.asarray(concentration_scale, dtype=np.float64)
            if scale.shape != (self.schema.n_questions,) or not np.all(np.isfinite(scale) & (scale > 0)):
                raise ValueError(f"concentration_scale must be {self.schema.n_questions} positive numbers, one per "
                                 f"question of {self.schema.name!r}. Received: {list(np.ravel(scale))}")
            self.concentration_scale = [float(v) for v in scale]

    @classmethod
    def for_catalog(cls, catalog, columns=None, schema=None, **options) -> "VoteTask":
        """``schema`` None: the one built-in tree whose every answer column the catalog has (several that fit,
        e.g. DR5, DR8 and DESI, which share their columns but not which question follows which, or none: an
        error that says so)."""
        return cls(schema if schema is not None else schema_of_catalog(catalog))

    def get_config(self) -> dict:
        config = {"name": self.name, "schema": self.schema.to_dict()}
        if self.concentration_scale is not None:
            config["concentration_scale"] = list(self.concentration_scale)
        return config

    def answer_scale(self) -> np.ndarray:
        """(n_answers,) the concentration scale of each answer's question (ones when not calibrated)."""
        if self.concentration_scale is None:
            return np.ones(self.schema.n_answers)
        return np.asarray(self.concentration_scale)[self.schema.answer_question_index()]

    def __repr__(self) -> str:
        return f"VoteTask({self.schema.name!r}: {self.schema.n_questions} questions, {self.schema.n_answers} answers)"

    # ------------------------------------------------------------------ the head
    @property
    def output_labels(self) -> list[str]:
        return self.schema.label_cols

    def output_layer(self):
        from zoobot_tf.models.heads import DirichletConcentration

        return DirichletConcentration(self.minimum, self.maximum, name=self.output_name)

    def loss(self):
        from zoobot_tf.losses import DirichletMultinomialLoss

        return DirichletMultinomialLoss(self.schema.question_index_groups)

    def metrics(self) -> list:
        from zoobot_tf.losses import question_loss_metrics

        return question_loss_metrics(self.schema)

    def prior(self, labels: np.ndarray) -> np.ndarray:
        """Mean training vote fractions x a maximum-likelihood concentration per question."""
        from zoobot_tf.evaluate import fit_baseline

        return fit_baseline(labels, self.schema)

    def head_bias(self, prior: np.ndarray) -> np.ndarray:
        lo, hi = self.minimum, self.maximum
        p = (np.clip(prior, lo + 1e-2, hi - 1e-2) - lo) / (hi - lo)
        return np.log(p / (1 - p))

    # ------------------------------------------------------------------ labels
    def label_columns(self, columns: Sequence[str] | None = None) -> list[str]:
        return self.schema.label_cols

    def validate_catalog(self, catalog: pd.DataFrame, columns=None, require_files: bool = True) -> None:
        from zoobot_tf.data.catalogs import validate_catalog

        validate_catalog(catalog, schema=self.schema, values=self.label_values, require_files=require_files)

    def example_features(self, label) -> dict:
        import tensorflow as tf

        return {"votes": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in label]))}

    def feature_spec(self) -> dict:
        import tensorflow as tf

        return {"votes": tf.io.FixedLenFeature([self.schema.n_answers], tf.int64)}

    def parse(self, example):
        import tensorflow as tf

        return tf.cast(example["votes"], tf.float32)

    # ------------------------------------------------------------------ outputs
    def table(self, ids, samples: np.ndarray, interval: float = 0.9, asked_threshold: float = 0.5) -> pd.DataFrame:
        """Per answer: ``<question>_<answer>_fraction`` (expected vote fraction over samples) with a
        ``interval`` credible interval (``_lower``/``_upper``: Beta-mixture quantiles), and per question
        ``<question>_prob_asked``; fractions of questions asked with probability < ``asked_threshold`` are
        left empty."""
        from zoobot_tf import stats

        schema = self.schema
        frac = stats.expected_vote_fractions(samples, schema)
        scale = self.answer_scale()
        scaled = np.asarray(samples, np.float64) * (scale[:, None] if np.ndim(samples) == 3 else scale)
        lower, upper = stats.beta_intervals(scaled, schema, level=interval)
        p_asked = stats.prob_asked(frac, schema)
        hidden = p_asked[:, schema.answer_question_index()] < asked_threshold
        cols = {"id_str": list(ids)}
        for a in schema.answers:
            for suffix, values in (("fraction", frac), ("fraction_lower", lower), ("fraction_upper", upper)):
                cols[f"{a.label}_{suffix}"] = np.where(hidden[:, a.index], np.nan, values[:, a.index])
        for qi, q in enumerate(schema.questions):
            cols[f"{q.name}_prob_asked"] = p_asked[:, qi]
        return pd.DataFrame(cols)

    def chart(self, output, label=None, max_questions: int = 4):
        """The first questions that volunteers were asked (observed votes; without labels: likely to be asked),
        each with its answers' predicted and observed vote fractions."""
        from zoobot_tf import stats

        predicted = stats.expected_vote_fractions(np.asarray(output, np.float64)[None], self.schema)[0]
        if label is not None:
            observed = stats.vote_fractions_from_counts(np.asarray(label, np.float64)[None], self.schema)[0]
            asked = [q for q in self.schema.questions if np.nansum(label[q.start:q.end]) > 0]
        else:
            observed = np.full_like(predicted, np.nan)
            p_asked = stats.prob_asked(predicted[None], self.schema)[0]
            asked = [q for i, q in enumerate(self.schema.questions) if p_asked[i] >= 0.5]
        return [(q.name, [(a.text, float(predicted[a.index]), float(observed[a.index])) for a in q.answers])
                for q in asked[:max_questions]]

    def categories(self, outputs) -> pd.DataFrame:
        """The most likely answer of each question, or ``-`` where volunteers would probably not be asked."""
        from zoobot_tf import stats

        frac = stats.expected_vote_fractions(np.asarray(outputs, np.float64), self.schema)
        p_asked = stats.prob_asked(frac, self.schema)
        cols = {}
        for qi, q in enumerate(self.schema.questions):
            best = np.asarray(q.answer_texts, dtype=object)[frac[:, q.start:q.end].argmax(axis=1)]
            cols[q.name] = np.where(p_asked[:, qi] >= 0.5, best, "-")
        return pd.DataFrame(cols)

    def serving_outputs(self, outputs) -> dict:
        import tensorflow as tf

        m = self.schema.answer_to_question_matrix()
        same_question = tf.constant(m @ m.T, tf.float32)  # (A, A): 1 where two answers share a question
        return {"concentrations": outputs, "vote_fractions": outputs / tf.matmul(outputs, same_question)}

    @property
    def serving_output_names(self) -> list[str]:
        return ["concentrations", "vote_fractions"]

    def evaluate(self, labels, outputs, prior=None) -> pd.DataFrame:
        from zoobot_tf.evaluate import vote_metrics

        return vote_metrics(labels, outputs, self.schema, baseline=prior)

    def metadata(self) -> dict:
        return {**super().metadata(), "schema": self.schema.to_dict(), "label_cols": self.schema.label_cols}


def schema_of_catalog(catalog: pd.DataFrame) -> str:
    """The name of the only built-in decision tree whose every answer column is in ``catalog``."""
    from zoobot_tf.data.catalogs import CatalogError

    fits = schemas_with_columns(catalog.columns)
    if len(fits) == 1:
        return fits[0]
    if fits:
        raise CatalogError(f"The catalog has every answer column of {', '.join(fits)}, whose decision trees "
                           f"differ; give the one its votes were collected with as the schema (--schema).")
    raise CatalogError("The catalog has the answer columns of no built-in decision tree; give its tree as the "
                       "schema (--schema: a built-in name or a YAML/JSON file).")
