"""Predictions with uncertainty over catalogs, folders of images or shards, streamed in batches.

For each batch the encoder runs once (inference mode) and the head runs ``n_samples`` times with
dropout on: MC-dropout samples of the concentrations (votes), class probabilities or targets. With
``tta=True`` every sample also sees a random rotation/flip/crop of the image (the encoder runs per
sample). Outputs are written as they are computed, so memory stays bounded on any catalog size:

* a friendly table (CSV or Parquet) with ``id_str`` and, for vote models, per answer
  ``<question>_<answer>_fraction`` (expected vote fraction, averaged over samples) with a 90%
  interval (``_lower``/``_upper``, Beta-mixture quantiles), and ``<question>_prob_asked``; fractions
  of questions that volunteers would be asked with probability < 0.5 are left empty;
  classifiers write ``prob_<class>`` and ``predicted_class``; regressors ``<target>`` and ``<target>_std``;
* optionally an HDF5 file with the raw samples, shaped (galaxy, output, sample), and ``id_str``;
* a ``<table>.skipped.csv`` listing galaxies whose image was missing or unreadable (the run goes on).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from zoobot_tf import stats
from zoobot_tf.data.catalogs import ID_COL
from zoobot_tf.data.sources import decoded_batches, image_source
from zoobot_tf.models.zoobot import Zoobot

log = logging.getLogger(__name__)


def sample_fn(model: Zoobot, n_samples: int, tta: bool = False):
    """A tf.function: images (B, H, W, C) in [0, 255] -> (samples (B, out, n_samples), embedding (B, D))."""
    @tf.function(reduce_retracing=True)
    def run(images):
        views = model.view(images, training=False)
        emb = model.encoder(views, training=False)
        samples = []
        for _ in range(n_samples):
            e = model.encoder(model.view(images, augment=True), training=False) if tta else emb
            samples.append(model.apply_head(e, training=n_samples > 1))
        return tf.stack(samples, axis=-1), emb
    return run


def friendly_table(model: Zoobot, ids, samples: np.ndarray, interval: float = 0.9,
                   asked_threshold: float = 0.5) -> pd.DataFrame:
    """The per-galaxy table for ``samples`` shaped (galaxies, outputs, samples)."""
    out = pd.DataFrame({ID_COL: list(ids)})
    if model.task == "votes":
        schema = model.schema
        frac = stats.expected_vote_fractions(samples, schema)
        lower, upper = stats.beta_intervals(samples, schema, level=interval)
        p_asked = stats.prob_asked(frac, schema)
        answer_q = np.argmax(schema.answer_to_question_matrix(), axis=1)
        hidden = p_asked[:, answer_q] < asked_threshold
        cols = {}
        for a in schema.answers:
            for suffix, values in (("fraction", frac), ("fraction_lower", lower), ("fraction_upper", upper)):
                cols[f"{a.label}_{suffix}"] = np.where(hidden[:, a.index], np.nan, values[:, a.index])
        for qi, q in enumerate(schema.questions):
            cols[f"{q.name}_prob_asked"] = p_asked[:, qi]
        return pd.concat([out, pd.DataFrame(cols)], axis=1)
    if model.task == "classification":
        probs = samples.mean(axis=-1)
        cols = {f"prob_{c}": probs[:, i] for i, c in enumerate(model.class_names)}
        cols["predicted_class"] = np.asarray(model.class_names, dtype=object)[probs.argmax(axis=1)]
        return pd.concat([out, pd.DataFrame(cols)], axis=1)
    cols = {}
    for i, t in enumerate(model.target_names):
        cols[t] = samples[:, i].mean(axis=-1)
        cols[f"{t}_std"] = samples[:, i].std(axis=-1)
    return pd.concat([out, pd.DataFrame(cols)], axis=1)


class _TableWriter:
    """Appends DataFrames to a CSV or Parquet file."""

    def __init__(self, path: Path):
        self.path = path
        self.parquet = path.suffix.lower() in (".parquet", ".pq")
        self._writer = None
        self._first = True

    def write(self, df: pd.DataFrame):
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            if self._writer is None:
                self._writer = pq.ParquetWriter(str(self.path), table.schema)
            self._writer.write_table(table)
        else:
            df.to_csv(self.path, mode="w" if self._first else "a", header=self._first, index=False)
        self._first = False

    def close(self):
        if self._writer is not None:
            self._writer.close()


class _SampleWriter:
    """Appends (galaxy, output, sample) arrays and ids to an HDF5 file."""

    def __init__(self, path: Path, model: Zoobot, n_outputs: int, n_samples: int):
        import h5py

        self.f = h5py.File(path, "w")
        key = {"votes": "concentrations", "classification": "probabilities", "regression": "targets"}[model.task]
        self.data = self.f.create_dataset(key, shape=(0, n_outputs, n_samples), maxshape=(None, n_outputs, n_samples),
                                          dtype="float32", chunks=(256, n_outputs, n_samples), compression="gzip")
        self.ids = self.f.create_dataset(ID_COL, shape=(0,), maxshape=(None,), dtype=h5py.string_dtype())
        names = (model.schema.label_cols if model.task == "votes" else
                 model.class_names if model.task == "classification" else model.target_names)
        self.data.attrs["outputs"] = json.dumps(names)
        self.data.attrs["shape"] = "galaxy x output x sample"
        if model.task == "votes":
            self.f.attrs["schema"] = model.schema.to_json()

    def write(self, ids, samples):
        n = self.data.shape[0]
        self.data.resize(n + len(ids), axis=0)
        self.ids.resize(n + len(ids), axis=0)
        self.data[n:] = samples
        self.ids[n:] = np.asarray(ids, dtype=object)

    def close(self):
        self.f.close()


def predict(model, source, output: str | Path, n_samples: int = 5, tta: bool = False, batch_size: int = 64,
            hdf5: str | Path | None = None, interval: float = 0.9, split: str | None = None,
            progress: bool = True, precision: str | None = None) -> pd.DataFrame:
    """Predict for every galaxy of ``source`` and write ``output`` (``.csv`` or ``.parquet``).

    Args:
        model: a Zoobot model, ``.keras`` file or export folder.
        source: catalog (DataFrame or CSV/Parquet with ``id_str``, ``file_loc``), folder of images
            (JPEG/PNG/FITS; ids are file names), or shard folder.
        n_samples: MC-dropout forward passes of the head (1: deterministic).
        tta: test-time augmentation on each sample.
        hdf5: also write the raw samples here.
        precision: run the model under this dtype policy (``mixed_bfloat16``: faster on CPUs with AMX,
            outputs within ~1% of float32); default: the model's own.
    Returns:
        the ``skipped`` galaxies (id_str, file_loc), empty when every image was read.
    """
    from tqdm.auto import tqdm

    from zoobot_tf.finetune import load_model

    model = load_model(model)
    if precision:
        model = model.with_precision(precision)
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1. Received: n_samples={n_samples}")
    expected, ds = image_source(source, split=split)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    run = sample_fn(model, n_samples, tta)
    table = _TableWriter(output)
    n_out = int(model.output.shape[-1])
    samples_out = _SampleWriter(Path(hdf5), model, n_out, n_samples) if hdf5 else None
    seen: set[str] = set()
    bar = tqdm(total=len(expected), desc=f"predicting -> {output.name}", unit="galaxy", disable=not progress)
    try:
        for images, ids in decoded_batches(ds, batch_size, model.view.pre_size):
            samples, _ = run(images)
            samples = samples.numpy()
            ids = [i.decode() for i in ids.numpy()]
            table.write(friendly_table(model, ids, samples, interval))
            if samples_out:
                samples_out.write(ids, samples)
            seen.update(ids)
            bar.update(len(ids))
    finally:
        bar.close()
        table.close()
        if samples_out:
            samples_out.close()
    skipped = expected[~expected[ID_COL].astype(str).isin(seen)].reset_index(drop=True)
    skipped_path = output.with_name(output.name + ".skipped.csv")
    if len(skipped):
        skipped.assign(reason="missing or unreadable image").to_csv(skipped_path, index=False)
        log.warning("Skipped %d of %d galaxies (missing or unreadable images), listed in %s: %s",
                    len(skipped), len(expected), skipped_path, skipped[ID_COL].tolist()[:5])
    elif skipped_path.exists():
        skipped_path.unlink()
    if len(seen) == 0:
        raise RuntimeError(f"No image could be read from {source}; nothing was predicted.")
    return skipped
