"""Regression onto [0, 1]: targets that are fractions (Zoobot's ``FinetuneableZoobotRegressor(unit_interval=True)``).

The head ends in a sigmoid, so predictions stay in (0, 1); the loss is still the mean squared error.
This module is also the example of adding a task: a Task subclass, registered, in one file.
"""
from __future__ import annotations

import numpy as np

from zoobot_tf.tasks.base import register_task
from zoobot_tf.tasks.regression import RegressionTask


@register_task
class UnitIntervalRegressionTask(RegressionTask):
    """Targets in [0, 1] (vote fractions, probabilities): a sigmoid output and mean squared error."""

    name = "unit_interval_regression"

    def output_layer(self):
        from keras import layers

        return layers.Activation("sigmoid", dtype="float32", name=self.output_name)

    def validate_catalog(self, catalog, columns=None, require_files: bool = True) -> None:
        super().validate_catalog(catalog, columns, require_files)
        values = catalog[self.label_columns(columns)].to_numpy(np.float64)
        outside = (values < 0) | (values > 1)
        if outside.any():
            from zoobot_tf.data.catalogs import CatalogError

            rows = np.flatnonzero(outside.any(axis=1))[:5].tolist()
            raise CatalogError(f"A unit-interval regression needs targets in [0, 1]; rows {rows} are outside it.")

    def head_bias(self, prior: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(prior, dtype=np.float64), 1e-4, 1 - 1e-4)
        return np.log(p / (1 - p))
