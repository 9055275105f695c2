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


def _training_graph_ops(layer, x) -> set:
    """The op types of a traced training step of ``layer`` (a layer or model): forward and the gradients of a
    loss for its input and weights. A Pad of anything but a batch of images is "Pad (weights)"."""
    import tensorflow as tf

    def step(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            loss = tf.reduce_sum(tf.square(layer(t, training=True)))
        return tape.gradient(loss, [t] + layer.trainable_weights)

    graph = tf.function(step).get_concrete_function(x).graph
    return {"Pad (weights)" if op.type == "Pad" and op.inputs[0].shape[0] != x.shape[0] else op.type
            for op in graph.get_operations()}


def test_strided_depthwise_training_pads_inside_the_op_and_pools_by_broadcast():
    """EfficientNet's training graph on the fast path: a strided depthwise conv without a bias pads inside
    the convolution (no Pad forward, no Slice in its gradient) and the global average pool's gradient is a
    broadcast (no AvgPoolGrad); with a bias (TF 2.21 aborts on the fused form with explicit padding) it is a
    'SAME' conv with a widened kernel, no Pad either."""
    import keras
    import tensorflow as tf

    from zoobot_tf.models.backbones.common import conv2d
    from zoobot_tf.ops import fast_path
    from zoobot_tf.ops.layers import GlobalAveragePooling2D

    x = tf.constant(np.random.default_rng(0).normal(size=(2, 16, 16, 8)).astype("float32"))
    ops = {}
    for enabled, use_bias in [(True, False), (True, True), (False, False)]:
        with fast_path(enabled):  # read when the layers are traced (CI also runs this file with it off)
            inputs = keras.Input((16, 16, 8))
            y = conv2d(inputs, 8, 5, 2, name="dw", depthwise=True, use_bias=use_bias)
            model = keras.Model(inputs, GlobalAveragePooling2D()(y))
            ops[enabled, use_bias] = _training_graph_ops(model, x)
    fast = ops[True, False]
    assert "Pad" not in fast and "Slice" not in fast and "DepthwiseConv2dNative" in fast
    assert "BroadcastTo" in fast and "AvgPoolGrad" not in fast
    assert "Pad" not in ops[True, True] and "DepthwiseConv2dNative" in ops[True, True]
    assert "Pad" in ops[False, False]


def test_large_depthwise_filter_gradient_is_a_loop_of_per_image_convolutions():
    """ConvNeXt's 7x7 depthwise convs in training on the fast path: no oneDNN filter-gradient kernel, no
    BiasAddGrad and no transposed copy in the graph (the filter gradient is a loop of per-image convs; both
    kernels on the stock path); so do EfficientNet's 5x5 ones; 3x3 depthwise convs keep TensorFlow's gradient."""
    import keras
    import tensorflow as tf

    from zoobot_tf.ops import fast_path
    from zoobot_tf.ops.layers import DepthwiseConv2D

    x = tf.constant(np.random.default_rng(0).normal(size=(2, 16, 16, 8)).astype("float32"))
    ops = {}
    for enabled, k in [(True, 7), (False, 7), (True, 3)]:
        with fast_path(enabled):
            layer = DepthwiseConv2D(k, padding="same", use_bias=True)
            layer.build(x.shape)
            ops[enabled, k] = _training_graph_ops(layer, x)
    assert "DepthwiseConv2dNativeBackpropFilter" not in ops[True, 7] and "BiasAddGrad" not in ops[True, 7]
    assert "DepthwiseConv2dNativeBackpropInput" in ops[True, 7]
    assert {"While", "StatelessWhile"} & ops[True, 7] and "Transpose" not in ops[True, 7]
    assert "DepthwiseConv2dNativeBackpropFilter" in ops[False, 7] and "BiasAddGrad" in ops[False, 7]
    assert "DepthwiseConv2dNativeBackpropFilter" in ops[True, 3]
    for dtype in ("float32", "mixed_bfloat16"):  # EfficientNet's 5x5: no bias, float32 in training either way
        with fast_path(True):
            layer = DepthwiseConv2D(5, padding="same", use_bias=False, dtype=keras.DTypePolicy(dtype))
            layer.build(x.shape)
            five = _training_graph_ops(layer, x)
        assert "DepthwiseConv2dNativeBackpropFilter" not in five and {"While", "StatelessWhile"} & five


@pytest.mark.parametrize("batch, k, use_bias, dtype", [(1, 7, True, "float32"), (5, 7, True, "float32"),
                                                     (3, 5, False, "float32"), (3, 5, False, "mixed_bfloat16")])
def test_large_depthwise_gradients_with_an_unknown_batch_size_match_tensorflows(batch, k, use_bias, dtype):
    """ConvNeXt's 7x7 (with a bias) and EfficientNet's 5x5 (without; in training under mixed_bfloat16 in
    float32) stride-1 depthwise convs: the per-image loop runs over the batch the step gets (fit's last batch
    is smaller, and its traced step has no static batch size), and the gradients equal TensorFlow's own
    kernels' (to bfloat16 rounding under mixed_bfloat16, where the stock path computes in bfloat16)."""
    import keras
    import tensorflow as tf

    from zoobot_tf.ops import fast_path
    from zoobot_tf.ops.layers import DepthwiseConv2D

    rng = np.random.default_rng(batch + k)
    x = tf.constant(rng.normal(size=(batch, 12, 12, 6)).astype("float32"))
    dy = tf.constant(rng.normal(size=(batch, 12, 12, 6)).astype("float32"))
    weights = [rng.normal(size=(k, k, 6, 1)).astype("float32")] + [rng.normal(size=6).astype("float32")] * use_bias
    grads = {}
    for enabled in (True, False):
        with fast_path(enabled):
            layer = DepthwiseConv2D(k, padding="same", use_bias=use_bias, dtype=keras.DTypePolicy(dtype))
            layer.build(x.shape)
            layer.set_weights(weights)

            @tf.function(input_signature=[tf.TensorSpec([None, 12, 12, 6])] * 2)
            def step(t, d):
                with tf.GradientTape() as tape:
                    tape.watch(t)
                    loss = tf.reduce_sum(tf.cast(layer(t, training=True), tf.float32) * d)
                return tape.gradient(loss, [t] + layer.trainable_weights)

            grads[enabled] = [g.numpy() for g in step(x, dy)]
    tolerance = 1e-4 if dtype == "float32" else 3e-2
    for ours, theirs in zip(grads[True], grads[False]):
        scale = np.abs(theirs).max()
        np.testing.assert_allclose(ours / scale, theirs / scale, atol=tolerance)


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


def test_convnext_mlp_runs_as_a_1x1_conv_in_bfloat16_on_the_fast_path():
    """oneDNN runs a bfloat16 fused MatMul as a generic GEMM here and a 1x1 conv on its AMX kernels, so the
    fast path's bfloat16 graphs (inference and training) hold convolutions; float32 keeps the 2-D MatMul,
    the stock path Keras' Dense (outputs compared in the selfcheck cases)."""
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

    for training in (False, True):
        assert "Conv2D" in op_types("mixed_bfloat16", training, True)
        assert "Conv2D" not in op_types("float32", training, True)
        assert "Conv2D" not in op_types("mixed_bfloat16", training, False)


def test_bfloat16_mlp_gradients_are_as_near_the_float32_model_as_keras_own():
    """Training a bfloat16 ConvNeXt MLP on the fast path (1x1 conv forward, MatMul gradients, bias gradients
    summed in float32) against the same MLP in float32: every gradient at least as near as stock Keras'
    bfloat16 Dense gets (whose bias gradients, summed in bfloat16, are far off)."""
    import tensorflow as tf

    from zoobot_tf.ops import fast_path

    bf16, f32 = selfcheck.mlp_model(16, "mixed_bfloat16"), selfcheck.mlp_model(16)
    f32.set_weights(bf16.get_weights())
    x = tf.constant((np.random.default_rng(25).normal(size=(8, 16, 16, 32)) * 2).astype("float32"))

    def grads(model, enabled):
        with fast_path(enabled):
            fn = selfcheck._with_grads(lambda t: model(t, training=True), lambda: model.trainable_weights)
            return [np.asarray(tf.cast(t, tf.float32)) for t in tf.function(fn)(x)]

    ref, ours, keras_bf16 = grads(f32, False), grads(bf16, True), grads(bf16, False)
    names = ["output", "input", *[w.path for w in bf16.trainable_weights]]
    for name, r, a, b in zip(names, ref, ours, keras_bf16):
        scale = np.max(np.abs(r))
        err_ours, err_keras = np.max(np.abs(a - r)) / scale, np.max(np.abs(b - r)) / scale
        assert err_ours <= max(1.5 * err_keras, 1e-2), (name, err_ours, err_keras)


def test_bias_gradient_accumulates_bfloat16_in_float32():
    """The MLP's bias gradient (a MatMul with ones) is the exact sum of bfloat16 rows rounded once, where a
    bfloat16 accumulation (TensorFlow's BiasAddGrad) drifts far from it over many rows."""
    import tensorflow as tf

    from zoobot_tf.ops.layers import _bias_gradient

    rows = np.random.default_rng(3).normal(size=(50_000, 64)).astype("float32") + 0.01
    dy = tf.cast(rows, tf.bfloat16)
    exact = np.asarray(tf.cast(dy, tf.float64)).sum(axis=0)
    ours = _bias_gradient(dy, tf.bfloat16)
    assert ours.dtype == tf.bfloat16
    np.testing.assert_allclose(np.asarray(tf.cast(ours, tf.float64)), exact, rtol=2.0 ** -8, atol=1e-3)
    # float32: a float32 accumulation over 50,000 rows (~300 in size) is good to ~1e-2 absolute
    np.testing.assert_allclose(_bias_gradient(tf.constant(rows), tf.float32), rows.sum(axis=0, dtype=np.float64),
                               rtol=1e-5, atol=2e-2)
    drifted = np.asarray(tf.cast(tf.raw_ops.BiasAddGrad(out_backprop=dy), tf.float64))
    assert np.max(np.abs(drifted - exact)) > 10 * np.max(np.abs(np.asarray(tf.cast(ours, tf.float64)) - exact))


def test_bias_gradient_graph_is_small_and_takes_any_row_count():
    """Traced with a static row count (as in a training step of fixed batch) the bias gradient is a few ops,
    with no shape arithmetic (it is called ~66 times in a ConvNeXt-Nano step, and every op costs trace time in
    the first step); with an unknown row count it still sums every row."""
    import tensorflow as tf

    from zoobot_tf.ops.layers import _bias_gradient

    step = tf.function(lambda dy: _bias_gradient(dy, tf.float32), autograph=False)
    static = step.get_concrete_function(tf.TensorSpec([5_000, 8], tf.float32)).graph.get_operations()
    assert not {op.type for op in static} & {"Shape", "StridedSlice", "Pack"}, [op.type for op in static]
    assert len(static) <= 7, [op.type for op in static]
    rows = np.random.default_rng(4).normal(size=(37, 8)).astype("float32")
    dynamic = step.get_concrete_function(tf.TensorSpec([None, 8], tf.float32))
    for n in (37, 1):
        np.testing.assert_allclose(dynamic(tf.constant(rows[:n])), rows[:n].sum(axis=0), rtol=1e-5, atol=1e-5)


def test_bfloat16_global_pool_gradient_is_correctly_rounded():
    """The fast global pool's gradient in bfloat16 is dy / (H W) computed in float32 and rounded once, as
    float64 arithmetic rounded to bfloat16 gives (1 / 49 itself in bfloat16 is off by 0.1%)."""
    import tensorflow as tf

    from zoobot_tf.ops.layers import _global_average_pool

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 7, 7, 16)), tf.bfloat16)
    dy = tf.constant(rng.normal(size=(2, 1, 1, 16)), tf.bfloat16)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = _global_average_pool(x)
    got = tape.gradient(y, x, output_gradients=dy).numpy().astype(np.float64)
    expected = tf.cast(tf.cast(dy, tf.float64) / 49.0, tf.bfloat16).numpy().astype(np.float64)
    np.testing.assert_array_equal(got, np.broadcast_to(expected, got.shape))


@pytest.mark.parametrize("precision", [None, "mixed_bfloat16"])
def test_convnext_mlp_at_inference_on_large_inputs_computes_in_bands(precision):
    """At inference on the fast path a linked MLP whose hidden activations exceed ``MLP_BAND`` values an
    image computes fc1 -> GELU -> fc2 in bands of rows, one after another, so no op outputs the whole
    4x-wide tensor; small inputs and training keep one pass. The numbers are the stock path's (selfcheck)."""
    import tensorflow as tf

    from zoobot_tf.ops import fast_path
    from zoobot_tf.ops.layers import MLP_BAND

    model = selfcheck.mlp_model(72, precision)
    fc1 = model.get_layer("fc1")
    assert 72 * 72 * fc1.units > 2 * MLP_BAND and fc1._bands(tf.zeros([1, 72, 72, 32])) == [24, 24, 24]

    def largest_output(training, fast=True, size=72):
        with fast_path(fast):
            fn = tf.function(lambda t: model(t, training=training))
            graph = fn.get_concrete_function(tf.TensorSpec([4, size, size, 32])).graph
        sizes = [o.shape.num_elements() or 0 for op in graph.get_operations() for o in op.outputs]
        return max(sizes), sum(op.type in ("MatMul", "Conv2D") for op in graph.get_operations())

    hidden = 4 * 72 * 72 * fc1.units
    biggest, matmuls = largest_output(False)
    assert biggest < hidden and matmuls == 6  # fc1 and fc2, three bands each
    assert largest_output(True)[0] >= hidden  # training keeps the whole tensor (its gradient needs it)
    assert largest_output(False, fast=False)[0] >= hidden
    assert fc1._bands(tf.zeros([1, 16, 16, 32])) == [16]  # small inputs: one band


def test_xla_kernels_round_to_bfloat16_as_tensorflow_casts():
    """The XLA kernels' float32 -> bfloat16 rounding by bits (:func:`zoobot_tf.ops.layers._xla_cast`) gives
    TensorFlow's own cast: to nearest with ties to even, overflow to infinity, subnormals, signed zeros and
    infinities, and NaN (also NaNs whose payload sits in the dropped bits, or would carry out of the top)."""
    import tensorflow as tf

    from zoobot_tf.ops.layers import _gelu_backward, _gelu_forward, _xla_cast

    rng = np.random.default_rng(0)
    spread = rng.normal(size=50_000) * 10.0 ** rng.uniform(-45, 38, 50_000)
    ties = 1.0 + np.arange(1, 64) * 2.0 ** -8 / 2  # halfway and between bfloat16 neighbours of 1
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, 3.4028235e38, -3.4028235e38, 1e-45, 1e-40, -1e-39]
    payload_nans = np.array([0x7F800001, 0xFFFFFFFF, 0x7FFFFFFF, 0xFF800001, 0x7FC07FFF], np.uint32).view(np.float32)
    x = tf.constant(np.concatenate([spread.astype(np.float32), ties.astype(np.float32),
                                    np.array(special, np.float32), payload_nans]))
    got = tf.function(lambda t: _xla_cast(t, tf.bfloat16), jit_compile=True)(x)
    assert got.dtype == tf.bfloat16
    got, want = np.float32(tf.cast(got, tf.float32)), np.float32(tf.cast(tf.cast(x, tf.bfloat16), tf.float32))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got.view(np.uint32)[~np.isnan(want)], want.view(np.uint32)[~np.isnan(want)])
    # the GELU's kernels round their float32 results the same way in bfloat16
    h = tf.constant(rng.normal(0.0, 3.0, (64, 257)), tf.bfloat16)
    dy = tf.constant(rng.normal(size=(64, 257)), tf.bfloat16)
    hf, dyf = tf.cast(h, tf.float32), tf.cast(dy, tf.float32)
    np.testing.assert_array_equal(np.float32(tf.cast(_gelu_forward(h), tf.float32)),
                                  np.float32(tf.cast(tf.cast(_gelu_forward(hf), tf.bfloat16), tf.float32)))
    np.testing.assert_array_equal(np.float32(tf.cast(_gelu_backward(h, dy), tf.float32)),
                                  np.float32(tf.cast(tf.cast(_gelu_backward(hf, dyf), tf.bfloat16), tf.float32)))
    # and differentiate as a cast: the inference kernels are differentiated when gradients are taken
    # through a model called with training=False (its GELU here against TensorFlow's, on the same bfloat16 h)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(h)
        ours, theirs = _gelu_forward(h), tf.nn.gelu(tf.cast(h, tf.float32), approximate=False)
    got, want = tape.gradient(ours, h, output_gradients=dy), tape.gradient(theirs, h, output_gradients=dyf)
    assert got is not None
    np.testing.assert_allclose(np.float32(tf.cast(got, tf.float32)), np.float32(tf.cast(want, tf.float32)),
                               rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("policy, input_dtype", [("float32", "bfloat16"), ("mixed_bfloat16", "float32")])
def test_layer_norm_across_precisions_trains_as_it_predicts(policy, input_dtype):
    """A LayerNorm between precisions computes, in training and at inference on the fast path, the LayerNorm
    of its input's values (float64 arithmetic) rounded to bfloat16, as Keras' does: a float32 one fed
    bfloat16 (ConvNeXt's stem under mixed_bfloat16; the rounded result handed on in float32) and a
    mixed_bfloat16 one fed float32 (ConvNeXt's block norms; handed on in bfloat16). Its gradients match
    Keras' own LayerNorm's."""
    import tensorflow as tf

    from zoobot_tf.ops import fast_path
    from zoobot_tf.ops.layers import LayerNormalization

    rng = np.random.default_rng(3)
    x = tf.cast(tf.constant(rng.normal(2.0, 3.0, (4, 8, 8, 32)).astype("float32")), input_dtype)
    norm = LayerNormalization(epsilon=1e-6, dtype=policy)
    norm.build(x.shape)
    norm.gamma.assign(rng.normal(1.0, 0.3, 32).astype("float32"))
    norm.beta.assign(rng.normal(0.0, 0.3, 32).astype("float32"))
    xd = np.float64(tf.cast(x, tf.float32))
    expected = (xd - xd.mean(-1, keepdims=True)) / np.sqrt(xd.var(-1, keepdims=True) + 1e-6) * \
        np.float64(norm.gamma.numpy()) + np.float64(norm.beta.numpy())
    rounded = np.float64(tf.cast(tf.cast(expected, tf.bfloat16), tf.float32))
    outputs, gradients = [], {}
    for fast in (True, False):
        with fast_path(fast):
            for training in (True, False):
                step = selfcheck._with_grads(lambda t: norm(t, training=training), lambda: norm.trainable_weights)
                y, *grads = tf.function(step)(x)
                assert y.dtype == (tf.bfloat16 if policy == "mixed_bfloat16" else tf.float32)
                if fast:
                    outputs.append(np.float64(tf.cast(y, tf.float32)))
                gradients[fast, training] = grads
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert np.mean(outputs[0] == rounded) > 0.99  # the float32 result rounded (ties may round either way)
    np.testing.assert_allclose(outputs[0], expected, rtol=2 ** -8, atol=1e-6)
    for training in (True, False):  # at inference too: gradients through a model called with training=False
        for got, keras_own in zip(gradients[True, training], gradients[False, training], strict=True):
            assert got is not None and got.dtype == keras_own.dtype
            np.testing.assert_allclose(
                np.float64(tf.cast(got, tf.float32)), np.float64(tf.cast(keras_own, tf.float32)),
                rtol=1e-2, atol=1e-2 * float(tf.reduce_max(tf.abs(tf.cast(keras_own, tf.float32)))))
