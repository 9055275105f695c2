"""Zoobot v2 / timm weights in zoobot-tf backbones: numerical equivalence against timm fixtures."""
import json

import numpy as np
import pytest
from conftest import REPO
from safetensors.numpy import load_file, save_file

from zoobot_tf import pretrained
from zoobot_tf.models.backbones import build_backbone

FIXTURES = REPO / "tests" / "fixtures" / "timm"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())


def _encoder(spec, size=None):
    return build_backbone(spec["backbone"], (size, size, spec["channels"]), **{
        k: tuple(v) if isinstance(v, list) else v for k, v in spec["kwargs"].items()})


@pytest.mark.parametrize("name", sorted(MANIFEST["models"]))
def test_converted_backbone_reproduces_timm(name):
    spec = MANIFEST["models"][name]
    state = load_file(str(FIXTURES / f"{name}.safetensors"))
    ref = np.load(FIXTURES / f"{name}.npz")
    encoder = _encoder(spec)
    report = pretrained.convert_state_dict(state, encoder)
    assert report["loaded"] > 0
    for key in ("x64", "x57"):  # an odd size exercises PyTorch's vs TF's stride-2 padding
        out = encoder(ref[key], training=False).numpy()
        expected = ref[f"{key}_out"]
        scale = np.abs(expected).max()
        np.testing.assert_allclose(out, expected, atol=1e-4 * max(scale, 1.0), rtol=1e-4)


def test_greyscale_stem_from_colour_weights():
    spec = MANIFEST["models"]["convnext_linear_mlp"]  # colour weights
    state = load_file(str(FIXTURES / "convnext_linear_mlp.safetensors"))
    ref = np.load(FIXTURES / "convnext_linear_mlp.npz")
    grey = _encoder({**spec, "channels": 1})
    pretrained.convert_state_dict(state, grey)
    colour = _encoder(spec)
    pretrained.convert_state_dict(state, colour)
    g = ref["x64"].mean(-1, keepdims=True)
    # a greyscale image replicated to 3 channels gives the same features as the summed-stem greyscale model
    np.testing.assert_allclose(grey(g).numpy(), colour(np.repeat(g, 3, -1)).numpy(), rtol=1e-4, atol=1e-5)


def test_mismatches_are_named():
    spec = MANIFEST["models"]["resnet18"]
    state = load_file(str(FIXTURES / "resnet18.safetensors"))
    encoder = _encoder(spec)
    broken = dict(state)
    del broken["layer1.0.conv1.weight"]
    broken["layer9.extra.weight"] = np.zeros(3, np.float32)
    broken["layer2.0.bn1.weight"] = np.zeros(7, np.float32)
    before = [w.copy() for w in encoder.get_weights()]
    with pytest.raises(pretrained.ConversionError) as e:
        pretrained.convert_state_dict(broken, encoder)
    msg = str(e.value)
    assert "layer9.extra.weight" in msg and "layer1.0.conv1.weight" in msg and "layer2.0.bn1.weight" in msg
    for a, b in zip(encoder.get_weights(), before):  # nothing assigned
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("arch,backbone", [("convnext_pico", "convnext_pico"), ("convnext_nano", "convnext_nano"),
                                           ("convnext_tiny", "convnext_tiny"), ("efficientnet_b0", "efficientnet_b0"),
                                           ("tf_efficientnetv2_s", "efficientnetv2_s"), ("resnet18", "resnet18"),
                                           ("resnet50", "resnet50")])
def test_full_size_parameter_counts_match_timm(arch, backbone):
    enc = build_backbone(backbone, (64, 64, 3))
    trainable = sum(int(np.prod(w.shape)) for w in enc.trainable_weights)
    assert trainable == MANIFEST["full_size_params"][arch]


def test_load_pretrained_from_a_local_snapshot(tmp_path):
    spec = MANIFEST["models"]["convnext_conv_mlp"]
    state = load_file(str(FIXTURES / "convnext_conv_mlp.safetensors"))
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "convnext_atto"}))
    with pytest.raises(pretrained.ConversionError):  # the full-size atto does not fit the reduced weights
        pretrained.load_pretrained(tmp_path)
    from zoobot_tf.models import backbones

    backbones.REGISTRY["convnext_fixture"] = backbones.BackboneSpec(
        "convnext_fixture", "convnext", backbones.convnext.build_convnext, backbones.convnext.stage_of,
        {"depths": (1, 1, 2, 1), "dims": (16, 24, 32, 48), "conv_mlp": True})
    pretrained.TIMM_TO_BACKBONE["convnext_fixture"] = "convnext_fixture"
    try:
        (tmp_path / "config.json").write_text(json.dumps({"architecture": "convnext_fixture"}))
        model = pretrained.load_pretrained(tmp_path, image_size=64)
        assert model.channels == 1  # taken from the stem's weights
        ref = np.load(FIXTURES / "convnext_conv_mlp.npz")
        np.testing.assert_allclose(model.encoder(ref["x64"]).numpy(), ref["x64_out"], rtol=1e-4, atol=1e-4)
        from zoobot_tf.finetuning import Finetuner

        tuner = Finetuner(model, task="classification", n_classes=2)
        np.testing.assert_array_equal(tuner.model.encoder.get_weights()[0], model.encoder.get_weights()[0])
    finally:
        del backbones.REGISTRY["convnext_fixture"], pretrained.TIMM_TO_BACKBONE["convnext_fixture"]


def test_hub_download_failure_says_what_to_fetch(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(RuntimeError, match="resolve/main/model.safetensors"):
        pretrained.load_pretrained("hf_hub:mwalmsley/zoobot-encoder-convnext_nano")
