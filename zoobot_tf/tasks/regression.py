"""Regression: one or more real-valued targets per galaxy (e.g. a measured fraction or a size)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from zoobot_tf.tasks.base import Task, register_task


@register_task
class RegressionTask(Task):
    """Linear outputs, mean squared error; ``target_names`` are also the catalog columns by default."""

    name = "regression"
    output_name = "targets"
    monitor = "val_loss"
    tfds_label = "targets"

    def __init__(self, target_names: Sequence[str] | None = None, n_targets: int | None = None):
        if target_names is not None:
            target_names = [str(t) for t in target_names]
            if n_targets is not None and n_targets != len(target_names):
                raise ValueError(f"n_targets={n_targets} does not match {len(target_names)} target_names")
        else:
            target_names = [f"target_{i}" for i in range(int(n_targets or 1))]
        if not target_names:
            raise ValueError("A regression head needs at least one target.")
        self.target_names = list(target_names)

    @classmethod
    def for_catalog(cls, catalog, columns=None, target_names=None, **options) -> "RegressionTask":
        """One target per label column, named after it."""
        if target_names is None and columns:
            target_names = [columns] if isinstance(columns, str) else list(columns)
        return cls(target_names=target_names)

    def get_config(self) -> dict:
        return {"name": self.name, "target_names": list(self.target_names)}

    def __repr__(self) -> str:
        return f"RegressionTask({self.target_names})"

    @property
    def output_labels(self) -> list[str]:
        return list(self.target_names)

    def output_layer(self):
        from keras import layers

        return layers.Activation("linear", dtype="float32", name=self.output_name)

    def loss(self):
        import keras

        return keras.losses.MeanSquaredError(name="mse")

    def metrics(self) -> list:
        from zoobot_tf.losses import PaddedMAE

        return [PaddedMAE(name="mae")]

    def prior(self, labels: np.ndarray) -> np.ndarray:
        return np.asarray(labels, dtype=np.float64).reshape(len(labels), -1).mean(axis=0)

    def head_bias(self, prior: np.ndarray) -> np.ndarray:
        return np.asarray(prior, dtype=np.float64)

    def label_columns(self, columns: Sequence[str] | None = None) -> list[str]:
        return super().label_columns(columns or self.target_names)

    def validate_catalog(self, catalog, columns=None, require_files: bool = True) -> None:
        columns = self.label_columns(columns)
        if len(columns) != self.n_outputs:
            raise ValueError(f"{len(columns)} label columns for {self.n_outputs} regression targets: {columns}")
        super().validate_catalog(catalog, columns, require_files)

    def example_features(self, label) -> dict:
        import tensorflow as tf

        return {"targets": tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in np.ravel(label)]))}

    def feature_spec(self) -> dict:
        import tensorflow as tf

        return {"targets": tf.io.FixedLenFeature([self.n_outputs], tf.float32)}

    def parse(self, example):
        return example["targets"]

    def table(self, ids, samples: np.ndarray, interval: float = 0.9, asked_threshold: float = 0.5) -> pd.DataFrame:
        """``<target>`` (mean over samples) and ``<target>_std`` (spread of the MC-dropout samples)."""
        cols = {"id_str": list(ids)}
        for i, t in enumerate(self.target_names):
            cols[t] = samples[:, i].mean(axis=-1)
            cols[f"{t}_std"] = samples[:, i].std(axis=-1)
        return pd.DataFrame(cols)

    def chart(self, output, label=None):
        out = np.ravel(np.asarray(output, np.float64))
        truth = np.full_like(out, np.nan) if label is None else np.ravel(np.asarray(label, np.float64))
        return [("targets", [(t, float(out[i]), float(truth[i])) for i, t in enumerate(self.target_names)])]

    def categories(self, outputs) -> pd.DataFrame:
        out = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
        return pd.DataFrame({t: np.round(out[:, i], 3) for i, t in enumerate(self.target_names)})

    def evaluate(self, labels, outputs, prior=None) -> pd.DataFrame:
        """MAE and RMSE per target and over all targets (``total``), with the constant prior's alongside."""
        labels = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
        outputs = np.asarray(outputs, dtype=np.float64).reshape(len(labels), -1)
        rows = []
        names = list(self.target_names) + ["total"]
        for i, name in enumerate(names):
            sl = slice(None) if name == "total" else slice(i, i + 1)
            err = outputs[:, sl] - labels[:, sl]
            row = {"question": name, "n": len(labels), "mae": float(np.abs(err).mean()),
                   "rmse": float(np.sqrt((err ** 2).mean())), "loss": float((err ** 2).mean())}
            if prior is not None:
                base = np.asarray(prior, dtype=np.float64)[None, sl] - labels[:, sl]
                row["baseline_mae"] = float(np.abs(base).mean())
                row["baseline_loss"] = float((base ** 2).mean())
            rows.append(row)
        return pd.DataFrame(rows)

    def metadata(self) -> dict:
        return {**super().metadata(), "target_names": list(self.target_names)}
