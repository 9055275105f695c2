"""The models shipped with zoobot-tf (saved_models/): each one's SavedModel, Keras file and metadata agree
with each other, each carries a finetuning card, and the command line's defaults name one."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from helpers import write_images

from zoobot_tf import export
from zoobot_tf.config import DEFAULT_ENCODER, DEFAULT_MODEL, FinetuneConfig, PredictConfig
from zoobot_tf.data.images import decode_image_bytes, resize_if_needed
from zoobot_tf.finetuning import CARD_KEYS
from zoobot_tf.models.resolve import load_model, model_card, packaged_models

PACKAGED = sorted(packaged_models())
GZ1_FRAMING = 0.35  # the galaxy fills about the central third of a GZ1 cutout


def test_the_defaults_are_packaged():
    assert DEFAULT_MODEL in PACKAGED and DEFAULT_ENCODER in PACKAGED
    defaults = {c: {f.name: f.default for f in dataclasses.fields(c)} for c in (FinetuneConfig, PredictConfig)}
    assert defaults[PredictConfig]["model"] == DEFAULT_MODEL
    assert defaults[FinetuneConfig]["pretrained"] == DEFAULT_ENCODER
    assert model_card(DEFAULT_ENCODER)["finetuning"]  # finetune's defaults come from the model's card


@pytest.mark.parametrize("name", PACKAGED)
def test_a_packaged_export_serves_what_its_keras_model_predicts(name, tmp_path):
    folder = packaged_models()[name]
    meta = export.read_metadata(folder)
    model = load_model(name)
    assert (model.view.image_size, model.view.channels) == (meta["image_size"], meta["channels"])
    assert meta["finetuning"] and set(meta["finetuning"]) <= set(CARD_KEYS)  # settings Finetuner knows
    assert model.finetuning == meta["finetuning"]  # the card in the Keras file is the one in the metadata
    version = export.latest_version(folder)
    if not (version / "saved_model.pb").exists():
        pytest.skip(f"{name}: installed from the wheel, which carries the Keras file and metadata only")
    images = [open(p, "rb").read() for p in write_images(tmp_path, 3, size=meta["load_size"] + 20)]
    served = tf.saved_model.load(str(version)).signatures["serving_default"](image_bytes=tf.constant(images))
    pixels = tf.stack([decode_image_bytes(tf.constant(b), model.view.load_size) for b in images])
    output = model.task.output_name  # concentrations for a vote model, probabilities for a classifier
    np.testing.assert_allclose(served[output].numpy(), model.predict(pixels, verbose=0), rtol=2e-4, atol=1e-4)


def test_the_sdss_encoder_classifies_gz1_galaxies_it_never_saw():
    """zoobot_sdss_mini's own head, on 300 galaxies of GZ1's test split (left out of its pretraining, as
    training/sdss_mini/make_catalogs.py --exclude_ids does), framed as GZ1 framed them: well above chance on
    the six classes (1/6), and
    it tells the two winding directions apart, which zoobot_synthetic's encoder could not."""
    import pandas as pd
    from conftest import shared_data_dir

    from zoobot_tf.data.splits import split_by_id

    folder = shared_data_dir("gz1_sdss")
    labels = pd.read_csv(folder / "labels.csv", dtype={"dr7objid": str})
    test = labels[split_by_id(labels["dr7objid"].tolist(), (0.75, 0.25), ("pool", "test")) == "test"].head(300)
    model = load_model("zoobot_sdss_mini", compile=False)
    framing = GZ1_FRAMING / model.crop_fraction  # what the model does not cut itself
    pixels = tf.stack([resize_if_needed(tf.image.central_crop(decode_image_bytes(tf.io.read_file(str(folder / f))),
                                                              framing), model.view.load_size) for f in test["file"]])
    names = np.asarray(model.task.class_names)
    predicted = names[np.argmax(model.predict(pixels, batch_size=64, verbose=0), axis=1)]
    truth = test["gz1_class_name"].to_numpy()
    recalls = {c: np.mean(predicted[truth == c] == c) for c in np.unique(truth)}
    assert np.mean(list(recalls.values())) > 0.45, recalls
    spirals = np.isin(truth, ["clockwise_spiral", "anticlockwise_spiral"]) & np.isin(
        predicted, ["clockwise_spiral", "anticlockwise_spiral"])
    assert spirals.sum() >= 10 and np.mean(predicted[spirals] == truth[spirals]) > 0.7, (predicted[spirals], truth[spirals])
