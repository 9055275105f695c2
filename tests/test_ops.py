"""The fast paths of zoobot_tf.ops against stock Keras: the same outputs and gradients (issue: one switch).

Each case in zoobot_tf.ops.selfcheck.CASES runs the same computation on both paths; `python -m
zoobot_tf.ops.selfcheck` times them too, for deciding an upgrade.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from zoobot_tf.ops import selfcheck


@pytest.mark.parametrize("case", selfcheck.CASES, ids=[c.name.split(" (")[0] for c in selfcheck.CASES])
def test_fast_path_equals_stock_keras(case):
    row = selfcheck.run_case(case, selfcheck.SIZES["test"])
    assert "error" not in row, row
    assert row["ok"], f"{case.name}: fast and stock differ by {row['max_rel_diff']:.2e} (tolerance {case.tol})"


def test_the_stock_path_really_differs_in_what_runs():
    """The comparison above is not vacuous: on the stock path the batch norm is Keras' own op graph."""
    import tensorflow as tf

    from zoobot_tf.ops import fast_path
    from zoobot_tf.ops.layers import FusedBatchNormalization

    bn = FusedBatchNormalization()
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32"))
    bn.build(x.shape)
    ops = {}
    for enabled in (True, False):
        with fast_path(enabled):
            graph = tf.function(lambda t: bn(t, training=True)).get_concrete_function(x).graph
            ops[enabled] = {op.type for op in graph.get_operations()}
    assert "FusedBatchNormV3" in ops[True] and "FusedBatchNormV3" not in ops[False]


def test_keras_internals_used_by_the_fixes_are_present():
    assert all(r["ok"] for r in selfcheck.check_internals())


def test_environment_switch_is_read_at_import(tmp_path):
    code = "import zoobot_tf.ops as o; print(o.fast())"
    out = {v: subprocess.run([sys.executable, "-c", code], env={**os.environ, "ZOOBOT_TF_FAST": v},
                             capture_output=True, text=True, timeout=120).stdout.strip() for v in ("0", "1")}
    assert out == {"0": "False", "1": "True"}


def test_a_model_saved_on_the_fast_path_loads_and_agrees_on_the_stock_path(tmp_path):
    import keras
    import tensorflow as tf

    from zoobot_tf.models import Zoobot
    from zoobot_tf.ops import fast_path

    m = Zoobot(backbone="efficientnet_b0", image_size=32, dropout_rate=0.0)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    m.save(tmp_path / "m.keras")
    expected = tf.function(lambda t: m(t, training=False))(x).numpy()
    with fast_path(False):
        again = keras.models.load_model(tmp_path / "m.keras")
        got = tf.function(lambda t: again(t, training=False))(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4)
