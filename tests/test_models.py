"""Backbones, the view layer, heads and the Zoobot model: shapes, independent references, round trips."""
import functools
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoobot_tf.models import GalaxyView, Zoobot
from zoobot_tf.models.backbones import build_backbone, list_backbones, stage_groups
from zoobot_tf.models.heads import DirichletConcentration

FAST = ["convnext_zepto", "convnext_atto", "efficientnet_b0", "efficientnetv2_b0", "resnet18", "resnet_micro"]


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("channels", [1, 3])
def test_backbones_build_offline_for_small_inputs(name, channels):
    enc = build_backbone(name, (32, 32, channels))
    out = enc(np.random.default_rng(0).uniform(0, 1, (2, 32, 32, channels)).astype("float32"))
    assert out.shape[0] == 2 and len(out.shape) == 2
    assert np.all(np.isfinite(out.numpy()))


@pytest.mark.parametrize("ours,reference", [
    ("efficientnet_b0", lambda: keras.applications.EfficientNetB0(include_top=False, weights=None, pooling="avg",
                                                                   input_shape=(64, 64, 3))),
    ("efficientnetv2_s", lambda: keras.applications.EfficientNetV2S(include_top=False, weights=None, pooling="avg",
                                                                    input_shape=(64, 64, 3),
                                                                    include_preprocessing=False)),
    ("convnext_tiny", lambda: keras.applications.ConvNeXtTiny(include_top=False, weights=None, pooling="avg",
                                                              input_shape=(64, 64, 3), include_preprocessing=False)),
])
def test_parameter_counts_match_keras_applications(ours, reference):
    ref = reference()
    # keras' EfficientNetB0 carries a 7-value Normalization layer we do not use (images are in [0, 1])
    norm = sum(int(np.prod(w.shape)) for l in ref.layers if isinstance(l, keras.layers.Normalization) for w in l.weights)
    assert build_backbone(ours, (64, 64, 3)).count_params() == ref.count_params() - norm


def test_convnext_uses_depthwise_not_grouped_convolutions():
    enc = build_backbone("convnext_atto", (64, 64, 1))
    dw = [l for l in enc.layers if isinstance(l, keras.layers.DepthwiseConv2D)]
    grouped = [l for l in enc.layers if isinstance(l, keras.layers.Conv2D) and getattr(l, "groups", 1) > 1]
    assert len(dw) == 12 and not grouped
    assert all(l.kernel_size == (7, 7) for l in dw)


def test_registry_rejects_bad_arguments():
    with pytest.raises(KeyError, match="Available"):
        build_backbone("not-a-net", (64, 64, 1))
    with pytest.raises(ValueError, match="at least 32"):
        build_backbone("resnet18", (16, 16, 1))
    assert {"convnext_nano", "efficientnet_b0", "resnet50", "efficientnetv2_s"} <= set(list_backbones())


def test_stage_groups_cover_the_encoder_in_order():
    enc = build_backbone("convnext_zepto", (32, 32, 1))
    groups = stage_groups(enc, "convnext_zepto")
    assert len(groups) == 6  # stem, 4 stages, head norm
    assert groups[0][0].name.startswith("stem") and groups[-1][0].name.startswith("head")
    assert sum(len(g) for g in groups) == len([l for l in enc.layers if l.weights])


# ----------------------------------------------------------------------------- view layer
def test_view_divides_by_255_exactly_once():
    view = GalaxyView(image_size=32, channels=1, augment=False)
    grey = np.full((1, 32, 32, 3), 128, np.uint8)
    out = view(grey).numpy()
    np.testing.assert_allclose(out, 128 / 255, atol=1e-6)
    assert out.max() <= 1.0
    # float input in [0, 255] gives the same answer as uint8
    np.testing.assert_allclose(view(grey.astype("float32")).numpy(), out)


def test_view_greyscale_is_channel_mean_and_alpha_is_dropped():
    rgb = np.zeros((1, 32, 32, 3), np.float32)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 30, 60, 90
    rgba = np.concatenate([rgb, np.full((1, 32, 32, 1), 255, np.float32)], -1)
    grey = GalaxyView(32, 1, augment=False)
    np.testing.assert_allclose(grey(rgb).numpy(), 60 / 255, atol=1e-6)
    np.testing.assert_allclose(grey(rgba).numpy(), 60 / 255, atol=1e-6)
    colour = GalaxyView(32, 3, augment=False)
    np.testing.assert_allclose(colour(rgba).numpy()[0, 5, 5], [30 / 255, 60 / 255, 90 / 255], atol=1e-6)
    np.testing.assert_allclose(colour(rgb[..., :1]).numpy()[0, 5, 5], [30 / 255] * 3, atol=1e-6)


def test_view_resizes_any_size_and_crops_the_centre():
    img = np.zeros((1, 100, 100, 3), np.float32)
    img[:, 40:60, 40:60] = 255  # a bright central square, 20% of the side
    view = GalaxyView(32, 1, crop_fraction=0.4, augment=False)
    out = view(img).numpy()[0, ..., 0]
    assert out.shape == (32, 32)
    # the central 40% (40 px) fills the 32 px output: the square covers the middle half
    assert out[16, 16] > 0.95 and out[2, 2] < 0.05 and out[8, 16] > 0.4


def test_augmentation_only_in_training_and_flip_false_never_mirrors():
    x = np.random.default_rng(0).uniform(0, 255, (8, 48, 48, 3)).astype("float32")
    view = GalaxyView(32, 1)
    a, b = view(x, training=False).numpy(), view(x, training=False).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(view(x, training=True).numpy() - a).mean() > 0.01
    for flip, expect_mirror in [(False, False), (True, True)]:
        v = GalaxyView(32, 1, flip=flip)
        t = v._transforms(512, random=True).numpy()
        det = t[:, 0] * t[:, 4] - t[:, 1] * t[:, 3]
        assert (det < 0).any() == expect_mirror  # a negative determinant is a mirror image


@pytest.mark.parametrize("fill_mode", ["reflect", "nearest", "constant", "wrap"])
@pytest.mark.parametrize("crop_fraction,size_in", [(1.0, 32), (1.0, 45), (0.5, 64), (0.8, 40)])
def test_inference_shift_equals_the_projective_transform(fill_mode, crop_fraction, size_in):
    """The inference view's two-tap shift gives ImageProjectiveTransformV3's numbers for the same map."""
    import tensorflow as tf

    view = GalaxyView(32, 3, crop_fraction=crop_fraction, fill_mode=fill_mode)
    images = tf.constant(np.random.default_rng(9).uniform(0, 255, (3, size_in, size_in, 3)).astype("float32"))
    x = view.resize_to_load_size(images)
    expected = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=view._transforms(3, random=False), output_shape=[32, 32], fill_value=0.0,
        interpolation="BILINEAR", fill_mode=fill_mode.upper()) / 255.0
    np.testing.assert_allclose(view(images, training=False), expected, rtol=1e-5, atol=1e-5)


def test_inference_resampling_matches_training_noise_level():
    noise = tf.random.stateless_normal((32, 64, 64, 3), seed=[1, 2], mean=128, stddev=30)
    view = GalaxyView(64, 1)
    train_std = view(noise, training=True).numpy()[:, 8:-8, 8:-8].std()
    test_std = view(noise, training=False).numpy()[:, 8:-8, 8:-8].std()
    assert abs(train_std / test_std - 1) < 0.03


# ----------------------------------------------------------------------------- model
def test_concentrations_in_range_and_float32_under_mixed_precision():
    act = DirichletConcentration()
    out = act(np.array([[-1e4, 0.0, 1e4]], np.float32)).numpy()
    np.testing.assert_allclose(out, [[1.0, 51.0, 101.0]])
    m = Zoobot(schema="gz_rings", backbone="convnext_zepto", image_size=32, precision="mixed_bfloat16")
    y = m(np.zeros((2, 40, 40, 3), np.float32))
    assert y.dtype == tf.float32 and y.shape == (2, 2)
    assert m.get_layer("encoder").get_layer("stem.0").compute_dtype == "bfloat16"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


@pytest.mark.parametrize("task,kwargs", [("votes", {"schema": "gz_decals_dr5"}),
                                         ("classification", {"class_names": ["a", "b", "c"]}),
                                         ("regression", {"n_targets": 2})])
def test_keras_file_round_trip_gives_identical_outputs(tmp_path, task, kwargs):
    m = Zoobot(task=task, backbone="convnext_zepto", image_size=32, **kwargs)
    x = np.random.default_rng(1).uniform(0, 255, (3, 50, 50, 3)).astype("float32")
    path = tmp_path / "m.keras"
    m.save(path)
    again = keras.models.load_model(path)
    assert isinstance(again, Zoobot) and again.task == m.task and again.task.name == task
    np.testing.assert_array_equal(again.predict(x, verbose=0), m.predict(x, verbose=0))
    assert again.get_config() == m.get_config()


def test_compiled_models_load_with_plain_keras_in_a_fresh_process(tmp_path):
    """As the Zoobot module's docstring tells a user: ``from zoobot_tf import Zoobot`` and then Keras' own
    ``load_model``, in a process that has imported nothing else of zoobot_tf (this one has imported it all, which
    once hid that a compiled model's loss and metrics were not registered by that import)."""
    x = np.random.default_rng(4).uniform(0, 255, (2, 40, 40, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    expected = {}
    for task, kwargs in (("votes", {"schema": "gz_decals_dr5"}), ("classification", {"class_names": ["a", "b"]})):
        m = Zoobot(task=task, backbone="convnext_zepto", image_size=32, **kwargs)
        m.compile()
        m.save(tmp_path / f"{task}.keras")
        expected[task] = m.predict(x, verbose=0)
    script = (
        "import sys, numpy as np\n"
        "from zoobot_tf import Zoobot\n"
        "import keras\n"
        "folder = sys.argv[1]\n"
        "x = np.load(folder + '/x.npy')\n"
        "for task in ('votes', 'classification'):\n"
        "    m = keras.models.load_model(f'{folder}/{task}.keras')\n"
        "    assert isinstance(m, Zoobot) and m.compiled, task\n"
        "    np.save(f'{folder}/{task}.npy', m.predict(x, verbose=0))\n"
    )
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    for task, want in expected.items():
        np.testing.assert_array_equal(np.load(tmp_path / f"{task}.npy"), want)


def test_inference_and_finetuning_load_a_saved_model_without_its_optimizer(tmp_path, monkeypatch):
    """predict, embed and a finetuning's pretrained encoder need the weights, not the loss and optimizer: they
    load uncompiled (no slot variables, two more copies of the trainable weights), and predict the same."""
    from helpers import write_images

    import zoobot_tf as zt
    from zoobot_tf.models.resolve import load_model

    m = Zoobot(backbone="resnet_micro", image_size=32)
    m.compile()
    m.save(tmp_path / "m.keras")
    compiled, bare = load_model(tmp_path / "m.keras"), load_model(tmp_path / "m.keras", compile=False)
    assert compiled.compiled and len(compiled.optimizer.variables) > 2 * len(m.trainable_variables)
    assert not bare.compiled and getattr(bare, "optimizer", None) is None
    x = np.random.default_rng(5).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(bare.predict_on_batch(x), compiled.predict_on_batch(x))

    seen, original = [], keras.models.load_model
    monkeypatch.setattr(keras.models, "load_model", lambda *a, **k: seen.append(k.get("compile", True)) or
                        original(*a, **k))
    write_images(tmp_path / "imgs", 2, size=32)
    zt.predict(tmp_path / "m.keras", tmp_path / "imgs", tmp_path / "p.csv", n_samples=1, progress=False)
    zt.embed(tmp_path / "m.keras", tmp_path / "imgs", tmp_path / "e.csv", progress=False)
    zt.Finetuner(tmp_path / "m.keras", task="classification", class_names=["a", "b"])
    assert seen == [False, False, False]


def test_compile_defaults_fit_one_step_and_head_prior():
    m = Zoobot(schema="gz_decals_dr5", backbone="resnet_micro", image_size=32)
    m.compile()
    prior = np.linspace(1.5, 20, 34)
    m.init_head_prior(prior, kernel_scale=0.0)
    x = np.random.default_rng(2).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(m.predict(x, verbose=0), np.tile(prior, (4, 1)), rtol=1e-4)
    counts = np.random.default_rng(3).integers(0, 10, (4, 34)).astype("float32")
    hist = m.fit(x, counts, epochs=1, verbose=0).history
    assert np.isfinite(hist["loss"][0]) and "loss_smooth-or-featured" in hist


def test_mc_dropout_head_samples_differ_but_inference_is_deterministic():
    m = Zoobot(schema="gz_rings", backbone="convnext_zepto", image_size=32, dropout_rate=0.5)
    x = np.random.default_rng(4).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    emb = m.embedding_model()(x)
    assert emb.shape == (2, m.embedding_dim)
    a, b = m.apply_head(emb, training=True), m.apply_head(emb, training=True)
    assert not np.allclose(a, b)
    np.testing.assert_allclose(m.apply_head(emb), m(x, training=False), rtol=1e-5)


def test_bad_model_arguments_are_named():
    with pytest.raises(ValueError, match="task"):
        Zoobot(task="segmentation")
    with pytest.raises(ValueError, match="n_classes"):
        Zoobot(task="classification", n_classes=1, backbone="convnext_zepto", image_size=32)
    with pytest.raises(ValueError, match="channels"):
        Zoobot(backbone="convnext_zepto", image_size=32, channels=2)


def test_fused_batchnorm_matches_keras_batchnorm():
    from zoobot_tf.ops.layers import FusedBatchNormalization

    x = np.random.default_rng(5).normal(2.0, 3.0, (4, 6, 6, 5)).astype("float32")
    ours = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)
    ref = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    ours.build(x.shape)
    ref.build(x.shape)
    rng = np.random.default_rng(6)
    weights = [rng.normal(size=5).astype("float32"), rng.normal(size=5).astype("float32"),
               rng.normal(size=5).astype("float32"), rng.uniform(0.5, 2, 5).astype("float32")]
    ours.set_weights(weights)
    ref.set_weights(weights)
    np.testing.assert_allclose(ours(x, training=False), ref(x, training=False), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours(x, training=True), ref(x, training=True), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours.moving_mean.numpy(), ref.moving_mean.numpy(), rtol=1e-5)
    from zoobot_tf import ops

    if ops.fast():  # the fused kernel updates the moving variance with the unbiased batch variance
        unbiased = weights[3] * 0.9 + x.var(axis=(0, 1, 2), ddof=1) * 0.1
        np.testing.assert_allclose(ours.moving_variance.numpy(), unbiased, rtol=1e-4)
    else:  # the stock path is Keras's own layer
        np.testing.assert_allclose(ours.moving_variance.numpy(), ref.moving_variance.numpy(), rtol=1e-5)
    # two more training steps in a traced function: the moving averages compound step after step
    step = tf.function(lambda t: (ours(t, training=True), ref(t, training=True)))
    x2 = x[::-1] * 0.5 + 1.0
    for batch in (x2, x):
        step(tf.constant(batch))
    np.testing.assert_allclose(ours.moving_mean.numpy(), ref.moving_mean.numpy(), rtol=1e-5, atol=1e-6)
    variances = [b.var(axis=(0, 1, 2), ddof=1 if ops.fast() else 0) for b in (x, x2, x)]
    expected = weights[3]
    for v in variances:
        expected = expected * 0.9 + v * 0.1
    np.testing.assert_allclose(ours.moving_variance.numpy(), expected, rtol=1e-4)


def test_pointwise_equals_dense_then_gelu():
    from zoobot_tf.ops.layers import Pointwise

    x = np.random.default_rng(7).normal(size=(2, 5, 5, 8)).astype("float32")
    pw = Pointwise(12, activation="gelu")
    dense = keras.layers.Dense(12)
    pw.build(x.shape)
    dense.build(x.shape)
    dense.set_weights(pw.get_weights())
    expected = keras.activations.gelu(dense(x), approximate=False)
    np.testing.assert_allclose(pw(x), expected, rtol=1e-5, atol=1e-6)
    assert pw.compute_output_shape((None, 5, 5, 8)) == (None, 5, 5, 12)


def test_pointwise_training_gradients_equal_dense_gelu_layerscale():
    """ConvNeXt's MLP in training (XLA-fused GELU; LayerScale folded into fc2's kernel) against
    Dense -> GELU -> Dense -> x gamma differentiated by TensorFlow: same outputs, same gradients for the
    inputs and every weight; and the inference path (GELU fused into the MatMul) gives the same numbers."""
    import tensorflow as tf

    from zoobot_tf.ops.layers import Pointwise

    rng = np.random.default_rng(8)
    x = tf.constant(rng.normal(size=(2, 5, 5, 8)).astype("float32") * 3)
    fc1 = Pointwise(12, activation="gelu")
    fc2 = Pointwise(8, layer_scale=0.5, layer_scale_name="blk.gamma")
    fc1.build(x.shape)
    fc2.build((2, 5, 5, 12))
    weights = [rng.normal(size=(8, 12)), rng.normal(size=12), rng.normal(size=(12, 8)), rng.normal(size=8),
               rng.uniform(0.5, 2.0, 8)]
    weights = [w.astype("float32") for w in weights]
    fc1.set_weights(weights[:2])
    fc2.set_weights(weights[2:])
    refs = [tf.Variable(w) for w in weights]

    def reference(t):
        k1, b1, k2, b2, g = refs
        h = tf.nn.gelu(tf.einsum("bhwc,cd->bhwd", t, k1) + b1, approximate=False)
        return (tf.einsum("bhwc,cd->bhwd", h, k2) + b2) * g

    dy = tf.constant(rng.normal(size=(2, 5, 5, 8)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = fc2(fc1(x, training=True), training=True)
        ref = reference(x)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    got = tape.gradient(ours, [x, fc1.kernel, fc1.bias, fc2.kernel, fc2.bias, fc2.gamma], dy)
    want = tape.gradient(ref, [x] + refs, dy)
    for a, e in zip(got, want):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)
    infer = tf.function(lambda t: fc2(fc1(t, training=False), training=False))
    np.testing.assert_allclose(infer(x), ref, rtol=1e-5, atol=1e-5)
    assert fc2.get_config()["layer_scale"] == 0.5
    with pytest.raises(ValueError, match="linear"):
        Pointwise(4, activation="gelu", layer_scale=1e-6)


def test_fused_gelu_gradient_is_finite_and_exact_at_extremes():
    import tensorflow as tf

    from zoobot_tf.ops.layers import fused_gelu

    x = tf.constant([-1e4, -40.0, -5.0, -1e-3, 0.0, 1e-3, 5.0, 40.0, 1e4], tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = fused_gelu(x)
        ref = tf.nn.gelu(x, approximate=False)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)
    g_ours, g_ref = tape.gradient(ours, x), tape.gradient(ref, x)
    assert np.all(np.isfinite(g_ours))
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-5, atol=1e-6)


def test_fused_gelu_in_bfloat16_rounds_the_float32_result():
    import tensorflow as tf

    from zoobot_tf.ops.layers import fused_gelu

    x32 = tf.constant(np.random.default_rng(0).normal(0, 3, 4096), tf.float32)
    x = tf.cast(x32, tf.bfloat16)
    dy = tf.cast(tf.constant(np.random.default_rng(1).normal(0, 1, 4096), tf.float32), tf.bfloat16)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = fused_gelu(x)
        ref = tf.nn.gelu(tf.cast(x, tf.float32), approximate=False)
    assert ours.dtype == tf.bfloat16
    g_ours = tape.gradient(ours, x, output_gradients=dy)
    g_ref = tape.gradient(ref, x, output_gradients=tf.cast(dy, tf.float32))
    assert g_ours.dtype == tf.bfloat16
    # bfloat16 keeps 8 significant bits: the float32 result, rounded once; in the far negative tail (GELU
    # below 1e-5 in size) the fused kernels' erf is exact to 1e-6 absolute, not relative, as erfc would be
    ulp = 2.0 ** -7
    np.testing.assert_allclose(tf.cast(ours, tf.float32), ref, rtol=ulp, atol=1e-6)
    np.testing.assert_allclose(tf.cast(g_ours, tf.float32), tf.cast(g_ref, tf.float32), rtol=ulp, atol=1e-6)


def _relative_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_convnext_under_mixed_bfloat16_runs_only_matmuls_in_bfloat16_and_matches_float32():
    """Under mixed_bfloat16 ConvNeXt keeps depthwise convs and the residual stream in float32, and its
    LayerNorms compute in float32 (those before a bfloat16 layer hand it bfloat16); its outputs and loss
    gradients stay within bfloat16 rounding of the float32 model's."""
    import tensorflow as tf


    kw = dict(schema="gz_rings", backbone="convnext_zepto", image_size=32, dropout_rate=0.0, augment=False,
              backbone_kwargs={"ls_init_value": 0.5})  # large layer scale: the MLPs matter to the output
    ref = Zoobot(**kw)
    mixed = ref.with_precision("mixed_bfloat16")
    assert mixed.precision == "mixed_bfloat16" and ref.with_precision(None) is ref
    kinds = {}
    for layer in mixed.encoder.layers:
        kinds.setdefault(type(layer).__name__, set()).add(layer.compute_dtype)
    for name in ("DepthwiseConv2D", "Add", "GlobalAveragePooling2D"):
        assert kinds[name] == {"float32"}, (name, kinds[name])
    norms = {layer.name: layer.compute_dtype for layer in mixed.encoder.layers
             if type(layer).__name__ == "LayerNormalization"}
    before_bfloat16 = {n for n in norms if n.startswith("stages.")}
    assert before_bfloat16 and {norms[n] for n in before_bfloat16} == {"bfloat16"}
    assert {norms[n] for n in set(norms) - before_bfloat16} == {"float32"}, norms  # stem.1, head.norm
    assert kinds["Pointwise"] == {"bfloat16"} and kinds["Conv2D"] == {"bfloat16"}
    assert all(v.dtype == "float32" for v in mixed.weights)

    x = tf.constant(np.random.default_rng(5).uniform(0, 255, (4, 32, 32, 3)), tf.float32)
    counts = tf.constant(np.random.default_rng(6).integers(0, 12, (4, 2)), tf.float32)
    loss_fn = ref.compile() or ref.loss
    mixed.compile()
    results = []
    for m in (ref, mixed):
        with tf.GradientTape() as tape:
            y = m(x, training=True)
            loss = tf.reduce_mean(m.loss(counts, y))
        results.append((m.embedding_model()(x, training=False), y, loss, tape.gradient(loss, m.trainable_weights)))
    (e_ref, y_ref, l_ref, g_ref), (e_mix, y_mix, l_mix, g_mix) = results
    assert 1e-4 < _relative_error(e_mix, e_ref) < 0.02  # bfloat16 is used, and only rounds
    assert _relative_error(y_mix, y_ref) < 0.02 and abs(float(l_mix) / float(l_ref) - 1) < 0.01
    for w, a, b in zip(ref.trainable_weights, g_mix, g_ref):
        assert a.dtype == tf.float32 and _relative_error(a, b) < 0.05, w.path


def test_efficientnet_inference_under_mixed_bfloat16_matches_float32():
    """EfficientNet runs wholly in bfloat16 (with batch norms folded into bfloat16 convolutions)."""
    import tensorflow as tf

    ref = Zoobot(schema="gz_rings", backbone="efficientnet_b0", image_size=64, dropout_rate=0.0)
    _randomise_batch_norms(ref.encoder)
    mixed = ref.with_precision("mixed_bfloat16")
    x = tf.constant(np.random.default_rng(7).uniform(0, 255, (4, 64, 64, 3)), tf.float32)
    e_ref = tf.function(ref.embedding_model())(x)
    e_mix = tf.function(mixed.embedding_model())(x)
    dtypes = {layer.compute_dtype for layer in mixed.encoder.layers if layer.weights}
    assert dtypes == {"bfloat16"}, dtypes
    assert 1e-4 < _relative_error(tf.cast(e_mix, tf.float32), e_ref) < 0.05


def test_efficientnet_training_under_mixed_bfloat16_runs_depthwise_convs_in_float32():
    """TensorFlow's bfloat16 depthwise-convolution gradients are slow on CPUs, so in training under
    mixed_bfloat16 the depthwise convs run in float32 on the fast path (inference keeps them in bfloat16,
    folded; the stock path runs Keras' bfloat16 layer). The training step stays within bfloat16 rounding of
    the float32 model's (a random EfficientNet's batch norms over 8 galaxies amplify that rounding, hence the
    loose bounds)."""
    import keras
    import tensorflow as tf

    from zoobot_tf import ops

    keras.utils.set_random_seed(0)
    ref = Zoobot(schema="gz_rings", backbone="efficientnet_b0", image_size=64, dropout_rate=0.0, augment=False)
    mixed = ref.with_precision("mixed_bfloat16")
    x = tf.constant(np.random.default_rng(8).uniform(0, 255, (8, 64, 64, 1)), tf.float32)
    counts = tf.constant(np.random.default_rng(9).integers(0, 12, (8, 2)), tf.float32)
    results = []
    for m in (ref, mixed):
        m.compile()

        @tf.function
        def step(m=m):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(m.loss(counts, m(x, training=True)))
            return loss, tape.gradient(loss, m.trainable_weights)

        results.append(step())
        if m is mixed:
            for training, dtype in ((True, tf.float32 if ops.fast() else tf.bfloat16), (False, tf.bfloat16)):
                graph = (step if training else tf.function(lambda: m(x, training=False))).get_concrete_function().graph
                convs = [op for op in graph.get_operations() if op.type == "DepthwiseConv2dNative"]
                assert len(convs) == 16 and {op.get_attr("T") for op in convs} == {dtype}, training
    (l_ref, g_ref), (l_mix, g_mix) = results
    assert abs(float(l_mix) / float(l_ref) - 1) < 0.03
    a, b = (np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in g]) for g in (g_mix, g_ref))
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.95  # the same direction of descent


def _randomise_batch_norms(encoder, seed=0):
    from zoobot_tf.ops.layers import FusedBatchNormalization

    rng = np.random.default_rng(seed)
    bns = [l for l in encoder.layers if isinstance(l, FusedBatchNormalization)]
    for bn in bns:
        c = bn.gamma.shape[0]
        bn.set_weights([rng.uniform(0.5, 2, c), rng.normal(size=c), rng.normal(size=c) * 0.1, rng.uniform(0.5, 2, c)])
    return bns


@pytest.mark.parametrize("backbone", ["efficientnet_b0", "resnet18"])
def test_batch_norm_folding_equals_conv_then_batch_norm(backbone):
    """Inference with every conv -> BN pair folded (in a tf.function, where the graph optimiser fuses
    the result) equals the unfolded layers; training with batch statistics is untouched; with frozen
    batch norms the folded training path gives the same loss gradients."""
    import tensorflow as tf

    from zoobot_tf.models import build_backbone

    encoder = build_backbone(backbone, input_shape=(64, 64, 1))
    bns = _randomise_batch_norms(encoder)
    assert bns and all(bn._folded_into is not None for bn in bns)
    x = tf.constant(np.random.default_rng(1).uniform(0, 1, (4, 64, 64, 1)).astype("float32"))

    def outputs_and_grads(training):
        with tf.GradientTape() as tape:
            y = encoder(x, training=training)
            loss = tf.reduce_sum(tf.square(y))
        return y, tape.gradient(loss, encoder.trainable_variables)

    weights = encoder.get_weights()  # training calls move the BN statistics: restore before each run

    def run_all():
        encoder.set_weights(weights)
        infer = tf.function(lambda t: encoder(t, training=False))(x)
        train = encoder(x, training=True)
        encoder.set_weights(weights)
        for bn in bns:
            bn.trainable = False
        frozen = outputs_and_grads(True)
        for bn in bns:
            bn.trainable = True
        return infer, train, frozen

    folded = run_all()
    for bn in bns:
        bn._folded_into = None  # unlink: every layer runs on its own
    plain = run_all()
    scale = float(np.abs(plain[0]).max())
    for a, b in [(folded[0], plain[0]), (folded[1], plain[1]), (folded[2][0], plain[2][0])]:
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * scale)
    for a, b in zip(folded[2][1], plain[2][1]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * float(np.abs(b).max()))


def test_explicit_padding_equals_zero_padding_then_valid_conv():
    import tensorflow as tf

    from zoobot_tf.ops.layers import Conv2D, DepthwiseConv2D

    x = tf.constant(np.random.default_rng(2).normal(size=(2, 15, 16, 4)).astype("float32"))
    for ours, ref in [(Conv2D(6, 3, strides=2, explicit_padding=1), keras.layers.Conv2D(6, 3, strides=2)),
                      (DepthwiseConv2D(5, strides=2, explicit_padding=2), keras.layers.DepthwiseConv2D(5, strides=2))]:
        p = ours.explicit_padding
        padded = keras.layers.ZeroPadding2D(p)(x)
        ref.build(padded.shape)
        ours.build(x.shape)
        ours.set_weights(ref.get_weights())
        expected = ref(padded)
        np.testing.assert_allclose(tf.function(lambda t: ours(t))(x), expected, rtol=1e-5, atol=1e-5)
        assert ours.compute_output_shape(x.shape) == tuple(expected.shape)
    with pytest.raises(ValueError, match="explicit_padding"):
        Conv2D(4, 3, padding="same", explicit_padding=1)


def test_global_average_pool_equals_keras():
    import tensorflow as tf

    from zoobot_tf.ops.layers import GlobalAveragePooling2D

    x = tf.constant(np.random.default_rng(4).normal(size=(3, 7, 5, 6)).astype("float32"))
    for keepdims in (True, False):
        ours = tf.function(lambda t: GlobalAveragePooling2D(keepdims=keepdims)(t))(x)
        np.testing.assert_allclose(ours, keras.layers.GlobalAveragePooling2D(keepdims=keepdims)(x),
                                   rtol=1e-5, atol=1e-6)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = GlobalAveragePooling2D(keepdims=keepdims)(x)
        np.testing.assert_allclose(tape.gradient(y, x), np.full(x.shape, 1 / 35, "float32"), rtol=1e-5)


@pytest.fixture
def on_the_fast_path():
    """For tests of what the fast path does (CI also runs this file with ZOOBOT_TF_FAST=0)."""
    from zoobot_tf.ops import fast_path

    with fast_path(True):
        yield


def _train_step_results(model, x, freeze_batch_norms=False):
    """One traced training-mode step of ``model`` from its current weights: (outputs, loss gradients, batch
    norm moving statistics after the step, which linked batch norms applied their swish, which MLPs left
    their GELU to the next layer); restores the weights afterwards."""
    import tensorflow as tf

    from zoobot_tf.ops.layers import FusedBatchNormalization

    weights = model.get_weights()
    bns = [l for l in model.encoder.layers if isinstance(l, FusedBatchNormalization)]
    for bn in bns:
        bn.trainable = not freeze_batch_norms

    @tf.function
    def step(t):
        with tf.GradientTape() as tape:
            y = tf.cast(model(t, training=True), tf.float32)
            w = tf.cos(tf.range(y.shape[-1], dtype=tf.float32))
            loss = tf.reduce_sum(tf.math.log(y) * w)
        return y, tape.gradient(loss, model.trainable_variables)

    y, grads = step(x)
    fused = [bn.applies_swish(True) for bn in bns if bn._swish_into is not None]
    deferred = [l.defers_gelu(True) for l in model.encoder.layers if getattr(l, "_gelu_into", None) is not None]
    stats = [v.numpy() for bn in bns for v in (bn.moving_mean, bn.moving_variance)]
    for bn in bns:
        bn.trainable = True
    model.set_weights(weights)
    return y.numpy(), [tf.cast(g, tf.float32).numpy() for g in grads], stats, fused, deferred


def _assert_same_step(a, b):
    """Two :func:`_train_step_results` agree: outputs, loss gradients and moving statistics."""
    np.testing.assert_allclose(a[0], b[0], rtol=1e-4)
    scale = max(float(np.abs(g).max()) for g in b[1])  # some gradients are ~0 (a batch norm follows them)
    for ga, gb in zip(a[1], b[1]):
        np.testing.assert_allclose(ga, gb, rtol=1e-4, atol=1e-4 * scale)
    for sa, sb in zip(a[2], b[2]):
        np.testing.assert_allclose(sa, sb, rtol=1e-5, atol=1e-6)


def _unlink(model, attr):
    for layer in model.encoder.layers:
        if getattr(layer, attr, None) is not None:
            setattr(layer, attr, None)  # the two linked layers run each on its own


@pytest.mark.usefixtures("on_the_fast_path")
def test_batch_norm_swish_fusion_trains_as_the_separate_layers():
    """EfficientNet's batch norm -> SiLU pairs, linked so that training runs each as one op that recomputes
    the swish's input in the backward pass (less memory): in float32 the same outputs, loss gradients and
    moving statistics as the two layers one after the other; frozen batch norms never fuse. Under
    mixed_bfloat16 (where the recomputed input is float32, not the rounded bfloat16 one) the gradients are
    no further from the float32 model's than the separate layers' are."""
    import tensorflow as tf

    from zoobot_tf.ops.layers import SiLU

    model = Zoobot(schema="gz_rings", backbone="efficientnet_b0", image_size=64, dropout_rate=0.0, augment=False)
    bns = _randomise_batch_norms(model.encoder, seed=3)
    linked = [bn for bn in bns if bn._swish_into is not None]
    assert len(linked) == 33  # every batch norm followed by a swish (the projections' are not)
    assert all(isinstance(bn._swish_into(), SiLU) for bn in linked)
    x = tf.constant(np.random.default_rng(4).uniform(0, 255, (4, 64, 64, 1)).astype("float32"))
    mixed = model.with_precision("mixed_bfloat16")

    fused, fused_frozen, fused_mixed = _train_step_results(model, x), _train_step_results(model, x, True), \
        _train_step_results(mixed, x)
    assert all(fused[3]) and not any(fused_frozen[3]) and len(fused_mixed[3]) == 33 and all(fused_mixed[3])
    _unlink(model, "_swish_into")
    _unlink(mixed, "_swish_into")
    plain, plain_frozen, plain_mixed = _train_step_results(model, x), _train_step_results(model, x, True), \
        _train_step_results(mixed, x)
    assert not any(plain[3])
    for a, b in [(fused, plain), (fused_frozen, plain_frozen)]:
        _assert_same_step(a, b)
    assert not np.allclose(fused[2][0], fused_frozen[2][0])  # the statistics did move in training

    error = functools.partial(_relative_gradient_error, reference=plain[1])
    assert 0 < error(fused_mixed[1]) <= 1.1 * error(plain_mixed[1]), (error(fused_mixed[1]), error(plain_mixed[1]))
    np.testing.assert_allclose(fused_mixed[0], plain_mixed[0], rtol=1e-2)


@pytest.mark.usefixtures("on_the_fast_path")
def test_squeeze_excite_projection_trains_as_the_separate_layers():
    """EfficientNet's squeeze-excite gate and the 1x1 projection after it, linked so that training runs them
    as one batched MatMul with a kernel per image (where the image is at least as large as that kernel): in
    float32 the same outputs, loss gradients and moving statistics as the multiply and the conv one after
    the other, also with frozen batch norms (folded into the projection)."""
    import tensorflow as tf

    from zoobot_tf.ops.layers import ChannelScale

    def linked(m):
        return [l for l in m.encoder.layers if isinstance(l, ChannelScale) and l._projected_by is not None]

    assert len(linked(Zoobot(schema="gz_rings", backbone="efficientnet_b0", image_size=224))) == 11  # of 16
    model = Zoobot(schema="gz_rings", backbone="efficientnet_b0", image_size=64, dropout_rate=0.0, augment=False)
    _randomise_batch_norms(model.encoder, seed=5)
    assert len(linked(model)) == 5  # 32, 16 and 8 px: H W >= the projection's channels
    assert all(l._projected_by()._scaled_by() is l and l._projected_by().kernel_size == (1, 1) for l in linked(model))
    x = tf.constant(np.random.default_rng(6).uniform(0, 255, (4, 64, 64, 1)).astype("float32"))
    mixed = model.with_precision("mixed_bfloat16")
    assert len(linked(mixed)) == 5
    runs = lambda: (_train_step_results(model, x), _train_step_results(model, x, True),  # noqa: E731
                    _train_step_results(mixed, x))
    fused = runs()
    _unlink(model, "_projected_by")
    _unlink(mixed, "_projected_by")
    plain = runs()
    for a, b in zip(fused[:2], plain[:2]):
        _assert_same_step(a, b)
    # under mixed_bfloat16 this random model's outputs move by up to ~15% with where a product is rounded,
    # linked or not: the accuracy of the linked layers in bfloat16 is the next test's
    assert all(np.isfinite(g).all() for g in fused[2][1]) and np.isfinite(fused[2][0]).all()


@pytest.mark.usefixtures("on_the_fast_path")
def test_squeeze_excite_projection_in_bfloat16_is_as_accurate_as_the_separate_layers():
    """The linked gate and projection under mixed_bfloat16 against float64 arithmetic: output and gradients
    (images, gate, kernel) no further from it than the multiply and the conv one after the other."""
    import tensorflow as tf

    from zoobot_tf.models.backbones.common import conv2d
    from zoobot_tf.models.zoobot import dtype_policy
    from zoobot_tf.ops.layers import ChannelScale, fuse_channel_scale

    rng = np.random.default_rng(7)
    x, s = rng.normal(size=(4, 16, 16, 48)), rng.uniform(0, 1, (4, 1, 1, 48))
    kernel, dy = rng.normal(size=(48, 24)) * 0.2, rng.normal(size=(4, 16, 16, 24))
    expected = [np.einsum("bhwc,bc,co->bhwo", x, s[:, 0, 0], kernel), np.einsum("bhwo,bc,co->bhwc", dy, s[:, 0, 0], kernel),
                np.einsum("bhwo,bhwc,co->bc", dy, x, kernel)[:, None, None], np.einsum("bhwo,bhwc,bc->co", dy, x, s[:, 0, 0])]

    def errors(link):
        with dtype_policy("mixed_bfloat16"):
            inputs = [keras.Input((16, 16, 48)), keras.Input((1, 1, 48))]
            model = keras.Model(inputs, conv2d(ChannelScale()(inputs), 24, 1, name="proj"))
        model.get_layer("proj").set_weights([kernel[None, None].astype("float32")])
        if link:
            assert fuse_channel_scale(model) == 1
        xt, st = (tf.constant(a.astype("float32")) for a in (x, s))
        with tf.GradientTape() as tape:
            tape.watch([xt, st])
            y = model([xt, st], training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * dy.astype("float32"))
        got = [y, *tape.gradient(loss, [xt, st, model.get_layer("proj").kernel])]
        return [float(np.linalg.norm(np.float64(tf.cast(g, tf.float32)).reshape(e.shape) - e) / np.linalg.norm(e))
                for g, e in zip(got, expected)]

    fused, plain = errors(True), errors(False)
    assert all(0 < f <= 1.1 * p for f, p in zip(fused, plain)), (fused, plain)


def _relative_gradient_error(grads, reference):
    """|grads - reference| / |reference| over all variables at once."""
    return np.sqrt(sum(np.sum((g - r) ** 2) for g, r in zip(grads, reference)) / sum(np.sum(r ** 2) for r in reference))


@pytest.mark.usefixtures("on_the_fast_path")
def test_convnext_mlp_gelu_fusion_trains_as_the_separate_layers():
    """ConvNeXt's MLPs, linked so that training hands fc2 the GELU's input and fc2 recomputes the GELU's
    output in its backward pass (less memory): in float32 the same outputs and loss gradients as fc1 with
    its GELU, then fc2; under mixed_bfloat16 no further from the float32 model's gradients than unfused."""
    import tensorflow as tf

    from zoobot_tf.ops.layers import Pointwise

    model = Zoobot(schema="gz_rings", backbone="convnext_atto", image_size=64, dropout_rate=0.0, augment=False)
    linked = [l for l in model.encoder.layers if getattr(l, "_gelu_into", None) is not None]
    assert len(linked) == sum(1 for l in model.encoder.layers if isinstance(l, Pointwise)) // 2 > 0
    assert all(l.activation is keras.activations.gelu and l._gelu_into()._gelu_from() is l for l in linked)
    x = tf.constant(np.random.default_rng(5).uniform(0, 255, (4, 64, 64, 1)).astype("float32"))
    mixed = model.with_precision("mixed_bfloat16")
    fused, fused_mixed = _train_step_results(model, x), _train_step_results(mixed, x)
    assert fused[4] and all(fused[4]) and all(fused_mixed[4])
    _unlink(model, "_gelu_into")
    _unlink(mixed, "_gelu_into")
    plain, plain_mixed = _train_step_results(model, x), _train_step_results(mixed, x)
    assert not plain[4]
    np.testing.assert_allclose(fused[0], plain[0], rtol=1e-5)
    scale = max(float(np.abs(g).max()) for g in plain[1])
    for ga, gb in zip(fused[1], plain[1]):
        np.testing.assert_allclose(ga, gb, rtol=1e-4, atol=1e-5 * scale)
    error = functools.partial(_relative_gradient_error, reference=plain[1])
    assert 0 < error(fused_mixed[1]) <= 1.1 * error(plain_mixed[1]), (error(fused_mixed[1]), error(plain_mixed[1]))
