"""ZoobotAdamW: the fused update equals Keras' AdamW step for step."""
import keras
import numpy as np
import tensorflow as tf

from zoobot_tf.ops.optimizer import ZoobotAdamW


def _run(opt, steps=5, seed=0, eager=False):
    rng = np.random.default_rng(seed)
    a = keras.Variable(rng.normal(size=(4, 3)).astype("float32"), name="a")
    b = keras.Variable(rng.normal(size=(3,)).astype("float32"), name="bias")
    grads = [[rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(3,)).astype("float32")] for _ in range(steps)]

    def step(g):
        opt.apply(g, [a, b])

    step = step if eager else tf.function(step)

    for g in grads:
        step(g)
    return a.numpy(), b.numpy()


def test_fused_adamw_matches_keras_adamw():
    ours = _run(ZoobotAdamW(learning_rate=0.01, weight_decay=0.1, global_clipnorm=1.0))
    ref = _run(keras.optimizers.AdamW(learning_rate=0.01, weight_decay=0.1, global_clipnorm=1.0))
    for x, y in zip(ours, ref):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_weight_decay_exclusions_are_respected():
    ours = ZoobotAdamW(learning_rate=0.01, weight_decay=0.1)
    ours.exclude_from_weight_decay(var_names=["bias"])
    ref = keras.optimizers.AdamW(learning_rate=0.01, weight_decay=0.1)
    ref.exclude_from_weight_decay(var_names=["bias"])
    for x, y in zip(_run(ours), _run(ref)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_fused_adamw_matches_keras_adamw_eagerly():
    # eager steps have no graph to cache the bias-correction powers in: they must change every step
    ours = _run(ZoobotAdamW(learning_rate=0.01, weight_decay=0.1), eager=True)
    ref = _run(keras.optimizers.AdamW(learning_rate=0.01, weight_decay=0.1), eager=True)
    for x, y in zip(ours, ref):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_global_norm_clipping_matches_keras():
    import tensorflow as tf
    from keras.src.optimizers.base_optimizer import clip_by_global_norm as keras_clip

    from zoobot_tf.ops.optimizer import clip_by_global_norm

    rng = np.random.default_rng(3)
    grads = [tf.constant(rng.normal(size=s).astype("float32")) for s in [(3, 4), (5,), (2, 2, 2)]]
    for clip in (0.1, 1e6):  # active, inactive
        ours = clip_by_global_norm(grads + [None], clip)
        ref = keras_clip(grads, clip)
        assert ours[-1] is None
        for a, b in zip(ours, ref):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    bad = clip_by_global_norm([tf.constant([np.inf, 1.0])], 1.0)
    assert np.all(np.isnan(bad[0]))
