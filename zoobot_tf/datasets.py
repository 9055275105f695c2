"""TFDS builders for Galaxy Zoo data (in the repository's ``datasets/`` folder) and TFDS input pipelines.

    import zoobot_tf.datasets            # registers gz_decals, gz2, gz_rings, gz1_sdss, galaxy10_decals, synthetic_gz
    import tensorflow_datasets as tfds
    ds = tfds.load("gz_rings", data_dir="~/tensorflow_datasets",
                   download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(
                       manual_dir="../shared/data/gz_decals_rings")})

``datasets/`` is a folder of builder packages, not an importable package: a top-level ``datasets``
would shadow Hugging Face's ``datasets``. The builders are imported here by path under the module
name ``zoobot_tf_tfds.<name>.<name>_dataset_builder`` (TFDS names them from that module name).
Set ``ZOOBOT_TF_DATASETS`` to use builders from another folder.

:func:`tfds_dataset` turns a prepared TFDS split into the model's input pipeline, with exactly the
preprocessing of the TFRecord path (images are kept encoded and decoded by :mod:`zoobot_tf.data`).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

BUILDERS = ("gz_decals", "gz2", "gz_rings", "gz1_sdss", "galaxy10_decals", "synthetic_gz")
SPLIT_ALIASES = {"val": "validation"}


def datasets_dir() -> Path:
    return Path(os.environ.get("ZOOBOT_TF_DATASETS", Path(__file__).resolve().parents[1] / "datasets"))


def register(names=BUILDERS) -> dict:
    """Import the builder modules (idempotent); returns {name: module}."""
    import types

    modules = {}
    root = datasets_dir()
    if "zoobot_tf_tfds" not in sys.modules:
        pkg = types.ModuleType("zoobot_tf_tfds")
        pkg.__path__ = [str(root)]
        pkg.__file__ = str(root / "__init__.py")  # namespace-like package: resource lookups need a path
        sys.modules["zoobot_tf_tfds"] = pkg
    for name in names:
        module_name = f"zoobot_tf_tfds.{name}.{name}_dataset_builder"
        if module_name in sys.modules:
            modules[name] = sys.modules[module_name]
            continue
        path = root / name / f"{name}_dataset_builder.py"
        if not path.exists():
            raise FileNotFoundError(f"TFDS builder {name!r} not found at {path} (set ZOOBOT_TF_DATASETS)")
        parent = f"zoobot_tf_tfds.{name}"
        if parent not in sys.modules:
            pkg = types.ModuleType(parent)
            pkg.__path__ = [str(path.parent)]
            pkg.__file__ = str(path.parent / "__init__.py")
            sys.modules[parent] = pkg
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        modules[name] = module
    return modules


def builder(name: str, data_dir: str | Path | None = None, config: str | None = None):
    """The TFDS builder ``name`` (``name/config`` also accepted)."""
    import tensorflow_datasets as tfds

    if "/" in name:
        name, config = name.split("/", 1)
    register([name])
    kwargs = {"data_dir": str(data_dir)} if data_dir else {}
    if config:
        kwargs["config"] = config
    return tfds.builder(name, **kwargs)


def prepare(name: str, manual_dir: str | Path | None = None, data_dir: str | Path | None = None):
    """Build a data set offline from files in ``manual_dir``; returns the builder."""
    import tensorflow_datasets as tfds

    b = builder(name, data_dir)
    config = tfds.download.DownloadConfig(manual_dir=str(manual_dir)) if manual_dir else None
    b.download_and_prepare(download_config=config)
    return b


def tfds_dataset(name: str, split: str, batch_size: int, load_size: int, training: bool = False,
                 data_dir: str | Path | None = None, seed: int | None = None, label: str | None = None):
    """A prepared TFDS split as batched ``(images, labels, sample_weight)``, like the shard pipeline.

    Labels are the builder's supervised target (``votes`` counts or ``label`` class indices).
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from zoobot_tf.data import pipeline

    b = builder(name, data_dir)
    split = SPLIT_ALIASES.get(split, split)
    label = label or b.info.supervised_keys[1]
    ds = b.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()}, shuffle_files=training)
    dtype = tf.float32 if label == "votes" else tf.int32
    ds = ds.map(lambda ex: (ex["image"], tf.cast(ex[label], dtype)), num_parallel_calls=tf.data.AUTOTUNE)
    n = b.info.splits[split].num_examples
    return pipeline.finish(ds, batch_size, load_size, training, n_examples=n, seed=seed, file_based=True)


def tfds_labels(name: str, split: str, data_dir: str | Path | None = None, label: str | None = None) -> np.ndarray:
    """All labels of a split, without decoding images (e.g. for the vote baseline)."""
    import tensorflow_datasets as tfds

    b = builder(name, data_dir)
    label = label or b.info.supervised_keys[1]
    ds = b.as_dataset(split=SPLIT_ALIASES.get(split, split), decoders={"image": tfds.decode.SkipDecoding()})
    return np.stack([ex[label] for ex in tfds.as_numpy(ds)])


# --------------------------------------------------------------------------- helpers for the builders
def split_of(key: str, fractions=(("train", 0.8), ("validation", 0.1), ("test", 0.1))) -> str:
    """Deterministic split of one example by a hash of its id (for sources that define no splits)."""
    u = int(hashlib.sha1(f"zoobot-tf:{key}".encode()).hexdigest()[:12], 16) / 16 ** 12
    edge = 0.0
    for name, frac in fractions:
        edge += frac
        if u < edge:
            return name
    return fractions[-1][0]


def require_files(manual_dir, required, instructions: str) -> None:
    """Raise one clear error naming every missing manual file, before anything is generated."""
    manual_dir = Path(manual_dir)
    missing = [r for r in required if not (manual_dir / r).exists()]
    if missing:
        raise FileNotFoundError(
            f"Missing in the manual directory {manual_dir}: {', '.join(missing)}.\n{instructions.strip()}")


def image_features() -> dict:
    """The features every builder shares: the encoded image and the galaxy's id."""
    import tensorflow_datasets as tfds

    return {"image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"), "id_str": tfds.features.Text()}


def vote_features(schema) -> dict:
    """image_features() plus the raw vote counts as an int32 tensor in ``schema``'s answer order."""
    import tensorflow_datasets as tfds

    return {**image_features(), "votes": tfds.features.Tensor(shape=(schema.n_answers,), dtype=np.int32)}


def rgb_array(path) -> np.ndarray:
    """An image file as uint8 (H, W, 3) RGB (alpha dropped, greyscale replicated), for TFDS to encode."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
