"""The models shipped with zoobot-tf (saved_models/): each one's SavedModel, Keras file and metadata agree
with each other, each carries a finetuning card, and the command line's defaults name one."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from helpers import write_images

from zoobot_tf import export
from zoobot_tf.config import DEFAULT_MODEL, FinetuneConfig, PredictConfig
from zoobot_tf.data.images import decode_image_bytes
from zoobot_tf.finetuning import ZOOBOT_DEFAULTS
from zoobot_tf.models.resolve import load_model, model_card, packaged_models

PACKAGED = sorted(packaged_models())


def test_the_defaults_are_packaged():
    assert DEFAULT_MODEL in PACKAGED
    defaults = {c: {f.name: f.default for f in dataclasses.fields(c)} for c in (FinetuneConfig, PredictConfig)}
    assert defaults[FinetuneConfig]["pretrained"] == DEFAULT_MODEL == defaults[PredictConfig]["model"]
    assert model_card(DEFAULT_MODEL)["finetuning"]  # finetune's defaults come from the model's card


@pytest.mark.parametrize("name", PACKAGED)
def test_a_packaged_export_serves_what_its_keras_model_predicts(name, tmp_path):
    folder = packaged_models()[name]
    meta = export.read_metadata(folder)
    model = load_model(name)
    assert (model.view.image_size, model.view.channels) == (meta["image_size"], meta["channels"])
    assert meta["finetuning"] and set(meta["finetuning"]) <= set(ZOOBOT_DEFAULTS)  # settings Finetuner knows
    assert model.finetuning == meta["finetuning"]  # the card in the Keras file is the one in the metadata
    version = export.latest_version(folder)
    if not (version / "saved_model.pb").exists():
        pytest.skip(f"{name}: installed from the wheel, which carries the Keras file and metadata only")
    images = [open(p, "rb").read() for p in write_images(tmp_path, 3, size=meta["load_size"] + 20)]
    served = tf.saved_model.load(str(version)).signatures["serving_default"](image_bytes=tf.constant(images))
    pixels = tf.stack([decode_image_bytes(tf.constant(b), model.view.load_size) for b in images])
    np.testing.assert_allclose(served["concentrations"].numpy(), model.predict(pixels, verbose=0), rtol=2e-4, atol=1e-4)
