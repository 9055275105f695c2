"""Training callbacks that survive interruption, and TensorBoard galaxy grids.

Keras' BackupAndRestore restores weights, optimizer and epoch after a crash, but the other
callbacks start from scratch: ModelCheckpoint would overwrite the best checkpoint with the first
(worse) epoch after a restart, EarlyStopping would forget its patience, and a CSV log would get
duplicate rows. The callbacks here read the run's history file so that a resumed run behaves
like an uninterrupted one.
"""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


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
    holds the epoch's logs and ``step``, the optimizer's step count at the end of the epoch."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self._first_epoch_seen = False
        self._keys: list[str] | None = None

    def on_epoch_begin(self, epoch, logs=None):
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


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that starts from the best value and patience count of a previous, interrupted run."""

    def __init__(self, history_path: str | Path, **kwargs):
        super().__init__(**kwargs)
        self.history_path = Path(history_path)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        best, best_epoch, since = best_so_far(read_history(self.history_path), self.monitor)
        if math.isfinite(best):
            self.best, self.best_epoch, self.wait = best, best_epoch, since


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


class GalaxyGrid(keras.callbacks.Callback):
    """Each ``every`` epochs, log to TensorBoard a grid of validation galaxies with their predicted and
    observed vote fractions for the first questions of the schema (``<logdir>/validation``)."""

    def __init__(self, logdir: str | Path, images: np.ndarray, counts: np.ndarray, schema, every: int = 1,
                 n_questions: int = 2):
        super().__init__()
        self.logdir = str(Path(logdir) / "validation")
        self.images, self.counts, self.schema = images, counts, schema
        self.every = every
        self.n_questions = n_questions
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every:
            return
        from zoobot_tf import stats

        # A direct call, not model.predict: only the chief runs this callback, and predict() would start
        # collective ops under a multi-worker strategy that the other workers never join.
        conc = self.model(self.images, training=False).numpy()
        predicted = stats.expected_vote_fractions(conc, self.schema)
        observed = stats.vote_fractions_from_counts(self.counts, self.schema)
        png = render_grid(self.images, predicted, observed, self.schema, self.n_questions)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.logdir)
        with self._writer.as_default():
            tf.summary.image("galaxies_predicted_vs_observed", tf.image.decode_png(png)[None], step=epoch)
        self._writer.flush()


def render_grid(images, predicted, observed, schema, n_questions: int = 2) -> bytes:
    """PNG bytes: one column per galaxy, its image above bars of predicted (filled) and observed
    (outline) vote fractions for the first ``n_questions`` questions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    questions = schema.questions[:n_questions]
    fig, axes = plt.subplots(1 + len(questions), n, figsize=(1.8 * n, 1.8 * (1 + len(questions))), squeeze=False)
    for i in range(n):
        ax = axes[0, i]
        ax.imshow(np.clip(images[i] / 255.0, 0, 1))
        ax.set_axis_off()
        for qi, q in enumerate(questions):
            ax = axes[1 + qi, i]
            ys = np.arange(len(q.answers))
            ax.barh(ys, predicted[i, q.start:q.end], color="tab:blue")
            ax.barh(ys, np.nan_to_num(observed[i, q.start:q.end]), fill=False, edgecolor="black")
            ax.set_xlim(0, 1)
            ax.set_yticks(ys, q.answer_texts if i == 0 else [""] * len(ys), fontsize=6)
            ax.tick_params(axis="x", labelsize=6)
            if i == 0:
                ax.set_title(q.name, fontsize=7, loc="left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
