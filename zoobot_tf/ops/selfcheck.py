"""Does each fast path still hold on the installed TensorFlow and Keras? ``python -m zoobot_tf.ops.selfcheck``

For every speed-up in :mod:`zoobot_tf.ops` this runs the same computation on the fast path and on the stock
path (:func:`zoobot_tf.ops.fast_path`), checks that outputs (and gradients, where the speed-up is used in
training) agree, and times both. It also checks that the Keras internals the correctness fixes rely on
are still there. It prints a table and exits non-zero if any fast path disagrees with stock Keras or an
internal is gone: after upgrading TensorFlow or Keras, run it; a failing row is switched off with
``ZOOBOT_TF_FAST=0`` until fixed, a row that is no longer faster can be removed.

``CASES`` is also what ``tests/test_ops.py`` checks, so the suite and this report agree by construction.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Callable

import numpy as np


@dataclasses.dataclass
class Case:
    """One speed-up: ``make(size)`` returns (fn, inputs); fn(*inputs) -> a tensor or a list of tensors.

    The same fn is traced once on each path. ``tol`` is the relative tolerance of the comparison.
    """

    name: str
    make: Callable[[int], tuple[Callable, tuple]]
    tol: float = 1e-4
    trace: bool = True  # run fn inside a tf.function (False: eagerly, e.g. a whole optimizer step loop)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _weighted_sum(y):
    import tensorflow as tf

    w = tf.reshape(tf.cos(tf.cast(tf.range(tf.size(y)), y.dtype) * 0.37), tf.shape(y))
    return tf.reduce_sum(y * w)


def _with_grads(call, variables_of, input_gradient: bool = True):
    """fn(x) -> [output, d(weighted sum)/dx (if input_gradient), d/d(each trainable weight)]."""
    import tensorflow as tf

    def fn(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = call(x)
            loss = _weighted_sum(tf.cast(y, tf.float32))
        return [y, *tape.gradient(loss, ([x] if input_gradient else []) + list(variables_of()))]
    return fn


def _batch_norm(size):
    from zoobot_tf.ops.layers import FusedBatchNormalization

    x = _rng(1).normal(1.0, 2.0, (8, size, size, 16)).astype("float32")
    bn = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)
    bn.build(x.shape)
    bn.set_weights([w.astype("float32") for w in (_rng(2).normal(size=16), _rng(3).normal(size=16),
                                                  _rng(4).normal(size=16), _rng(5).uniform(0.5, 2, 16))])
    return _with_grads(lambda t: bn(t, training=True), lambda: bn.trainable_weights), (x,)


def _folded_conv(size):
    import keras

    from zoobot_tf.models.backbones.common import conv2d
    from zoobot_tf.ops.layers import FusedBatchNormalization, fold_batch_norms

    inputs = keras.Input((size, size, 8))
    y = conv2d(inputs, 16, 3, 2, name="conv")
    y = FusedBatchNormalization(epsilon=1e-5, name="bn")(y)
    model = keras.Model(inputs, y)
    model.get_layer("bn").set_weights([w.astype("float32") for w in (
        _rng(6).normal(size=16), _rng(7).normal(size=16), _rng(8).normal(size=16), _rng(9).uniform(0.5, 2, 16))])
    assert fold_batch_norms(model) == 1
    x = _rng(10).normal(size=(8, size, size, 8)).astype("float32")
    return (lambda t: model(t, training=False)), (x,)


def _depthwise_padded(use_bias: bool):
    def make(size):
        import keras

        from zoobot_tf.models.backbones.common import conv2d

        inputs = keras.Input((size, size, 8))
        model = keras.Model(inputs, conv2d(inputs, 8, 5, 2, name="dw", depthwise=True, use_bias=use_bias))
        x = _rng(11).normal(size=(8, size, size, 8)).astype("float32")
        return _with_grads(lambda t: model(t, training=True), lambda: model.trainable_weights), (x,)
    return make


def _depthwise_bfloat16_training(size):
    import keras

    from zoobot_tf.models.backbones.common import conv2d
    from zoobot_tf.models.zoobot import dtype_policy

    with dtype_policy("mixed_bfloat16"):
        inputs = keras.Input((size, size, 32))
        model = keras.Model(inputs, conv2d(inputs, 32, 3, 1, name="dw", depthwise=True, use_bias=True))
    x = _rng(12).normal(size=(8, size, size, 32)).astype("float32")
    return _with_grads(lambda t: model(t, training=True), lambda: model.trainable_weights), (x,)


def _batch_norm_swish(size):
    import keras

    from zoobot_tf.models.backbones.common import batch_norm, conv2d
    from zoobot_tf.ops.layers import fuse_batch_norm_swish

    inputs = keras.Input((size, size, 8))
    model = keras.Model(inputs, batch_norm(conv2d(inputs, 16, 3, 1, name="conv"), "bn", activation="silu"))
    model.get_layer("bn").set_weights([w.astype("float32") for w in (
        _rng(19).uniform(0.5, 2, 16), _rng(20).normal(size=16), _rng(21).normal(size=16), _rng(22).uniform(0.5, 2, 16))])
    assert fuse_batch_norm_swish(model) == 1
    x = (_rng(23).normal(size=(8, size, size, 8)) * 3).astype("float32")
    return _with_grads(lambda t: model(t, training=True), lambda: model.trainable_weights), (x,)


def _se_projection(size):
    import keras

    from zoobot_tf.models.backbones.common import batch_norm, conv2d
    from zoobot_tf.ops.layers import ChannelScale, GlobalAveragePooling2D, fuse_channel_scale

    inputs = keras.Input((size, size, 32))
    gate = keras.layers.Conv2D(8, 1, activation="silu")(GlobalAveragePooling2D(keepdims=True)(inputs))
    gate = keras.layers.Conv2D(32, 1, activation="sigmoid")(gate)
    model = keras.Model(inputs, batch_norm(conv2d(ChannelScale()([inputs, gate]), 16, 1, name="proj"), "bn"))
    assert fuse_channel_scale(model) == 1
    x = _rng(26).normal(size=(8, size, size, 32)).astype("float32")
    return _with_grads(lambda t: model(t, training=True), lambda: model.trainable_weights), (x,)


def _depthwise_same(k: int, use_bias: bool):
    def make(size):
        from zoobot_tf.ops.layers import DepthwiseConv2D

        layer = DepthwiseConv2D(k, padding="same", use_bias=use_bias)
        x = _rng(27).normal(size=(8, size, size, 48)).astype("float32")
        layer.build(x.shape)
        layer.set_weights([(_rng(28).normal(size=(k, k, 48, 1)) * 0.2).astype("float32")]
                          + [_rng(29).normal(size=48).astype("float32")] * use_bias)
        return _with_grads(lambda t: layer(t, training=True), lambda: layer.trainable_weights), (x,)
    return make


def _silu(size):
    from zoobot_tf.ops.layers import SiLU

    layer = SiLU()
    x = _rng(12).normal(size=(8, size, size, 32)).astype("float32")
    return (lambda t: layer(t, training=False)), (x,)


def _silu_training(size):
    from zoobot_tf.ops.layers import SiLU

    layer = SiLU()
    x = (_rng(14).normal(size=(8, size, size, 32)) * 4).astype("float32")
    return _with_grads(lambda t: layer(t, training=True), lambda: []), (x,)


def _pool(size):
    from zoobot_tf.ops.layers import GlobalAveragePooling2D

    layer = GlobalAveragePooling2D()
    x = _rng(13).normal(size=(8, size, size, 64)).astype("float32")
    return _with_grads(lambda t: layer(t), lambda: []), (x,)


def _pointwise(size):
    from zoobot_tf.ops.layers import Pointwise

    fc1, fc2 = Pointwise(128, activation="gelu"), Pointwise(32, layer_scale=0.5)
    x = _rng(14).normal(size=(8, size, size, 32)).astype("float32")
    fc2.build((None, size, size, 128))
    fc1.build(x.shape)
    return _with_grads(lambda t: fc2(fc1(t, training=True), training=True),
                       lambda: fc1.trainable_weights + fc2.trainable_weights), (x,)


def mlp_model(size: int, precision: str | None = None):
    """A ConvNeXt MLP (fc1 with GELU, fc2 with layer scale) on ``size`` x ``size`` x 32 inputs, its GELU
    linked into fc2 for training (:func:`~zoobot_tf.ops.layers.fuse_mlp_gelu`)."""
    import keras

    from zoobot_tf.models.zoobot import dtype_policy
    from zoobot_tf.ops.layers import Pointwise, fuse_mlp_gelu

    with dtype_policy(precision):
        inputs = keras.Input((size, size, 32))
        hidden = Pointwise(128, activation="gelu", name="fc1")(inputs)
        model = keras.Model(inputs, Pointwise(32, layer_scale=0.5, name="fc2")(hidden))
    assert fuse_mlp_gelu(model) == 1
    return model


def _mlp_bfloat16(training):
    """Gradients at inference too: they are taken through models called with ``training=False``."""
    def make(size):
        model = mlp_model(size, "mixed_bfloat16")
        x = (_rng(25).normal(size=(8, size, size, 32)) * 2).astype("float32")
        return _with_grads(lambda t: model(t, training=training), _but_biases(model)), (x,)
    return make


def _but_biases(model):
    # Keras sums a bfloat16 bias gradient in bfloat16 and ours in float32 (nearer the float32 model's:
    # tests/test_ops.py), so they differ by more than rounding
    return lambda: [w for w in model.trainable_weights if "bias" not in w.path or model.dtype_policy.name == "float32"]


def _mlp_in_bands(precision):
    """At inference, a linked MLP on a large input (fc1's 4x-wide output over ``MLP_BAND`` values an image)
    computed in bands of rows; 72 x 72 x 128 hidden values an image: 3 bands, whatever ``size``."""
    def make(size):
        model = mlp_model(max(size, 72), precision)
        x = (_rng(28).normal(size=(4, max(size, 72), max(size, 72), 32)) * 2).astype("float32")
        return _with_grads(lambda t: model(t, training=False), _but_biases(model)), (x,)
    return make


def _mlp_gelu(size):
    model = mlp_model(size)
    x = _rng(24).normal(size=(8, size, size, 32)).astype("float32")
    return _with_grads(lambda t: model(t, training=True), lambda: model.trainable_weights), (x,)


def _layer_norm(training, bfloat16_inputs=False, policy="float32"):
    """``bfloat16_inputs``: a float32 LayerNorm after a bfloat16 layer (ConvNeXt's stem), in training;
    ``policy="mixed_bfloat16"``: one before a bfloat16 layer (ConvNeXt's block norms)."""
    def make(size):
        import tensorflow as tf

        from zoobot_tf.ops.layers import LayerNormalization

        norm = LayerNormalization(epsilon=1e-6, dtype=policy)
        x = _rng(16).normal(3.0, 2.0, size=(8, size, size, 48)).astype("float32")
        norm.build(x.shape)
        norm.gamma.assign(_rng(17).normal(1.0, 0.3, size=48).astype("float32"))
        norm.beta.assign(_rng(18).normal(0.0, 0.3, size=48).astype("float32"))
        if not training:
            return (lambda t: norm(t, training=False)), (x,)
        cast = (lambda t: tf.cast(t, tf.bfloat16)) if bfloat16_inputs else tf.identity
        return _with_grads(lambda t: norm(cast(t), training=True), lambda: norm.trainable_weights), (x,)
    return make


def _view(size):
    from zoobot_tf.models.preprocessing import GalaxyView

    view = GalaxyView(image_size=size, channels=1, crop_fraction=0.8, augment=True)
    x = _rng(15).uniform(0, 255, (8, int(size * 1.4), int(size * 1.4), 3)).astype("float32")
    return (lambda t: view(t, training=False)), (x,)


def _model(backbone):
    def make(size):
        from zoobot_tf.models.zoobot import Zoobot

        model = Zoobot(backbone=backbone, image_size=size, dropout_rate=0.0, augment=False)
        model.init_head_prior(np.linspace(2.0, 30.0, model.task.n_outputs), kernel_scale=1.0)
        x = _rng(16).uniform(0, 255, (4, size, size, 3)).astype("float32")
        # no gradient for the input images: TensorFlow's gradient of the stock path's projective transform
        # (the view layer) is only an approximate adjoint, and images are data, never trained
        return _with_grads(lambda t: model(t, training=False), lambda: model.trainable_weights,
                           input_gradient=False), (x,)
    return make


def _adamw(size):
    import keras
    import tensorflow as tf

    from zoobot_tf.ops.optimizer import ZoobotAdamW

    shapes = [(size * 4, size), (size,), (3, 3, 16, size)]
    rng = _rng(17)
    init = [rng.normal(size=s).astype("float32") for s in shapes]
    grads = [rng.normal(size=s).astype("float32") for s in shapes]

    def fn(_):
        variables = [keras.Variable(v) for v in init]
        opt = ZoobotAdamW(learning_rate=1e-2, weight_decay=0.05, global_clipnorm=0.3)
        opt.build(variables)
        for _ in range(3):
            opt.apply([tf.constant(g) for g in grads], variables)
        return [v.value for v in variables]
    return fn, (np.zeros(1, "float32"),)


def _dirichlet_multinomial(size):
    import tensorflow as tf

    from zoobot_tf.losses import per_question_nll
    from zoobot_tf.schemas import get_schema

    schema = get_schema("gz_decals_dr5")
    rng = _rng(18)
    counts = rng.integers(0, 30, (size * 4, schema.n_answers)).astype("float32")
    counts[::3, 3:10] = 0  # questions not asked of every third galaxy
    alpha = tf.Variable(rng.uniform(1, 101, counts.shape).astype("float32"))
    return _with_grads(lambda c: per_question_nll(c, alpha, schema), lambda: [alpha],
                       input_gradient=False), (counts,)


CASES = [
    Case("fused batch norm (training, with gradients)", _batch_norm),
    Case("conv -> batch norm folded (inference)", _folded_conv),
    Case("strided depthwise conv, padding in the op (gradients)", _depthwise_padded(False)),
    Case("strided depthwise conv with a bias, 'SAME' with a widened kernel (gradients)", _depthwise_padded(True)),
    Case("depthwise conv in float32 when training under mixed_bfloat16 (gradients)", _depthwise_bfloat16_training,
         tol=1e-2),
    Case("7x7 depthwise conv in training, filter gradient image by image (gradients)", _depthwise_same(7, True)),
    Case("5x5 depthwise conv without a bias in training, the same (gradients)", _depthwise_same(5, False)),
    Case("swish as Sigmoid*Mul (inference)", _silu),
    Case("swish in training, four-op gradient (gradients)", _silu_training, tol=1e-5),
    Case("batch norm -> swish in training, swish input recomputed (gradients)", _batch_norm_swish),
    Case("global average pool as one pool (gradients)", _pool, tol=1e-5),
    Case("squeeze-excite gate and 1x1 projection as one batched MatMul (gradients)", _se_projection),
    Case("ConvNeXt MLP: 2-D MatMul, fused GELU, folded layer scale (gradients)", _pointwise),
    Case("ConvNeXt MLP in training, GELU output recomputed (gradients)", _mlp_gelu),
    Case("ConvNeXt MLP in bfloat16 (inference): 1x1 conv forward (gradients)", _mlp_bfloat16(False), tol=1e-2),
    Case("ConvNeXt MLP in bfloat16 in training: 1x1 conv forward (gradients)", _mlp_bfloat16(True), tol=1e-2),
    Case("ConvNeXt MLP at inference on large inputs, in bands of rows (gradients)", _mlp_in_bands(None), tol=1e-4),
    Case("ConvNeXt MLP in bfloat16 at inference on large inputs, in bands of rows (gradients)",
         _mlp_in_bands("mixed_bfloat16"), tol=1e-2),
    Case("LayerNorm as one XLA kernel (inference)", _layer_norm(False), tol=1e-5),
    Case("LayerNorm in training: XLA forward and backward (gradients)", _layer_norm(True), tol=1e-5),
    Case("LayerNorm in training on bfloat16 inputs: XLA kernels in float32 (gradients)",
         _layer_norm(True, bfloat16_inputs=True), tol=1e-2),
    Case("LayerNorm in training handing bfloat16 on: XLA kernels in float32 (gradients)",
         _layer_norm(True, policy="mixed_bfloat16"), tol=1e-2),
    Case("view layer: channel mean as a 1x1 conv, inference shift as 2-tap filters", _view, tol=1e-4),
    Case("EfficientNetB0 model (inference, gradients)", _model("efficientnet_b0"), tol=2e-3),
    Case("ConvNeXt model (inference, gradients)", _model("convnext_atto"), tol=2e-3),
    Case("AdamW fused update + L2Loss clipping (3 steps)", _adamw, tol=1e-5, trace=False),
    Case("Dirichlet-multinomial loss, all questions at once (gradients)", _dirichlet_multinomial, tol=1e-5),
]

SIZES = {"test": 32, "bench": 64}

KERAS_INTERNALS = [  # (object path, attribute) the correctness fixes and the optimizer reach into
    ("keras.Model", "_maybe_symbolic_build"),
    ("keras.optimizers.Optimizer", "_get_variable_index"),
    ("keras.optimizers.Optimizer", "_clip_gradients"),
    ("keras.optimizers.Optimizer", "_apply_weight_decay"),
    ("keras.optimizers.Optimizer", "_use_weight_decay"),
    ("keras.optimizers.AdamW", "_all_reduce_sum_gradients"),
    ("keras.layers.Layer", "_inbound_nodes"),
    ("keras.Model", "_symbolic_build"),
    ("keras.Model", "_compute_loss"),
]


def _flatten(out) -> list[np.ndarray]:
    out = out if isinstance(out, (list, tuple)) else [out]
    return [np.asarray(getattr(o, "numpy", lambda o=o: o)(), dtype=np.float64) for o in out if o is not None]


def run_case(case: Case, size: int, repeats: int = 0) -> dict:
    """Run one case on both paths; return max relative difference and (with repeats) timings in ms."""
    import tensorflow as tf

    from zoobot_tf.ops import fast_path

    results, times = {}, {}
    fn, inputs = case.make(size)  # the same layers and weights on both paths; each path traces its own graph
    inputs = [tf.constant(i) for i in inputs]
    for enabled in (True, False):
        with fast_path(enabled):
            traced = tf.function(fn, reduce_retracing=True) if case.trace else fn
            results[enabled] = _flatten(traced(*inputs))
            if repeats:
                start = time.perf_counter()
                for _ in range(repeats):
                    _flatten(traced(*inputs))
                times[enabled] = (time.perf_counter() - start) / repeats * 1e3
    fast, stock = results[True], results[False]
    if len(fast) != len(stock):
        return {"name": case.name, "error": f"{len(fast)} fast outputs vs {len(stock)} stock"}
    diffs = [float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-6)) for a, b in zip(fast, stock)]
    row = {"name": case.name, "max_rel_diff": max(diffs), "ok": max(diffs) <= case.tol, "tol": case.tol}
    if repeats:
        row.update(fast_ms=times[True], stock_ms=times[False], speedup=times[False] / times[True])
    return row


def check_internals() -> list[dict]:
    import keras  # noqa: F401  (the paths below are evaluated against it)
    import tensorflow as tf

    rows = []
    for path, attr in KERAS_INTERNALS:
        obj = eval(path)  # noqa: S307  (fixed, trusted strings above)
        present = hasattr(obj, attr) or (attr == "_inbound_nodes" and hasattr(keras.layers.Dense(1), attr))
        rows.append({"name": f"{path}.{attr}", "ok": present})
    rows.append({"name": "tf.__internal__.distribute.interim.maybe_merge_call",
                 "ok": hasattr(tf.__internal__.distribute.interim, "maybe_merge_call")})
    from zoobot_tf.ops import startup

    rows.append({"name": "tensorflow.python.eager.context.FunctionCallOptions (lean Grappler)",
                 "ok": startup._context is not None and hasattr(startup._context, "FunctionCallOptions")})
    return rows


def main(argv=None) -> int:
    import keras
    import tensorflow as tf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=SIZES["bench"], help="spatial size of the test inputs")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per path (0: no timing)")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}")
    rows = [run_case(c, args.size, args.repeats) for c in CASES]
    print(f"{'fast path':72s} {'agrees':>7s} {'max rel diff':>13s} {'fast ms':>9s} {'stock ms':>9s} {'speed-up':>9s}")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:72s} {'ERROR':>7s} {r['error']}")
            continue
        timing = (f" {r['fast_ms']:9.1f} {r['stock_ms']:9.1f} {r['speedup']:8.2f}x" if "speedup" in r else "")
        print(f"{r['name']:72s} {'yes' if r['ok'] else 'NO':>7s} {r['max_rel_diff']:13.2e}{timing}")
    internals = check_internals()
    print("\nKeras/TensorFlow internals used by zoobot_tf.ops:")
    for r in internals:
        print(f"  {'present' if r['ok'] else 'MISSING':8s} {r['name']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tensorflow": tf.__version__, "keras": keras.__version__, "cases": rows,
                       "internals": internals}, f, indent=2)
    bad = [r for r in rows if not r.get("ok")] + [r for r in internals if not r["ok"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
