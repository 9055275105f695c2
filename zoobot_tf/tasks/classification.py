"""Classification: one label per galaxy out of N named classes (rings, GZ1 classes, Galaxy10...)."""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from zoobot_tf.tasks.base import Task, register_task

log = logging.getLogger(__name__)

COLLAPSE_SHARE = 0.95  # predictions this concentrated on one class, with several true classes: collapsed


def infer_class_names(values: pd.Series) -> list[str]:
    """The sorted distinct labels of a catalog column, as strings."""
    return [str(c) for c in sorted(pd.unique(values.dropna()), key=lambda v: (str(type(v)), v))]


def mirror_pairs(value, class_names: Sequence[str] | None = None) -> list[list[str]] | None:
    """The class pairs a left-right mirror image swaps, checked against ``class_names`` (if given): from None
    (not known), pairs (``[("clockwise", "anticlockwise")]``, ``{"clockwise": "anticlockwise"}``, or
    ``"a:b,c:d"``), or none (``[]`` or ``""``: every class is its own mirror image)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [part.split(":") for part in value.replace(" ", "").split(",") if part]
    pairs = [list(map(str, pair)) for pair in (value.items() if isinstance(value, Mapping) else value)]
    seen = []
    for pair in pairs:
        if len(pair) != 2 or pair[0] == pair[1]:
            raise ValueError(f"mirror pairs are two different classes, 'a:b'. Received: {':'.join(pair)!r}")
        unknown = [c for c in pair if class_names is not None and c not in class_names]
        if unknown:
            raise ValueError(f"mirror pair {':'.join(pair)!r} names classes the task does not have: {unknown}; "
                             f"its classes: {list(class_names)}")
        twice = [c for c in pair if c in seen]
        if twice:
            raise ValueError(f"class {twice[0]!r} is in more than one mirror pair. Received: {pairs}")
        seen += pair
    return pairs


@register_task
class ClassificationTask(Task):
    """Softmax over ``class_names`` (or ``n_classes`` unnamed classes ``"0".."N-1"``).

    ``mirror``: how a left-right mirror image changes the labels, when known: the class pairs it swaps (GZ1:
    ``[("clockwise_spiral", "anticlockwise_spiral")]``), or ``[]`` when it changes none. A model of such a task
    predicts the average of each galaxy and its mirror image (the pairs swapped back). None: not known.
    """

    name = "classification"
    output_name = "probabilities"
    monitor = "val_loss"
    label_dtype = "int32"
    tfds_label = "label"
    label_values = "labels"

    def __init__(self, class_names: Sequence[str] | None = None, n_classes: int | None = None,
                 label_smoothing: float = 0.0, mirror=None):
        if class_names is not None:
            class_names = [str(c) for c in class_names]
            if n_classes is not None and n_classes != len(class_names):
                raise ValueError(f"n_classes={n_classes} does not match {len(class_names)} class_names")
            if len(set(class_names)) != len(class_names):
                raise ValueError(f"class_names has duplicates. Received: class_names={class_names}")
        elif n_classes is not None:
            class_names = [str(i) for i in range(int(n_classes))]
        if not class_names or len(class_names) < 2:
            raise ValueError(f"A classification head needs at least 2 classes. Received: class_names={class_names}, "
                             f"n_classes={n_classes}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1). Received: label_smoothing={label_smoothing}")
        self.class_names = list(class_names)
        self.label_smoothing = float(label_smoothing)
        self.mirror = mirror_pairs(mirror, self.class_names)

    @classmethod
    def for_catalog(cls, catalog, columns=None, class_names=None, label_smoothing: float = 0.0,
                    **options) -> "ClassificationTask":
        """The classes of the catalog's label column (sorted), unless ``class_names`` are given."""
        if class_names is None:
            if not columns:
                raise ValueError("A classification task needs the catalog's label column (--label_cols).")
            column = columns if isinstance(columns, str) else list(columns)[0]
            class_names = infer_class_names(catalog[column])
        return cls(class_names=class_names, label_smoothing=label_smoothing)

    def get_config(self) -> dict:
        config = {"name": self.name, "class_names": list(self.class_names)}
        if self.label_smoothing:
            config["label_smoothing"] = self.label_smoothing
        if self.mirror is not None:
            config["mirror"] = [list(pair) for pair in self.mirror]
        return config

    def __repr__(self) -> str:
        mirror = "" if self.mirror is None else f", mirror={self.mirror}"
        return f"ClassificationTask({self.class_names}{mirror})"

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def mirror_permutation(self) -> list[int] | None:
        if self.mirror is None:
            return None
        swap = {a: b for pair in self.mirror for a, b in (pair, pair[::-1])}
        return [self.class_names.index(swap.get(c, c)) for c in self.class_names]

    # ------------------------------------------------------------------ the head
    @property
    def output_labels(self) -> list[str]:
        return list(self.class_names)

    def output_layer(self):
        from keras import layers

        return layers.Activation("softmax", dtype="float32", name=self.output_name)

    def loss(self):
        import keras

        if self.label_smoothing:
            from zoobot_tf.losses import SmoothedSparseCrossEntropy

            return SmoothedSparseCrossEntropy(self.n_classes, self.label_smoothing)
        return keras.losses.SparseCategoricalCrossentropy(name="cross_entropy")

    def metrics(self) -> list:
        from zoobot_tf.losses import PaddedAccuracy

        return [PaddedAccuracy(name="accuracy")]

    def prior(self, labels: np.ndarray) -> np.ndarray:
        counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=self.n_classes)
        return (counts + 1.0) / (counts.sum() + self.n_classes)  # class frequencies, add-one smoothed

    def head_bias(self, prior: np.ndarray) -> np.ndarray:
        prior = np.asarray(prior, dtype=np.float64)
        return np.log(np.clip(prior / prior.sum(), 1e-6, None))

    # ------------------------------------------------------------------ labels
    def label_columns(self, columns=None) -> list[str]:
        columns = super().label_columns(columns)
        if len(columns) != 1:
            raise ValueError(f"Classification reads exactly one label column. Received: {columns}")
        return columns

    def encode(self, catalog: pd.DataFrame, columns=None) -> np.ndarray:
        """Class names (or indices 0..N-1) in one column -> int32 class indices."""
        return self.indices(catalog[self.label_columns(columns)[0]])

    def indices(self, values: pd.Series) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.class_names)}
        as_str = values.astype(str)
        if as_str.isin(index).all():
            return as_str.map(index).to_numpy(np.int32)
        numeric = pd.to_numeric(values, errors="coerce")
        integral = numeric.notna().all() and (numeric == numeric.round()).all()
        if integral and numeric.between(0, self.n_classes - 1).all():
            return numeric.to_numpy(np.int32)
        unknown = sorted(set(as_str) - set(index))
        raise ValueError(f"Labels are neither among class_names {self.class_names} nor class indices "
                         f"0..{self.n_classes - 1}: {unknown[:10]}")

    def example_features(self, label) -> dict:
        import tensorflow as tf

        return {"label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(np.ravel(label)[0])]))}

    def feature_spec(self) -> dict:
        import tensorflow as tf

        return {"label": tf.io.FixedLenFeature([], tf.int64)}

    def parse(self, example):
        import tensorflow as tf

        return tf.cast(example["label"], tf.int32)

    def balanced_class_weight(self, labels: np.ndarray) -> dict:
        """{class: weight} inversely proportional to class frequency (mean weight 1 over the examples)."""
        counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=self.n_classes).astype(float)
        weights = np.where(counts > 0, counts.sum() / (self.n_classes * np.maximum(counts, 1)), 0.0)
        return {i: float(w) for i, w in enumerate(weights)}

    def label_warnings(self, labels: np.ndarray) -> list[str]:
        labels = np.asarray(labels, dtype=np.int64).ravel()
        counts = np.bincount(labels[labels >= 0], minlength=self.n_classes)
        absent = [repr(c) for c, n in zip(self.class_names, counts) if n == 0]
        if not absent:
            return []
        verb = "has" if len(absent) == 1 else "have"
        return [f"{len(absent)} of {self.n_classes} classes {verb} no galaxy in the train split ({', '.join(absent)}): "
                "the new head cannot learn them, and their galaxies in the val and test splits will be predicted as "
                "other classes."]

    def sample_weight_table(self, class_weight: Mapping[int, float] | None) -> np.ndarray | None:
        if not class_weight:
            return None
        table = np.ones(self.n_classes, np.float32)
        for k, v in class_weight.items():
            if not 0 <= int(k) < self.n_classes:
                raise ValueError(f"class_weight names class {k}, but there are {self.n_classes} classes")
            table[int(k)] = float(v)
        return table

    # ------------------------------------------------------------------ outputs
    def table(self, ids, samples: np.ndarray, interval: float = 0.9, asked_threshold: float = 0.5) -> pd.DataFrame:
        """``prob_<class>`` (mean over samples) and ``predicted_class``."""
        probs = samples.mean(axis=-1)
        cols = {"id_str": list(ids)}
        cols.update({f"prob_{c}": probs[:, i] for i, c in enumerate(self.class_names)})
        cols["predicted_class"] = np.asarray(self.class_names, dtype=object)[probs.argmax(axis=1)]
        return pd.DataFrame(cols)

    def chart(self, output, label=None):
        probs = np.asarray(output, np.float64)
        truth = None if label is None else int(np.ravel(label)[0])
        title = f"predicted {self.class_names[int(probs.argmax())]} ({probs.max():.0%})"
        if truth is not None:
            title = f"true {self.class_names[truth]}, " + title
        return [(title, [(c, float(probs[i]), float(i == truth) if truth is not None else float("nan"))
                         for i, c in enumerate(self.class_names)])]

    def categories(self, outputs) -> pd.DataFrame:
        probs = np.asarray(outputs, np.float64)
        return pd.DataFrame({"predicted_class": np.asarray(self.class_names, dtype=object)[probs.argmax(axis=1)],
                             "confidence": np.round(probs.max(axis=1), 2)})

    def serving_outputs(self, outputs) -> dict:
        import tensorflow as tf

        return {"probabilities": outputs, "predicted_class": tf.argmax(outputs, axis=-1, output_type=tf.int32)}

    @property
    def serving_output_names(self) -> list[str]:
        return ["probabilities", "predicted_class"]

    def evaluate(self, labels, outputs, prior=None) -> pd.DataFrame:
        """Per class: its recall, the share of predictions it gets, and its row of the confusion matrix
        (``as_<class>``: how many galaxies of this class were predicted as each class). ``total``: accuracy,
        balanced accuracy (mean recall over the classes present), log loss, and ``collapsed`` (True when
        >= 95% of predictions are one class although several classes are present: the model learned the
        prior, not the images)."""
        labels = np.asarray(labels, dtype=np.int64).ravel()
        outputs = np.asarray(outputs, dtype=np.float64)
        predicted = outputs.argmax(axis=1)
        rows = []
        for i, c in enumerate(self.class_names):
            mask = labels == i
            rows.append({"question": c, "n": int(mask.sum()),
                         "recall": float((predicted[mask] == i).mean()) if mask.any() else np.nan,
                         "predicted_share": float((predicted == i).mean()),
                         **{f"as_{other}": int((predicted[mask] == j).sum())
                            for j, other in enumerate(self.class_names)}})
        table = pd.DataFrame(rows)
        present = table["n"] > 0
        log_loss = float(-np.log(np.clip(outputs[np.arange(len(labels)), labels], 1e-12, None)).mean())
        share = table["predicted_share"].max()
        collapsed = bool(share >= COLLAPSE_SHARE and present.sum() > 1)
        total = {"question": "total", "n": len(labels), "accuracy": float((predicted == labels).mean()),
                 "balanced_accuracy": float(table.loc[present, "recall"].mean()), "loss": log_loss,
                 "predicted_share": float(share), "collapsed": collapsed}
        if prior is not None:
            p = np.asarray(prior, dtype=np.float64) / np.sum(prior)
            total["baseline_loss"] = float(-np.log(np.clip(p[labels], 1e-12, None)).mean())
            total["baseline_accuracy"] = float((labels == int(np.argmax(p))).mean())
        if collapsed:
            log.warning("Predictions collapsed to one class: %.0f%% are %r although %d classes are present. The "
                        "model predicts the prior, not the images (try more epochs, --n_blocks -1, or class weights).",
                        100 * share, self.class_names[int(table["predicted_share"].idxmax())], int(present.sum()))
        table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
        # counts stay integers (nullable: the total row has no confusion counts), in tables and in metrics.json
        return table.astype({c: "Int64" for c in table.columns if c.startswith("as_")})

    def metadata(self) -> dict:
        return {**super().metadata(), "class_names": list(self.class_names)}
