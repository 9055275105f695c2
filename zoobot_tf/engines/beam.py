"""Shards and batch predictions on Apache Beam: the same outputs as the single-process jobs, from many workers.

Beam (``pip install zoobot-tf[beam]``) is the TensorFlow ecosystem's engine for data jobs: TFDS and TFX build on
it, and one pipeline runs on the local DirectRunner (here with several worker processes), Dataflow, Flink or
Spark. zoobot-tf keeps the work units and the code that does them in the single-process modules, so both paths
write the same bytes:

* ``make-shards``: one work unit per shard file (:class:`zoobot_tf.data.tfrecords.ShardWork`, planned by
  :func:`~zoobot_tf.data.tfrecords.plan_shards` exactly as the single-process writer plans it). A worker reads,
  checks and re-encodes the shard's images and writes the shard through TF's file systems (local, ``gs://``,
  ``s3://``, ``hdfs://``) under a temporary name, renamed when whole; the manifest is written last, from every
  shard's entry. A retried unit rewrites the same file; a rerun after a failed job skips shards already whole.
* ``predict`` / ``embed``: one work unit per ``chunk`` galaxies of a catalog or folder, or per shard file of a
  shard folder. Each worker loads the model once (``DoFn.setup``) and writes its unit's rows as one Parquet part
  ``<output>.parts/part-<unit>.parquet`` (temporary name, then renamed: a retried unit replaces its part, never
  duplicates rows); the driver then merges the parts in input order into the output table, lists unreadable
  images in ``<output>.skipped.csv``, and (embed) adds PCA, anomaly scores and projector files as the
  single-process job does. A rerun of the same command after a failure skips the units already written.

The output folder of ``predict``/``embed`` must be on a file system every worker and the driver see (local for
the DirectRunner, a shared mount for a cluster).
"""
from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path
from typing import Sequence

import pandas as pd

log = logging.getLogger(__name__)

RUNNERS = {"direct": "DirectRunner", "dataflow": "DataflowRunner", "flink": "FlinkRunner", "spark": "SparkRunner"}


class EngineError(RuntimeError):
    """A distributed job that cannot run as asked (Beam missing, an input it cannot split, a failed pipeline)."""


def _beam():
    try:
        import apache_beam as beam
    except ImportError as e:
        raise EngineError("--runner needs Apache Beam: pip install 'zoobot-tf[beam]' (or apache-beam)") from e
    return beam


def pipeline_options(runner: str, workers: int = 2, options: str | Sequence[str] | None = None):
    """Beam pipeline options for ``runner`` (direct|dataflow|flink|spark) plus the user's own (``options``: a
    string of ``--flag=value`` as Beam takes them, e.g. ``--project=p --region=r --temp_location=gs://b/tmp``).
    The DirectRunner runs ``workers`` worker processes."""
    _beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    if not log.isEnabledFor(logging.DEBUG):  # Beam's per-worker INFO lines would bury the job's own output
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
    if runner not in RUNNERS:
        raise EngineError(f"--runner {runner!r}: one of {', '.join(RUNNERS)}")
    argv = [f"--runner={RUNNERS[runner]}"]
    if runner == "direct":
        argv += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    argv += shlex.split(options) if isinstance(options, str) else list(options or [])
    return PipelineOptions(argv)


# ------------------------------------------------------------------------------------------------ make-shards
def write_shards_beam(catalog: pd.DataFrame, output_dir: str, task=None, label_cols=None, runner: str = "direct",
                      workers: int = 2, beam_options=None, galaxies_per_shard: int = 1024, min_shards: int = 2,
                      stored_size: int | None = None, jpeg_quality: int = 95, overwrite: bool = False,
                      remake: str | None = None, split_col: str | None = "split") -> dict:
    """:func:`zoobot_tf.data.tfrecords.write_shards` on Beam: the same shard files (same galaxies, same order,
    same bytes) and manifest. Shards already whole from an earlier failed run (``<file>`` with its entry in
    ``.entries/``) are kept; ``overwrite`` starts again."""
    import json

    import tensorflow as tf

    from zoobot_tf.data import tfrecords

    beam = _beam()
    output_dir = str(output_dir)
    work, label_cols = tfrecords.plan_shards(catalog, task, label_cols, split_col, None, galaxies_per_shard,
                                             min_shards)
    tfrecords.prepare_output(output_dir, overwrite)
    entries_dir = tfrecords._join(output_dir, ".entries")
    if overwrite and tf.io.gfile.exists(entries_dir):
        tf.io.gfile.rmtree(entries_dir)
    tf.io.gfile.makedirs(entries_dir)
    done = {}
    for path in tf.io.gfile.glob(tfrecords._join(entries_dir, "*.json")):
        with tf.io.gfile.GFile(path) as f:
            entry = json.loads(f.read())
        shard = tfrecords._join(output_dir, entry["file"])
        if tf.io.gfile.exists(shard) and tf.io.gfile.stat(shard).length == entry["bytes"]:
            done[entry["file"]] = entry
    todo = [w for w in work if w.file not in done]
    log.info("%d shards to write on %s (%d already whole)", len(todo), runner, len(done))
    if todo:
        with beam.Pipeline(options=pipeline_options(runner, workers, beam_options)) as p:
            _ = (p | "shards" >> beam.Create(todo)
                 | "spread" >> beam.Reshuffle()
                 | "write" >> beam.Map(_write_one_shard, output_dir, entries_dir, task, stored_size, jpeg_quality))
    entries = []
    for w in work:
        with tf.io.gfile.GFile(tfrecords._join(entries_dir, w.file + ".json")) as f:
            entries.append(json.loads(f.read()))
    manifest = tfrecords.write_manifest(output_dir, entries, task, label_cols, stored_size, remake,
                                        engine={"runner": runner, "processes": len({e["process"] for e in entries})})
    tf.io.gfile.rmtree(entries_dir)
    return manifest


def _write_one_shard(work, output_dir: str, entries_dir: str, task, stored_size, jpeg_quality) -> str:
    """A worker's unit: the shard, then its entry (the entry only once the shard is whole)."""
    import json

    import tensorflow as tf

    from zoobot_tf.data import tfrecords

    import socket

    entry = tfrecords.write_shard(work, output_dir, task, stored_size, jpeg_quality)
    entry["process"] = f"{socket.gethostname()}:{os.getpid()}"
    path = tfrecords._join(entries_dir, work.file + ".json")
    with tf.io.gfile.GFile(path + ".partial", "w") as f:
        f.write(json.dumps(entry))
    tf.io.gfile.rename(path + ".partial", path, overwrite=True)
    return work.file


# ---------------------------------------------------------------------------------------------- predict / embed
def inference_units(data, split: str | None, chunk: int) -> tuple[pd.DataFrame, list[tuple]]:
    """The galaxies expected (``id_str``, ``file_loc``) and the work units: ``("rows", i, table)`` per ``chunk``
    rows of a catalog or folder, ``("shard", i, shard_dir, file)`` per shard file of a shard folder."""
    from zoobot_tf.data import tfrecords
    from zoobot_tf.data.sources import CatalogSource, ShardSource

    if isinstance(data, CatalogSource):
        rows = data.rows(split)[["id_str", "file_loc"]].reset_index(drop=True)
        units = [("rows", n, rows.iloc[start:start + chunk].reset_index(drop=True))
                 for n, start in enumerate(range(0, len(rows), chunk))]
        return rows, units
    if isinstance(data, ShardSource):
        expected, _ = data.images(split)
        splits = [split] if split else list(data.manifest["splits"])
        files = [f for s in splits for f in tfrecords.shard_files(data.shard_dir, s)]
        return expected, [("shard", n, str(data.shard_dir), f) for n, f in enumerate(files)]
    raise EngineError(f"--runner reads catalogs, folders of images and shard folders; {data} is neither (read a "
                      f"TFDS set with --runner by writing it as shards first, or drop --runner).")


def unit_images(unit):
    """(encoded bytes, id) of one work unit, as the single-process job reads them."""
    import tensorflow as tf

    from zoobot_tf.data import tfrecords
    from zoobot_tf.data.sources import CatalogSource

    if unit[0] == "rows":
        return CatalogSource(unit[2], split_col=None).images()[1]
    shard_dir, file = unit[2], unit[3]
    parse = tfrecords.parse_fn(tfrecords.manifest_task(tfrecords.read_manifest(shard_dir)))
    return tf.data.TFRecordDataset([file]).map(parse).map(lambda image, labels, id_str: (image, id_str))


def _part_path(parts_dir: str, unit) -> str:
    return os.path.join(parts_dir, f"part-{unit[1]:05d}.parquet")


class _InferenceFn:
    """The per-worker inference DoFn body (built into a ``beam.DoFn`` by :func:`_dofn`): loads the model once,
    writes one Parquet part per unit."""

    def __init__(self, job: str, model: str, parts_dir: str, batch_size: int, options: dict):
        self.job, self.model_spec, self.parts_dir = job, model, parts_dir
        self.batch_size, self.options = batch_size, options
        self.model = None

    def setup(self):
        from zoobot_tf.models.resolve import load_model

        self.model = load_model(self.model_spec, compile=False)
        if self.options.get("precision"):
            self.model = self.model.with_precision(self.options["precision"])

    def process(self, unit):
        from zoobot_tf.predictions import predicted_batches
        from zoobot_tf.representations import embedded_batches

        path = _part_path(self.parts_dir, unit)
        if self.job == "predict":
            o = self.options
            tables = [t for t, _ in predicted_batches(self.model, unit_images(unit), self.batch_size,
                                                      o["n_samples"], o["tta"], o["interval"], o.get("seed", 0))]
        else:
            tables = list(embedded_batches(self.model, unit_images(unit), self.batch_size))
        table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame({"id_str": pd.Series([], dtype=str)})
        tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.tmp-{os.getpid()}"
        table.to_parquet(tmp, index=False)
        os.replace(tmp, path)  # a retried unit replaces its part: no row twice
        yield unit[1], len(table)


def _dofn(fn: _InferenceFn):
    beam = _beam()

    class InferenceDoFn(beam.DoFn):
        def __init__(self, body):
            self.body = body

        def setup(self):
            self.body.setup()

        def process(self, unit):
            yield from self.body.process(unit)

    return InferenceDoFn(fn)


def run_inference(job: str, model: str, source, output, runner: str = "direct", workers: int = 2,
                  beam_options=None, split: str | None = None, batch_size: int = 64, chunk: int = 4096,
                  options: dict | None = None):
    """Run ``predict`` or ``embed`` on Beam and write ``output``; returns the merged table (embed) or the
    skipped galaxies (predict), as the single-process functions do."""
    from zoobot_tf.data.sources import open_source
    from zoobot_tf.models.resolve import load_model
    from zoobot_tf.outputs import Parts, list_skipped, require_some_read
    from zoobot_tf.predictions import _identity, _require_unique

    beam = _beam()
    if not isinstance(model, (str, Path)):
        raise EngineError("--runner loads the model on every worker: give it as a path or name, not an object")
    options = dict(options or {})
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    local = load_model(str(model), compile=False)  # checked once here, before any worker starts; its identity
    data = open_source(source)
    settings = {"job": job, "model": _identity(local), "source": str(data), "split": split, "runner": True,
                "chunk": chunk, **options}
    parts = Parts(output, settings, chunk)
    try:
        with data.reading():
            expected, units = inference_units(data, split, chunk)
            _require_unique(expected)
            todo = [u for u in units if not os.path.exists(_part_path(str(parts.dir), u))]
            log.info("%s on %s: %d of %d units to run", job, runner, len(todo), len(units))
            if todo:
                fn = _InferenceFn(job, str(model), str(parts.dir), batch_size, options)
                with beam.Pipeline(options=pipeline_options(runner, workers, beam_options)) as p:
                    _ = (p | "units" >> beam.Create(todo) | "spread" >> beam.Reshuffle()
                         | job >> beam.ParDo(_dofn(fn)))
        parts.rescan()
        if job == "embed":
            table = parts.merge_table()
            n = len(table)
        else:  # predict streams the parts into the output table
            table, n = None, parts.write_streamed(output)
        skipped = list_skipped(expected, parts.done_ids, output)
        result = skipped if table is None else table
    finally:
        parts.close()
    require_some_read(n, source, skipped, output, parts)
    if job == "embed":
        from zoobot_tf.representations import finish_embeddings

        result = finish_embeddings(local, data, split, result, output, **options.get("finish", {}),
                                   batch_size=batch_size)
    parts.cleanup()
    return result
