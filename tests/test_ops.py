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


def test_convnext_mlp_runs_as_a_1x1_conv_in_bfloat16_inference_only():
    """oneDNN runs a bfloat16 fused MatMul as a generic GEMM here and a 1x1 conv on its AMX kernels, so the
    fast path's bfloat16 inference graph holds convolutions; float32 and training keep the 2-D MatMul, and
    the stock path Keras' Dense (its outputs are compared in the selfcheck case)."""
    import keras
    import tensorflow as tf

    from zoobot_tf.models.zoobot import dtype_policy
    from zoobot_tf.ops import fast_path
    from zoobot_tf.ops.layers import Pointwise

    def op_types(policy, training, enabled):
        with fast_path(enabled), dtype_policy(policy):
            layer = Pointwise(16, activation="gelu")
            x = tf.zeros((2, 4, 4, 8))
            graph = tf.function(lambda t: layer(t, training=training)).get_concrete_function(x).graph
            return {op.type for op in graph.get_operations()}

    assert "Conv2D" in op_types("mixed_bfloat16", False, True)
    for policy, training, enabled in [("mixed_bfloat16", True, True), ("float32", False, True),
                                      ("mixed_bfloat16", False, False)]:
        assert "Conv2D" not in op_types(policy, training, enabled), (policy, training, enabled)
