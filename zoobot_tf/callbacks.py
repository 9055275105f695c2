"""Training callbacks that survive interruption (the galaxy grids are in :mod:`zoobot_tf.visualise`).

Keras' BackupAndRestore restores weights, optimizer and epoch after a crash, but the other
callbacks start from scratch: ModelCheckpoint would overwrite the best checkpoint with the first
(worse) epoch after a restart, EarlyStopping and ReduceLROnPlateau would forget their patience, and a
CSV log would get duplicate rows. The callbacks here read the run's history file so that a resumed run behaves
like an uninterrupted one.
"""
from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np


def read_history(path: str | Path) -> list[dict]:
    """Rows of a history CSV (one per epoch; the last row wins if an epoch appears twice)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    by_epoch = {}
    for row in rows:
        by_epoch[int(row["epoch"])] = {k: (float(v) if k != "epoch" else int(v)) for k, v in row.items() if v != ""}
    return [by_epoch[e] for e in sorted(by_epoch)]


def best_so_far(history: list[dict], monitor: str = "val_loss") -> tuple[float, int, int]:
    """(best value, epoch of best, epochs since best) from history rows; (inf, -1, 0) when empty."""
    values = [(r[monitor], r["epoch"]) for r in history if monitor in r and math.isfinite(r[monitor])]
    if not values:
        return math.inf, -1, 0
    best, epoch = min(values)
    last = max(r["epoch"] for r in history)
    return best, epoch, last - epoch


class HistoryLog(keras.callbacks.Callback):
    """CSV with exactly one row per epoch, across restarts: rows from epochs that are about to be
    re-run (after a resume from an older backup) are dropped before training continues. Each row
    holds the epoch's logs, ``step``, the optimizer's step count at the end of the epoch, and ``seconds``,
    the epoch's wall time (training and validation)."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self._first_epoch_seen = False
        self._keys: list[str] | None = None
        self._epoch_start: float | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        if self._first_epoch_seen:
            return
        self._first_epoch_seen = True
        kept = [r for r in read_history(self.path) if r["epoch"] < epoch]
        self._write(kept)

    def _write(self, rows):
        keys = sorted({k for r in rows for k in r} - {"epoch"})
        self._keys = keys if rows else None
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            if rows:
                w = csv.DictWriter(f, fieldnames=["epoch"] + keys)
                w.writeheader()
                w.writerows(rows)
        os.replace(tmp, self.path)

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}}
        optimizer = getattr(self.model, "optimizer", None) if self.model is not None else None
        if optimizer is not None:
            row["step"] = float(optimizer.iterations.numpy())  # optimizer steps so far, across restarts
        if self._epoch_start is not None:
            row["seconds"] = round(time.perf_counter() - self._epoch_start, 3)
        keys = sorted(set(row) - {"epoch"})
        if self._keys is not None and keys != self._keys:  # new columns: rewrite with the union
            self._write(read_history(self.path) + [row])
            return
        new_file = self._keys is None
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["epoch"] + keys)
            if new_file:
                w.writeheader()
            w.writerow(row)
            f.flush()
            os.fsync(f.fileno())
        self._keys = keys


class _ResumesFromHistory:
    """Mixin for a Keras callback whose counters a resumed run restores from the history file, from the rows
    of the epochs before the first one this process trains (rows of epochs about to be re-run, after a
    resume from a backup older than the history, do not count). Restored at the first ``on_epoch_begin``,
    when that epoch is known."""

    def __init__(self, history_path: str | Path, **kwargs):
        super().__init__(**kwargs)
        self.history_path = Path(history_path)
        self._restored = False

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._restored = False

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        if not self._restored:
            self._restored = True
            self.restore([r for r in read_history(self.history_path) if r["epoch"] < epoch])


class ResumableEarlyStopping(_ResumesFromHistory, keras.callbacks.EarlyStopping):
    """EarlyStopping that starts from the best value and patience count of a previous, interrupted run."""

    def restore(self, history: list[dict]) -> None:
        best, best_epoch, since = best_so_far(history, self.monitor)
        if math.isfinite(best):
            self.best, self.best_epoch, self.wait = best, best_epoch, since


class ResumableReduceLROnPlateau(_ResumesFromHistory, keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau that resumes with the best value, patience count and cooldown of an interrupted run.

    The rate itself is an optimizer variable and comes back with the backup; the counters are rebuilt by
    replaying the history's monitored values and logged rates through Keras's own rule (on a stand-in
    optimizer, so the real rate is not touched), so a resumed run lowers its rate at the epoch an
    uninterrupted one would."""

    def restore(self, history: list[dict]) -> None:
        model = self.model
        for row in history:
            if self.monitor in row:
                rate = row.get("learning_rate", math.inf)  # the rate the epoch trained at
                self.set_model(SimpleNamespace(optimizer=SimpleNamespace(learning_rate=rate)))
                keras.callbacks.ReduceLROnPlateau.on_epoch_end(self, row["epoch"], {self.monitor: row[self.monitor]})
        self.set_model(model)


class SharedBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore for a cluster: the chief writes the backup, every worker restores from it.

    With one backup per worker (Keras 3's default), a worker killed just after saving epoch k while
    the chief was still at k - 1 restarts one epoch ahead, and the workers' collectives no longer
    match. One backup, on the shared file system that already holds the shards, keeps every worker
    on the same epoch.
    """

    def __init__(self, backup_dir, chief: bool = True, **kwargs):
        super().__init__(backup_dir, delete_checkpoint=chief, **kwargs)
        self.chief = chief

    def _save_model(self):
        if self.chief:
            super()._save_model()
