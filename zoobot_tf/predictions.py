"""Predictions with uncertainty over catalogs, folders of images, shards or TFDS sets, streamed in batches.

For each batch the encoder runs once (inference mode) and the head runs ``n_samples`` times with
dropout on: MC-dropout samples of the model's outputs (concentrations, class probabilities or targets).
With ``tta=True`` every sample also sees a random rotation/flip/crop of the image (the encoder runs per
sample). The task (:mod:`zoobot_tf.tasks`) turns samples into the table:

* votes: per answer ``<question>_<answer>_fraction`` (expected vote fraction, averaged over samples) with
  a 90% interval (``_lower``/``_upper``, Beta-mixture quantiles), and ``<question>_prob_asked``; fractions
  of questions volunteers would be asked with probability < 0.5 are left empty;
* classification: ``prob_<class>`` and ``predicted_class``; regression: ``<target>`` and ``<target>_std``.

Optionally an HDF5 file holds the raw samples, shaped (galaxy, output, sample), with ``id_str``. Galaxies
whose image is missing or unreadable are skipped and listed in ``<table>.skipped.csv`` (the run goes on).
Long runs are written in parts (:class:`zoobot_tf.outputs.Parts`): rerun the same command after an
interruption and it continues where it stopped, with no galaxy lost or written twice.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from zoobot_tf.data.catalogs import ID_COL
from zoobot_tf.data.pipeline import decoded_batches
from zoobot_tf.data.sources import open_source
from zoobot_tf.models.preprocessing import N_RANDOM
from zoobot_tf.models.resolve import load_model
from zoobot_tf.models.traced import traced_once
from zoobot_tf.models.zoobot import Zoobot
from zoobot_tf.outputs import Parts, list_skipped, require_some_read, write_zoobot_predictions

log = logging.getLogger(__name__)

CHUNK = 4096  # galaxies per part of a long run


def galaxy_keys(ids) -> tf.Tensor:
    """(B,) int64 keys of galaxy ids (FarmHash fingerprints, the same in every process and on every machine)."""
    return tf.strings.to_hash_bucket_fast(ids, 2 ** 62)


def galaxy_uniforms(keys: tf.Tensor, seed, shape) -> tf.Tensor:
    """(B, *shape) uniform draws in [0, 1): one stateless stream per galaxy key and seed, so a galaxy's
    draws depend on nothing else (not its batch, its worker, nor whether the run was resumed)."""
    seeds = tf.stack([tf.cast(keys, tf.int64), tf.fill(tf.shape(keys), tf.cast(seed, tf.int64))], axis=1)
    return tf.map_fn(lambda s: tf.random.stateless_uniform(shape, s), seeds, fn_output_signature=tf.float32)


def sample_fn(model: Zoobot, n_samples: int, tta: bool = False):
    """A tf.function: (images (B, H, W, C) in [0, 255], keys (B,) int64, seed) -> (samples (B, out,
    n_samples), embedding (B, D)). The MC-dropout masks (and the test-time views) of a galaxy are drawn
    from its key (:func:`galaxy_keys` of its id) and the seed: the same galaxy gets the same samples in
    any batch, process or resumed run.

    Traced once per model and options (:mod:`zoobot_tf.models.traced`)."""
    return traced_once(model, ("samples", n_samples, tta), lambda ref: _make_sample_fn(ref, n_samples, tta))


def _make_sample_fn(ref, n_samples: int, tta: bool):
    @tf.function(reduce_retracing=True)
    def run(images, keys, seed):
        model = ref()  # the function must not keep its model alive
        dim = model.embedding_dim
        random = n_samples > 1 or tta  # one deterministic pass draws nothing
        draws = galaxy_uniforms(keys, seed, (n_samples, dim + N_RANDOM)) if random else None
        embeddings = []

        def samples_of(x):  # a mirror image (Zoobot.symmetric) gets the same dropout masks and views
            emb = model.encoder(model.view(x, training=False), training=False)
            embeddings.append(emb)
            samples = []
            for i in range(n_samples):
                e = model.encoder(model.view(x, augment=True, uniforms=draws[:, i, dim:]),
                                  training=False) if tta else emb
                samples.append(model.apply_head(e, noise=draws[:, i, :dim] if n_samples > 1 else None))
            return tf.stack(samples, axis=-1)

        samples = model.symmetric(images, samples_of)
        return samples, embeddings[0]
    return run


def predicted_batches(model: Zoobot, ds: tf.data.Dataset, batch_size: int, n_samples: int = 5, tta: bool = False,
                      interval: float = 0.9, seed: int = 0):
    """(encoded bytes, id) -> per batch (table, samples): what every predict path (this process, or a worker of
    a distributed job) computes; unreadable images are dropped. A galaxy's samples depend only on its id,
    the model and ``seed``."""
    run = sample_fn(model, n_samples, tta)
    seed = tf.constant(seed, tf.int64)
    for images, ids in decoded_batches(ds, batch_size, model.load_size):
        samples, _ = run(images, galaxy_keys(ids), seed)
        samples = samples.numpy()
        yield model.task.table([i.decode() for i in ids.numpy()], samples, interval), samples


def friendly_table(model: Zoobot, ids, samples: np.ndarray, interval: float = 0.9,
                   asked_threshold: float = 0.5) -> pd.DataFrame:
    """The per-galaxy table for ``samples`` shaped (galaxies, outputs, samples) (see the module docstring)."""
    return model.task.table(ids, samples, interval, asked_threshold)


def _write_hdf5(path: Path, model: Zoobot, parts: Parts, n_samples: int) -> None:
    import os

    import h5py

    task = model.task
    n_out = task.n_outputs
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with h5py.File(tmp, "w") as f:
        data = f.create_dataset(task.output_name, shape=(0, n_out, n_samples), maxshape=(None, n_out, n_samples),
                                dtype="float32", chunks=(256, n_out, n_samples), compression="gzip")
        ids = f.create_dataset(ID_COL, shape=(0,), maxshape=(None,), dtype=h5py.string_dtype())
        data.attrs["outputs"] = json.dumps(task.output_labels)
        data.attrs["shape"] = "galaxy x output x sample"
        f.attrs["task"] = json.dumps(task.get_config())
        for table, samples in zip(parts.tables([ID_COL]), parts.arrays("samples")):
            n = data.shape[0]
            data.resize(n + len(table), axis=0)
            ids.resize(n + len(table), axis=0)
            data[n:] = samples
            ids[n:] = table[ID_COL].astype(str).to_numpy(dtype=object)
    os.replace(tmp, path)


def predict(model, source, output: str | Path, n_samples: int = 5, tta: bool = False, batch_size: int = 64,
            hdf5: str | Path | None = None, interval: float = 0.9, split: str | None = None,
            progress: bool = True, precision: str | None = None, seed: int = 0, chunk: int = CHUNK,
            zoobot_output: str | Path | None = None) -> pd.DataFrame:
    """Predict for every galaxy of ``source`` and write ``output`` (``.csv`` or ``.parquet``).

    Args:
        model: anything :func:`zoobot_tf.models.resolve.load_model` accepts (a Zoobot, a packaged name,
            a ``.keras`` file, an export folder...).
        source: a catalog (DataFrame or CSV/Parquet with ``id_str``, ``file_loc``), a folder of images
            (JPEG/PNG/FITS; ids are file names), a shard folder, ``tfds:<name>`` or a DataSource.
        n_samples: MC-dropout forward passes of the head (1: deterministic).
        tta: test-time augmentation on each sample.
        hdf5: also write the raw samples here.
        precision: run the model under this dtype policy (``mixed_bfloat16``: faster on CPUs with AMX,
            outputs within ~1% of float32); default: the model's own.
        seed: chooses the MC-dropout masks and test-time views. A galaxy's samples depend only on the model,
            its id and the seed: the same in any batch, on any worker, and after a resume.
        chunk: galaxies per part (what a kill can lose; see the module docstring).
        zoobot_output: also write Zoobot's ``predict_on_catalog`` layout here (``.csv`` or ``.hdf5``; see
            :func:`zoobot_tf.outputs.write_zoobot_predictions`).
    Returns:
        the ``skipped`` galaxies (id_str, file_loc), empty when every image was read.
    """
    from tqdm import tqdm

    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1. Received: n_samples={n_samples}")
    model = load_model(model, compile=False)  # inference only: no optimizer slots
    if precision:
        model = model.with_precision(precision)
    data = open_source(source)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    parts = Parts(output, {"job": "predict", "model": _identity(model), "source": str(data), "split": split,
                           "n_samples": n_samples, "tta": tta, "interval": interval, "precision": precision,
                           "seed": seed, "samples": bool(hdf5 or zoobot_output)}, chunk)
    try:
        with data.reading():  # a corrupt shard or data file is named, with how to remake it
            expected, ds = data.images(split, exclude=parts.done_ids)  # read once; done galaxies left out
            _require_unique(expected)
            if parts.resumed:
                log.info("Resuming: %d galaxies done in %s, %d to go", len(parts.done_ids), parts.dir, len(expected))
            keep_samples = bool(hdf5 or zoobot_output)
            with tqdm(total=len(expected) + len(parts.done_ids), initial=len(parts.done_ids),
                      desc=f"predicting -> {output.name}",
                      unit="galaxy", disable=not progress) as bar:
                for table, samples in predicted_batches(model, ds, batch_size, n_samples, tta, interval, seed):
                    parts.add(table, {"samples": samples} if keep_samples else None)
                    bar.update(len(table))
        parts.flush()
        n = parts.write_streamed(output)
        skipped = list_skipped(expected, parts.done_ids, output)
        if n and hdf5:
            _write_hdf5(Path(hdf5), model, parts, n_samples)
        if n and zoobot_output:
            write_zoobot_predictions(zoobot_output, parts, model.task.output_labels)
    finally:
        parts.close()
    parts.cleanup()
    require_some_read(n, source, skipped, output)
    return skipped


def _identity(model: Zoobot) -> str:
    """What identifies a model's outputs across processes (architecture, task and a weights fingerprint)."""
    from zoobot_tf.training import weights_fingerprint

    return f"{model.backbone}:{model.task.name}:{weights_fingerprint(model)}"


def _require_unique(expected: pd.DataFrame) -> None:
    dup = expected[ID_COL].astype(str).duplicated(keep=False)
    if dup.any():
        shown = expected.loc[dup, ID_COL].astype(str).unique()[:5].tolist()
        raise ValueError(f"The input holds {int(dup.sum())} rows with a repeated id_str (e.g. {shown}); each galaxy "
                         f"needs its own id so its predictions can be found and resumed.")


def predict_job(config) -> pd.DataFrame:
    """``zoobot-tf predict`` from a :class:`~zoobot_tf.config.PredictConfig` (on Apache Beam with ``--runner``)."""
    precision = None if config.precision == "float32" else config.precision
    if config.runner:
        from zoobot_tf.engines.beam import run_inference

        return run_inference("predict", config.model, config.input, config.output, config.runner, config.workers,
                             config.beam_options, config.split, config.batch_size, config.chunk,
                             {"n_samples": config.n_samples, "tta": config.tta, "interval": config.interval,
                              "precision": precision, "seed": config.seed})
    return predict(config.model, config.input, config.output, n_samples=config.n_samples, tta=config.tta,
                   batch_size=config.batch_size, hdf5=config.hdf5, interval=config.interval, split=config.split,
                   progress=config.progress, precision=precision,
                   seed=config.seed, zoobot_output=config.zoobot_output, chunk=config.chunk)
