"""Writing results: tables (CSV, Parquet, HDF5), and long jobs written in parts so they survive a kill.

:class:`Parts` is how ``predict`` and ``embed`` write: rows accumulate into parts of ``chunk`` galaxies in
``<output>.parts/`` (each part written to a temporary file and renamed, so a part is either whole or
absent); a rerun of the same command finds the parts, skips the galaxies they hold and continues; at
the end the parts are merged into the output (written to a temporary file and renamed) and removed.
A killed run loses at most the part it was filling, and no galaxy is written twice.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

ID_COL = "id_str"
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
log = logging.getLogger(__name__)


class PartsMismatchError(ValueError):
    """Parts of an interrupted run made with other settings than the command that would continue them."""


class NoImageReadError(ValueError):
    """Not one image of the input could be read, so there is nothing to predict or embed."""


def list_skipped(expected: pd.DataFrame, done: set[str], output: str | Path | None) -> pd.DataFrame:
    """The galaxies expected in a run that produced no row (missing or unreadable images): logged, and
    written to ``<output>.skipped.csv`` when there is an output (a stale list from an earlier run removed)."""
    skipped = expected[~expected[ID_COL].astype(str).isin(done)].reset_index(drop=True)
    path = Path(output).with_name(Path(output).name + ".skipped.csv") if output else None
    if len(skipped):
        if path:
            from zoobot_tf.data.catalogs import FILE_COL
            from zoobot_tf.data.images import why_unreadable

            reasons = ([why_unreadable(f) for f in skipped[FILE_COL]] if FILE_COL in skipped
                       else "missing or unreadable image")
            skipped.assign(reason=reasons).to_csv(path, index=False)
        log.warning("Skipped %d of %d galaxies (missing or unreadable images)%s: %s", len(skipped), len(expected),
                    f", listed in {path}" if path else "", skipped[ID_COL].tolist()[:5])
    elif path and path.exists():
        path.unlink()
    return skipped


def require_some_read(n_read: int, source, skipped: pd.DataFrame, output: str | Path | None,
                      parts: "Parts | None" = None) -> None:
    """Raise :class:`NoImageReadError` when no galaxy was read, removing the empty output table and ``parts``
    (the list of skipped galaxies stays: it says which files to look at)."""
    if n_read:
        return
    if parts is not None:
        parts.cleanup()
    listed = ""
    if output:
        Path(output).unlink(missing_ok=True)
        if len(skipped):
            listed = f", listed in {Path(output).name}.skipped.csv"
    raise NoImageReadError(f"No image could be read from {source} ({len(skipped)} missing or unreadable{listed}); "
                           f"no table was written.")


def partial_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place (same folder, so the rename is atomic)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_table(table: pd.DataFrame, path: Path, meta: Mapping | None = None) -> None:
    """Write a table as CSV, Parquet or HDF5 (``id_str`` + ``features``, for embeddings) atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    tmp = partial_path(path)
    if suffix in (".parquet", ".pq"):
        table.to_parquet(tmp, index=False)
    elif suffix == ".csv":
        table.to_csv(tmp, index=False)
    elif suffix in (".h5", ".hdf5"):
        import h5py

        feats = [c for c in table.columns if c.startswith("feat_")]
        with h5py.File(tmp, "w") as f:
            f.create_dataset(ID_COL, data=table[ID_COL].astype(str).to_numpy(dtype=object), dtype=h5py.string_dtype())
            f.create_dataset("features", data=table[sorted(feats, key=lambda c: int(c.split("_")[1]))]
                             .to_numpy(np.float32))
            others = [c for c in table.columns if c != ID_COL and c not in feats]
            for c in others:
                f.create_dataset(c, data=table[c].to_numpy())
            f.attrs["meta"] = json.dumps(dict(meta or {}))
    else:
        raise ValueError(f"Unknown table format {suffix!r}; use .csv, .parquet or .h5")
    os.replace(tmp, path)


def _plain(value):
    """``value`` with tensors, numpy scalars and arrays as Python ones and NaN / infinity as None (JSON's null)."""
    if hasattr(value, "numpy"):  # an eager tensor (Keras metrics' results)
        value = value.numpy()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if value is pd.NA:  # a missing integer (nullable Int64 columns)
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_json(obj, path: str | Path) -> None:
    """Write ``obj`` as strict JSON (a NaN, e.g. a metric with nothing to average, is written as null, which
    every JSON reader accepts; Python's default writes the non-standard ``NaN``) atomically."""
    path = Path(path)
    tmp = partial_path(path)
    tmp.write_text(json.dumps(_plain(obj), indent=2, allow_nan=False, default=str) + "\n")
    os.replace(tmp, path)


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A Parquet file's rows, read on the calling thread alone.

    ``pd.read_parquet`` goes through Arrow's dataset scanner, whose I/O tasks can outlive the call; one
    still running when Python shuts down aborts the process ("terminate called without an active
    exception", exit 134) after the job has written its output (apache/arrow#34314, #36389); CI saw
    ``zoobot-tf predict`` end so, once, right after it read its parts back. ``ParquetFile`` without
    pre-buffering or threads reads synchronously, so nothing of Arrow's is left running when a job returns.
    """
    import pyarrow.parquet as pq

    with pq.ParquetFile(path, pre_buffer=False) as f:
        return f.read(columns=columns, use_threads=False, use_pandas_metadata=True).to_pandas(use_threads=False)


def read_table(path: str | Path) -> pd.DataFrame:
    """A table written by :func:`write_table` (CSV, Parquet, or an embeddings HDF5 file)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "r") as f:
            ids = [i.decode() if isinstance(i, bytes) else str(i) for i in f[ID_COL][:]]
            feats = f["features"][:]
            extra = {k: f[k][:] for k in f.keys() if k not in (ID_COL, "features")}
        table = pd.concat([pd.DataFrame({ID_COL: ids}),
                           pd.DataFrame(feats, columns=[f"feat_{i}" for i in range(feats.shape[1])])], axis=1)
        for k, v in extra.items():
            table[k] = v
        return table
    if suffix in (".parquet", ".pq"):
        return read_parquet(path)
    return pd.read_csv(path, dtype={ID_COL: str})


class Parts:
    """Resumable output of a long job (see the module docstring).

    Args:
        output: the final output file; parts live in ``<output>.parts/``.
        settings: what determines the results (model, input, options); a rerun must match them.
        chunk: galaxies per part.
    """

    def __init__(self, output: str | Path, settings: Mapping, chunk: int = 4096):
        from zoobot_tf.locks import RunLock

        self.output = Path(output)
        self.dir = self.output.with_name(self.output.name + ".parts")
        # one job per output: a second command writing the same output is refused while this one runs
        self.lock = RunLock(self.dir, f"a job writing {self.output.name}").acquire()
        self.settings = json.loads(json.dumps(dict(settings), default=str))
        self.chunk = int(chunk)
        self._tables: list[pd.DataFrame] = []
        self._arrays: dict[str, list[np.ndarray]] = {}
        self._buffered = 0
        meta = self.dir / "settings.json"
        if meta.exists():
            saved = json.loads(meta.read_text())
            if saved != self.settings:
                diff = {k: (saved.get(k), v) for k, v in self.settings.items() if saved.get(k) != v}
                self.lock.release()
                raise PartsMismatchError(
                    f"{self.dir} holds the parts of an interrupted run with other settings ({diff}); rerun that "
                    f"command to finish it, or delete {self.dir} to start again.")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = partial_path(meta)
            tmp.write_text(json.dumps(self.settings, indent=2))
            os.replace(tmp, meta)
        self.rescan()

    def rescan(self) -> None:
        """The galaxies held by the parts on disk (also parts other processes wrote, e.g. Beam workers)."""
        self.done_ids: set[str] = set()
        for part in self.part_files():
            self.done_ids.update(read_parquet(part, columns=[ID_COL])[ID_COL].astype(str))

    @property
    def resumed(self) -> bool:
        return bool(self.done_ids)

    def part_files(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.parquet"))

    def add(self, table: pd.DataFrame, arrays: Mapping[str, np.ndarray] | None = None) -> None:
        """Add rows (and per-row arrays, e.g. MC samples); a part is written every ``chunk`` rows."""
        self._tables.append(table)
        for k, v in (arrays or {}).items():
            self._arrays.setdefault(k, []).append(np.asarray(v))
        self._buffered += len(table)
        if self._buffered >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if not self._buffered:
            return
        index = len(self.part_files())
        name = f"part-{index:05d}"
        arrays = {k: np.concatenate(v) for k, v in self._arrays.items()}
        if arrays:  # arrays first: a part counts as done once its table exists
            tmp = self.dir / f".{name}.npz.tmp"
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, self.dir / f"{name}.npz")
        table = pd.concat(self._tables, ignore_index=True)
        tmp = self.dir / f".{name}.parquet.tmp"
        table.to_parquet(tmp, index=False)
        os.replace(tmp, self.dir / f"{name}.parquet")
        self.done_ids.update(table[ID_COL].astype(str))
        self._tables, self._arrays, self._buffered = [], {}, 0

    def tables(self, columns: list[str] | None = None) -> Iterable[pd.DataFrame]:
        """Each part's rows (only ``columns``, if given), in part order (parts with no rows, from a unit whose
        images were all unreadable, are left out)."""
        for part in self.part_files():
            table = read_parquet(part, columns)
            if len(table):
                yield table

    def arrays(self, key: str) -> Iterable[np.ndarray]:
        for part in self.part_files():
            with np.load(part.with_suffix(".npz")) as f:
                yield f[key]

    def merge_table(self) -> pd.DataFrame:
        self.flush()
        tables = list(self.tables())
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame({ID_COL: []})

    def write_streamed(self, path: Path) -> int:
        """Write every part's rows to ``path`` (CSV appended part by part, or Parquet row groups); returns rows."""
        self.flush()
        tmp = partial_path(path)
        n, writer = 0, None
        parquet = path.suffix.lower() in (".parquet", ".pq")
        try:
            for i, table in enumerate(self.tables()):
                if parquet:
                    import pyarrow as pa
                    import pyarrow.parquet as pq

                    t = pa.Table.from_pandas(table, preserve_index=False)
                    writer = writer or pq.ParquetWriter(str(tmp), t.schema)
                    writer.write_table(t)
                else:
                    table.to_csv(tmp, mode="w" if i == 0 else "a", header=i == 0, index=False)
                n += len(table)
        finally:
            if writer is not None:
                writer.close()
        if n == 0:
            pd.DataFrame({ID_COL: []}).to_csv(tmp, index=False) if not parquet else None
        if tmp.exists():
            os.replace(tmp, path)
        return n

    def close(self) -> None:
        """Release the folder for other jobs (the parts stay, for a rerun to continue from)."""
        self.lock.release()

    def cleanup(self) -> None:
        """Remove the parts once merged into the output."""
        self.lock.release()
        shutil.rmtree(self.dir, ignore_errors=True)


def write_zoobot_predictions(path: str | Path, parts: "Parts", label_cols: list[str]) -> None:
    """Zoobot's ``predict_on_catalog`` layout, so scripts written for Zoobot keep working.

    ``.hdf5``: datasets ``predictions`` (galaxy, output, sample), ``id_str`` and ``label_cols`` (utf-8
    strings), as ``zoobot.shared.save_predictions.predictions_to_hdf5``. ``.csv``: ``id_str`` and one
    ``<label>_pred`` column per output holding the samples as a JSON list (``"[12.1, 11.8]"``), as
    ``predictions_to_csv``; read back with ``df[col].apply(json.loads)``.
    """
    import h5py

    path = Path(path)
    tmp = partial_path(path)
    if path.suffix.lower() in (".hdf5", ".h5"):
        samples = list(parts.arrays("samples"))
        ids = [t[ID_COL].astype(str).tolist() for t in parts.tables([ID_COL])]
        data = np.concatenate(samples) if samples else np.zeros((0, len(label_cols), 0), np.float32)
        with h5py.File(tmp, "w") as f:
            f.create_dataset("predictions", data=data)
            f.create_dataset(ID_COL, data=[i for chunk in ids for i in chunk], dtype=h5py.string_dtype("utf-8"))
            f.create_dataset("label_cols", data=list(label_cols), dtype=h5py.string_dtype("utf-8"))
    elif path.suffix.lower() == ".csv":
        first = True
        for table, samples in zip(parts.tables([ID_COL]), parts.arrays("samples")):
            rows = {ID_COL: table[ID_COL].astype(str).tolist()}
            for j, col in enumerate(label_cols):
                rows[f"{col}_pred"] = [json.dumps([float(v) for v in s]) for s in samples[:, j, :]]
            pd.DataFrame(rows).to_csv(tmp, mode="w" if first else "a", header=first, index=False)
            first = False
        if first:
            pd.DataFrame({ID_COL: []}).to_csv(tmp, index=False)
    else:
        raise ValueError(f"Zoobot's prediction layout is .csv or .hdf5. Received: {path.name}")
    os.replace(tmp, path)
