"""The shorter first step (zoobot_tf.ops.startup) against TensorFlow's and Keras' defaults (issue 18)."""
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoobot_tf.models import Zoobot
from zoobot_tf.ops import fast_path
from zoobot_tf.ops.startup import lean_grappler


def _rewrite_options():
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.eager import context

    config = config_pb2.ConfigProto()
    config.ParseFromString(context.context().function_call_options.config_proto_serialized or b"")
    return config.graph_options.rewrite_options


def test_lean_grappler_applies_inside_the_block_only():
    from tensorflow.core.protobuf import rewriter_config_pb2 as rc

    before = _rewrite_options()
    with lean_grappler():
        inside = _rewrite_options()
    after = _rewrite_options()
    assert inside.meta_optimizer_iterations == rc.RewriterConfig.ONE
    assert inside.memory_optimization == rc.RewriterConfig.NO_MEM_OPT
    assert inside.layout_optimizer == before.layout_optimizer and inside.remapping == before.remapping
    assert after == before and before.meta_optimizer_iterations != rc.RewriterConfig.ONE
    with fast_path(False), lean_grappler():
        assert _rewrite_options() == before


def _tiny_encoder():
    inputs = keras.Input((32, 32, 1))
    x = keras.layers.Conv2D(8, 3, strides=2)(inputs)
    return keras.Model(inputs, keras.layers.BatchNormalization()(x))


GRAPPLER_PASSES = textwrap.dedent("""
    import keras, numpy as np
    from zoobot_tf.models import Zoobot
    inputs = keras.Input((32, 32, 1))
    encoder = keras.Model(inputs, keras.layers.Conv2D(8, 3, strides=2)(inputs))
    m = Zoobot(backbone=encoder, image_size=32, dropout_rate=0.0)
    m.compile()
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 5, (4, m.schema.n_answers)).astype("float32")
    m.train_on_batch(x, y)
    m.train_on_batch(x, y)
""")


@pytest.mark.parametrize("fast", ["1", "0"])
def test_the_training_step_is_optimized_once_with_one_round_of_passes(fast):
    """TensorFlow's own log: how many times Grappler's remapper and memory optimizer ran on the train step."""
    env = {**os.environ, "ZOOBOT_TF_FAST": fast, "TF_CPP_MIN_LOG_LEVEL": "0", "TF_CPP_VMODULE": "meta_optimizer=1"}
    out = subprocess.run([sys.executable, "-c", GRAPPLER_PASSES], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    passes = re.findall(r"meta_optimizer\.cc:\d+\] ([\w\-]+)(?:\{.*\})?: Graph size after", out.stderr)
    if fast == "1":  # one round, no memory optimizer, and the second call reuses the first instantiation
        assert passes.count("remapper") == 1 and "memory_optimizer" not in passes, passes
    else:  # TensorFlow's default: two rounds
        assert passes.count("remapper") == 2 and "memory_optimizer" in passes, passes


def _data(model, n=4, size=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    y = rng.integers(0, 5, (n, model.schema.n_answers)).astype("float32")
    return x, y


def _trained_under_strategy(enabled: bool, calls: list):
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with fast_path(enabled):
        keras.utils.set_random_seed(3)
        with strategy.scope():
            m = Zoobot(backbone=_tiny_encoder(), image_size=32, dropout_rate=0.0, augment=False)
            m.compile()
        original = m.call

        def counting_call(*args, **kwargs):
            calls.append(tf.executing_eagerly())
            return original(*args, **kwargs)

        m.call = counting_call
        x, y = _data(m)
        m._maybe_symbolic_build(data_batch=(x, y))
        traced_for_build = len(calls)
        m.call = original
        logs = m.train_on_batch(x, y, return_dict=True)
        return m, logs, traced_for_build


def test_under_a_strategy_the_loss_and_metrics_are_built_without_a_forward_trace():
    fast_model, fast_logs, fast_traces = _trained_under_strategy(True, [])
    stock_model, stock_logs, stock_traces = _trained_under_strategy(False, [])
    assert fast_traces == 0 and stock_traces >= 1  # the stock path really traces the model to build
    assert fast_model._compile_metrics.built and fast_model._compile_loss.built
    assert sorted(fast_logs) == sorted(stock_logs) and len(fast_logs) > 2
    for name in fast_logs:
        np.testing.assert_allclose(fast_logs[name], stock_logs[name], rtol=2e-4, err_msg=name)


def test_training_and_predicting_on_the_fast_path_never_import_tensorflow_probability():
    """tfp (and the tf-keras it imports) costs a process ~50 MB and ~0.7 s; only the stock loss uses it, so it
    is imported when that runs, not with zoobot_tf. A fresh process trains a vote model a step and predicts."""
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import zoobot_tf as zt
        from zoobot_tf.models import Zoobot
        from zoobot_tf import cli, finetuning, predictions, evaluate, training, export  # noqa: F401
        m = Zoobot(backbone="resnet_micro", image_size=32)
        m.compile()
        x = np.zeros((4, 32, 32, 3), np.float32)
        m.train_on_batch(x, np.ones((4, m.output_shape[-1]), np.float32))
        m.predict_on_batch(x)
        print("imported:", sorted(k for k in sys.modules if k.split(".")[0] in ("tensorflow_probability", "tf_keras")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "ZOOBOT_TF_FAST": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "imported: []", out.stdout[-2000:]
    with fast_path(False):  # the stock loss: tfp's DirichletMultinomial, imported on first use
        from zoobot_tf.losses import question_log_likelihood

        value = question_log_likelihood(tf.constant([[2.0, 1.0]]), tf.constant([[1.5, 0.5]]))
    assert "tensorflow_probability" in sys.modules and np.isfinite(value.numpy()).all()


def _switch_model():
    """A Zoobot with an old-style Switch/Merge in its encoder: TensorFlow's single-threaded executor refuses
    that op by name, so whether a call ran under it is visible from outside."""
    def switch(t):
        off, on = tf.raw_ops.Switch(data=t, pred=tf.reduce_sum(t) > -1.0)
        return tf.raw_ops.Merge(inputs=[off, on])[0]

    inputs = keras.Input((32, 32, 1))
    x = keras.layers.Conv2D(8, 3, strides=2)(inputs)
    x = keras.layers.Lambda(lambda t: tf.ensure_shape(switch(t), t.shape))(x)
    return Zoobot(backbone=keras.Model(inputs, x), image_size=32, dropout_rate=0.0, augment=False)


@pytest.mark.parametrize("enabled", [True, False])
def test_inference_runs_under_the_single_threaded_executor(enabled):
    """On the fast path Keras' predict function and the functions predict, embed and evaluate trace once run
    their ops in order on one thread (TensorFlow's single-threaded executor); the stock path and the test
    step keep TensorFlow's executor (Keras' evaluate: its loss and metrics run beside the forward pass)."""
    from zoobot_tf.models.traced import embedding_fn, inference_fn
    from zoobot_tf.predictions import sample_fn

    with fast_path(enabled):
        m = _switch_model()
        m.compile()
        x, y = _data(m)
        calls = {"predict_on_batch": lambda: m.predict_on_batch(x),
                 "predict": lambda: m.predict(x, batch_size=2, verbose=0),
                 "inference_fn": lambda: inference_fn(m)(x),
                 "embedding_fn": lambda: embedding_fn(m)(x),
                 "sample_fn": lambda: sample_fn(m, 3)(x, tf.range(4, dtype=tf.int64), tf.constant(0, tf.int64))}
        assert np.isfinite(m.evaluate(x, y, batch_size=2, verbose=0)).all()
        for name, call in calls.items():
            if enabled:
                with pytest.raises(tf.errors.FailedPreconditionError, match="Single-threaded executor"):
                    call()
            else:
                call()


def test_inference_calls_set_the_executor_inside_the_block_only():
    from tensorflow.core.protobuf import rewriter_config_pb2 as rc
    from tensorflow.python.eager import context

    from zoobot_tf.ops.startup import SEQUENTIAL, inference_calls

    before = context.context().function_call_options.executor_type
    with inference_calls():
        assert context.context().function_call_options.executor_type == SEQUENTIAL
        assert _rewrite_options().meta_optimizer_iterations == rc.RewriterConfig.ONE  # and the lean Grappler
    assert context.context().function_call_options.executor_type == before != SEQUENTIAL
    with fast_path(False), inference_calls():
        assert context.context().function_call_options.executor_type == before
