"""Predictions symmetric under mirroring: a classification task that says which classes a mirror image swaps
(GZ1's winding directions) predicts each galaxy as the average of it and its mirror image, the pairs swapped
back, in every inference path (the model's call, ``predict``, the export), and trains on one view."""
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from helpers import write_images
from PIL import Image, ImageOps

from zoobot_tf import export
from zoobot_tf.finetuning import Finetuner, finetune, with_mirror
from zoobot_tf.models import Zoobot
from zoobot_tf.models.resolve import load_model
from zoobot_tf.predictions import predict
from zoobot_tf.tasks import ClassificationTask, make_task

CLASSES = ["elliptical", "cw", "acw", "merger"]
SWAP = [0, 2, 1, 3]  # the output a mirror image holds each class in


def test_mirror_pairs_are_parsed_checked_and_kept_in_the_config():
    for given in ("cw:acw", "cw : acw,", [("cw", "acw")], {"cw": "acw"}):
        task = ClassificationTask(CLASSES, mirror=given)
        assert task.mirror == [["cw", "acw"]] and task.mirror_permutation == SWAP
        assert make_task(task.get_config()) == task
    assert ClassificationTask(CLASSES, mirror=[]).mirror_permutation == [0, 1, 2, 3]
    assert ClassificationTask(CLASSES, mirror="").mirror_permutation == [0, 1, 2, 3]
    plain = ClassificationTask(CLASSES)
    assert plain.mirror_permutation is None and "mirror" not in plain.get_config()
    with pytest.raises(ValueError, match=r"names classes the task does not have: \['spiral'\]"):
        ClassificationTask(CLASSES, mirror="cw:spiral")
    with pytest.raises(ValueError, match="two different classes"):
        ClassificationTask(CLASSES, mirror="cw:cw")
    with pytest.raises(ValueError, match="two different classes"):
        ClassificationTask(CLASSES, mirror="cw:acw:merger")
    with pytest.raises(ValueError, match="'cw' is in more than one mirror pair"):
        ClassificationTask(CLASSES, mirror="cw:acw,merger:cw")


def test_with_mirror_needs_training_without_flips_and_a_classifier():
    task = ClassificationTask(CLASSES)
    assert with_mirror(task, None, True) is task
    assert with_mirror(task, "cw:acw", {"flip": False}).mirror == [["cw", "acw"]]
    assert with_mirror(task, [], True).mirror == []  # mirror-invariant classes may be trained with flips
    for augment in (True, {"flip": True}, {"rotate": False}):
        with pytest.raises(ValueError, match="needs training without flips"):
            with_mirror(task, "cw:acw", augment)
    with pytest.raises(ValueError, match="needs training without flips"):  # a task that brings its own pairs
        with_mirror(ClassificationTask(CLASSES, mirror="cw:acw"), None, True)
    with pytest.raises(ValueError, match="applies to classification"):
        with_mirror(make_task("regression", n_targets=1), "cw:acw", False)


@pytest.fixture(scope="module")
def symmetric_model():
    model = Zoobot(task=ClassificationTask(CLASSES, mirror="cw:acw"), backbone="resnet_micro", image_size=32,
                   crop_fraction=0.8, dropout_rate=0.3)
    head = model.get_layer("head_dense")  # a head whose classes differ: the swap must show in the outputs
    kernel, bias = head.get_weights()
    head.set_weights([np.random.default_rng(0).normal(0, 2.0, kernel.shape).astype("float32"), bias])
    return model


def _one_view(model, images):
    """The model's probabilities from the images alone, through the embedding and the head (not its call)."""
    return model.apply_head(model.embedding_model()(images, training=False)).numpy()


def test_the_prediction_is_the_mean_of_the_galaxy_and_its_mirror_image(symmetric_model):
    model = symmetric_model
    x = np.random.default_rng(1).uniform(0, 255, (5, 41, 41, 3)).astype("float32")
    mirrored = x[:, :, ::-1]
    alone, of_mirror = _one_view(model, x), _one_view(model, mirrored)
    assert np.abs(alone - of_mirror[:, SWAP]).max() > 1e-3  # the encoder alone is not symmetric
    expected = (alone + of_mirror[:, SWAP]) / 2
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model(mirrored).numpy(), model(x).numpy()[:, SWAP], rtol=1e-5, atol=1e-6)
    # training sees each view once (dropout off here: rate 0 through a copy without it)
    plain = Zoobot(task=ClassificationTask(CLASSES), backbone="resnet_micro", image_size=32, crop_fraction=0.8,
                   dropout_rate=0.0, augment=False)
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(plain(x).numpy(), alone, rtol=1e-5, atol=1e-6)


def test_a_task_without_pairs_predicts_from_the_image_alone():
    model = Zoobot(task=ClassificationTask(CLASSES), backbone="resnet_micro", image_size=32)
    x = np.random.default_rng(2).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model(x).numpy(), _one_view(model, x), rtol=1e-6, atol=1e-7)


def test_predict_and_the_export_predict_symmetrically(symmetric_model, tmp_path):
    model = symmetric_model
    folder = tmp_path / "imgs"
    for path in write_images(folder, 3, size=48, fmt="png"):
        ImageOps.mirror(Image.open(path)).save(path.replace(".png", "_m.png"))  # lossless: the exact mirror
    predict(model, folder, tmp_path / "p.csv", n_samples=1, progress=False)
    table = pd.read_csv(tmp_path / "p.csv").set_index("id_str")
    for i in range(3):
        galaxy, its_mirror = table.loc[f"g{i:04d}"], table.loc[f"g{i:04d}_m"]
        for a, b in (("cw", "acw"), ("acw", "cw"), ("elliptical", "elliptical"), ("merger", "merger")):
            assert galaxy[f"prob_{a}"] == pytest.approx(its_mirror[f"prob_{b}"], abs=1e-5)

    # MC dropout and test-time views: each sample averages a view of the galaxy and the same view of its mirror
    predict(model, folder, tmp_path / "mc.csv", n_samples=3, tta=True, progress=False)
    mc = pd.read_csv(tmp_path / "mc.csv")
    np.testing.assert_allclose(mc[[f"prob_{c}" for c in CLASSES]].sum(axis=1), 1.0, rtol=1e-5)
    assert (mc.set_index("id_str")["prob_cw"] - table["prob_cw"]).abs().max() > 1e-4  # other views than above

    path = export.export_model(model, tmp_path / "saved", name="sym", mc_samples=2)
    images = [(folder / f"g000{i}.png").read_bytes() for i in range(3)]
    served = tf.saved_model.load(str(path)).signatures["serving_default"](image_bytes=tf.constant(images))
    pixels = tf.stack([tf.cast(tf.io.decode_png(b, channels=3), tf.float32) for b in images])
    live = model(tf.image.resize(pixels, [model.load_size] * 2, antialias=True)).numpy()
    np.testing.assert_allclose(served["probabilities"].numpy(), live, rtol=1e-4, atol=1e-5)
    assert load_model(path).task.mirror == [["cw", "acw"]]


def test_finetune_with_mirror_pairs_keeps_them_in_the_saved_model(tmp_path):
    paths = write_images(tmp_path / "imgs", 24, size=32)
    catalog = pd.DataFrame({"id_str": [f"g{i}" for i in range(24)], "file_loc": paths,
                            "shape": (["cw", "acw", "elliptical"] * 8),
                            "split": ["train"] * 16 + ["val"] * 4 + ["test"] * 4})
    pre = tmp_path / "pre.keras"
    Zoobot(backbone="resnet_micro", image_size=32).save(pre)
    result = finetune(pre, catalog, label_cols="shape", epochs=1, verbose=0, augment={"flip": False},
                      mirror_pairs="cw:acw")
    assert result.model.task.mirror == [["cw", "acw"]]
    result.model.save(tmp_path / "ft.keras")
    again = load_model(tmp_path / "ft.keras")
    x = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    swap = again.task.mirror_permutation
    np.testing.assert_allclose(again(x[:, :, ::-1]).numpy(), again(x).numpy()[:, swap], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs training without flips"):
        Finetuner(pre, class_names=["cw", "acw"], mirror_pairs="cw:acw")


def test_a_cards_mirror_pairs_apply_when_the_classes_have_them_and_training_does_not_flip(tmp_path):
    pre = tmp_path / "carded.keras"
    Zoobot(backbone="resnet_micro", image_size=32, finetuning={"mirror_pairs": "cw:acw"}).save(pre)
    no_flips = {"flip": False}
    assert Finetuner(pre, class_names=["cw", "acw", "e"], augment=no_flips).task.mirror == [["cw", "acw"]]
    assert Finetuner(pre, class_names=["cw", "acw", "e"]).task.mirror is None  # flips: the card does not apply
    assert Finetuner(pre, class_names=["cw", "e"], augment=no_flips).task.mirror is None  # no 'acw' class
    assert Finetuner(pre, class_names=["cw", "acw"], augment=no_flips, mirror_pairs="none").task.mirror is None
    assert Finetuner(pre, class_names=["cw", "acw", "e", "f"], augment=no_flips,
                     mirror_pairs="e:f").task.mirror == [["e", "f"]]  # given pairs replace the card's
    # the packaged encoder finetune starts from carries GZ1's pairs
    gz1 = ["elliptical", "clockwise_spiral", "anticlockwise_spiral", "edge_on", "dont_know", "merger"]
    assert Finetuner("zoobot_sdss_mini", class_names=gz1, augment=no_flips).task.mirror == [
        ["clockwise_spiral", "anticlockwise_spiral"]]
