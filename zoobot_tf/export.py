"""SavedModel exports for TF Serving, in its versioned layout, written atomically.

``export_model(model, "saved_models", name="zoobot")`` writes::

    saved_models/zoobot/<N>/saved_model.pb
                            variables/
                            assets.extra/tf_serving_warmup_requests   real requests, replayed at load
                            assets.extra/zoobot_metadata.json         schema, outputs, preprocessing
                            assets.extra/model.keras                  the Keras model, to finetune again

``N`` is one more than the highest existing version; the export is assembled in a hidden temporary
folder and renamed into place, so TF Serving never sees a half-written version, and an existing
version is never overwritten.

Signatures (all deterministic, dropout off, unless named ``*_mc``):

* ``serving_default``: ``image_bytes`` (tf.string [batch], encoded JPEG/PNG) -> outputs below;
  images are decoded, converted to the model's channels, cropped and resized inside the graph.
* ``predict_images``: ``images`` (float32 [batch, H, W, 3], pixels in [0, 255]) -> outputs below.
* ``embed``: ``image_bytes`` -> ``embedding``.
* ``predict_mc``: ``image_bytes`` -> concentrations/probabilities for ``mc_samples`` dropout samples.

Outputs are the task's (:mod:`zoobot_tf.tasks`) plus ``embedding``: votes models give ``concentrations``
and ``vote_fractions`` (answers in schema order); classifiers ``probabilities`` and ``predicted_class``;
regressors ``targets``. Malformed image bytes fail the request with INVALID_ARGUMENT.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from zoobot_tf.data.images import decode_image_bytes
from zoobot_tf.models.zoobot import Zoobot

METADATA = "zoobot_metadata.json"
KERAS_FILE = "model.keras"
WARMUP = "tf_serving_warmup_requests"


def next_version(model_dir: str | Path) -> int:
    """One more than the highest integer-named version folder (1 when there is none)."""
    model_dir = Path(model_dir)
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] \
        if model_dir.exists() else []
    return max(versions, default=0) + 1


def latest_version(model_dir: str | Path) -> Path:
    model_dir = Path(model_dir)
    if (model_dir / "saved_model.pb").exists():
        return model_dir
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()) \
        if model_dir.exists() else []
    if not versions:
        raise FileNotFoundError(f"No exported versions under {model_dir} (expected {model_dir}/<N>/saved_model.pb)")
    return model_dir / str(versions[-1])


def metadata(model: Zoobot) -> dict:
    """What a client needs to label the outputs and reproduce the preprocessing."""
    return {
        "format": "zoobot-tf export v1",
        "backbone": model.backbone,
        "image_size": model.image_size,
        "channels": model.channels,
        "input_channels": model.input_channels,
        "crop_fraction": model.crop_fraction,
        "load_size": model.load_size,
        "embedding_dim": model.embedding_dim,
        "signatures": ["serving_default", "predict_images", "embed", "predict_mc"],
        "finetuning": model.finetuning,
        **model.task.metadata(),
        "outputs": model.task.serving_output_names + ["embedding"],
    }


def _serving_functions(model: Zoobot, mc_samples: int):
    embedder = model.embedding_model()
    load_size = model.load_size
    channels = 1 if model.input_channels == 1 else 3
    task = model.task

    def outputs_from(images):
        emb = embedder(images, training=False)
        outputs = model.symmetric(  # the image's embedding is reused; a mirror image's is computed
            images, lambda x: model.apply_head(emb if x is images else embedder(x, training=False)))
        return {"embedding": tf.cast(emb, tf.float32), **task.serving_outputs(outputs)}

    def decode(image_bytes):
        return tf.map_fn(lambda b: decode_image_bytes(b, load_size, channels=channels), image_bytes,
                         fn_output_signature=tf.TensorSpec([load_size, load_size, channels], tf.float32))

    def serving_default(image_bytes):
        return outputs_from(decode(image_bytes))

    def predict_images(images):
        return outputs_from(images)

    def embed(image_bytes):
        return {"embedding": tf.cast(embedder(decode(image_bytes), training=False), tf.float32)}

    def predict_mc(image_bytes):
        def samples_of(images):
            emb = embedder(images, training=False)
            return tf.stack([model.apply_head(emb, training=True) for _ in range(mc_samples)], axis=-1)

        return {f"{task.output_name}_samples": model.symmetric(decode(image_bytes), samples_of)}

    return serving_default, predict_images, embed, predict_mc


def _inference_copy(model: Zoobot) -> Zoobot:
    """The same architecture and weights, uncompiled: the export carries no optimizer state (half the size)."""
    clone = Zoobot.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    return clone


def _write_warmup(path: Path, name: str, examples: list[bytes]) -> None:
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    with tf.io.TFRecordWriter(str(path)) as writer:
        for sig in ("serving_default", "embed"):
            request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=name, signature_name=sig))
            request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(examples, dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def _example_images(model: Zoobot, n: int = 2) -> list[bytes]:
    """Small synthetic galaxy JPEGs for warmup requests (real encoded images, so decoding is exercised)."""
    from zoobot_tf.data.synthetic import render, sample_truth

    out = []
    for i in range(n):
        rng = np.random.default_rng([7, i])
        pixels = render(sample_truth(rng), model.view.load_size, rng)
        out.append(tf.io.encode_jpeg(pixels, quality=90).numpy())
    return out


def export_model(model: Zoobot, base_dir: str | Path = "saved_models", name: str = "zoobot",
                 mc_samples: int = 5, warmup_images: list[bytes] | None = None) -> Path:
    """Export ``model`` to ``base_dir/name/<next version>/``; return the version folder."""
    if not isinstance(model, Zoobot):
        raise TypeError(f"export_model needs a zoobot_tf Zoobot model. Received: {type(model).__name__}")
    if mc_samples < 1:
        raise ValueError(f"mc_samples must be >= 1. Received: mc_samples={mc_samples}")
    model = _inference_copy(model)
    model_dir = Path(base_dir) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".tmp-export-{uuid.uuid4().hex}"
    try:
        serving_default, predict_images, embed, predict_mc = _serving_functions(model, mc_samples)
        archive = keras.export.ExportArchive()
        archive.track(model)
        bytes_spec = [tf.TensorSpec([None], tf.string, name="image_bytes")]
        archive.add_endpoint("serving_default", serving_default, input_signature=bytes_spec)
        archive.add_endpoint("predict_images", predict_images,
                             input_signature=[tf.TensorSpec([None, None, None, 1 if model.input_channels == 1 else 3],
                                                            tf.float32, name="images")])
        archive.add_endpoint("embed", embed, input_signature=bytes_spec)
        archive.add_endpoint("predict_mc", predict_mc, input_signature=bytes_spec)
        archive.write_out(str(tmp), verbose=False)
        extra = tmp / "assets.extra"
        extra.mkdir(exist_ok=True)
        meta = metadata(model) | {"mc_samples": mc_samples, "name": name}
        (extra / METADATA).write_text(json.dumps(meta, indent=2))
        model.save(extra / KERAS_FILE)
        _write_warmup(extra / WARMUP, name, warmup_images or _example_images(model))
        while True:  # claim the next version number atomically; retry if another export took it
            final = model_dir / str(next_version(model_dir))
            try:
                os.rename(tmp, final)
                break
            except OSError:
                if not final.exists():
                    raise
        meta["version"] = int(final.name)
        (final / "assets.extra" / METADATA).write_text(json.dumps(meta, indent=2))
        return final
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_metadata(export_dir: str | Path) -> dict:
    """The metadata of an export (a version folder, or a model folder: its latest version)."""
    path = latest_version(export_dir) / "assets.extra" / METADATA
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: not a zoobot-tf export.")
    return json.loads(path.read_text())


def update_export(export_dir: str | Path, config: dict | None = None, metadata: dict | None = None) -> Path:
    """Change what an export says about its model without touching its weights or SavedModel: ``config``
    entries replace those of the Keras model config inside ``assets.extra/model.keras``, ``metadata``
    entries those of ``zoobot_metadata.json`` (in both, None removes an entry). For a model card written
    after export (recommended finetuning settings, calibrated intervals). Returns the version folder changed. Each
    file is written beside itself and renamed into place, so a reader never sees a half-written one."""
    import zipfile

    from zoobot_tf.outputs import partial_path, write_json

    version = latest_version(export_dir)
    assets = version / "assets.extra"
    if not (assets / METADATA).exists() or not (assets / "model.keras").exists():
        raise FileNotFoundError(f"{assets} has no {METADATA} and model.keras: not a zoobot-tf export.")
    if config:
        patched = partial_path(assets / "model.keras")
        try:
            with zipfile.ZipFile(assets / "model.keras") as src, zipfile.ZipFile(patched, "w") as dst:
                for item in src.infolist():
                    data = src.read(item.filename)
                    if item.filename == "config.json":
                        whole = json.loads(data)
                        whole["config"] = _updated(whole["config"], config)
                        data = json.dumps(whole).encode()
                    dst.writestr(item, data)
            os.replace(patched, assets / "model.keras")
        finally:
            patched.unlink(missing_ok=True)
    if metadata:
        write_json(_updated(json.loads((assets / METADATA).read_text()), metadata), assets / METADATA)
    return version


def _updated(entries: dict, changes: dict) -> dict:
    """``entries`` with ``changes`` applied; a change to None removes the entry."""
    merged = {**entries, **changes}
    return {k: v for k, v in merged.items() if not (k in changes and v is None)}


def load_keras_from_export(export_dir: str | Path) -> Zoobot:
    """The Keras model stored inside an export (for predictions or finetuning it again)."""
    from zoobot_tf.models.resolve import load_model

    return load_model(Path(export_dir))


def export_job(config) -> Path:
    """``zoobot-tf export`` from an :class:`~zoobot_tf.config.ExportConfig`."""
    from zoobot_tf.models.resolve import load_model

    return export_model(load_model(config.model), config.output_dir, name=config.name, mc_samples=config.mc_samples)
