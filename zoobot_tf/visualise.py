"""Looking at galaxies in TensorBoard: legible galaxy grids while training, and embeddings in the projector.

* :class:`GalaxyGrids` (a Keras callback, used by ``train`` and ``finetune``) logs, every few epochs, a fixed
  sample of validation galaxies with their predictions and labels (``galaxies/validation``), and the worst
  predicted galaxies of that sample by the task's loss (``galaxies/worst_predicted``). Each galaxy is its own
  image, as wide as a dashboard card so it is shown unscaled: the galaxy as the model sees it, then its
  questions (or classes) with predicted and observed values, in type that reads at the default zoom.
* :func:`write_projector` writes TensorBoard projector files: the embeddings, a metadata table (id,
  predicted answers or class, anomaly score, any catalog columns) and a sprite of galaxy thumbnails made by
  the model's own view layer (crop, greyscale), so each point is drawn as its galaxy.

    tensorboard --logdir runs/x/logs          # scalars, galaxy grids, hparams
    tensorboard --logdir embeddings_board     # the projector (zoobot-tf embed --tensorboard embeddings_board)
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

SPRITE_LIMIT = 8192  # TensorBoard's projector reads sprites up to 8192 x 8192 pixels


CARD_WIDTH = 340  # pixels: an image this wide is shown unscaled in TensorBoard's images dashboard cards


def render_galaxy(image: np.ndarray, chart: list, title: str, width: int = CARD_WIDTH) -> bytes:
    """PNG, ``width`` pixels wide, of one galaxy (its view, in [0, 1]) above horizontal bars of its chart rows
    (predicted filled, observed as an outline): at TensorBoard's default zoom it is shown at its own size,
    so the type stays legible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dpi, pad, image_side, row, tick, head = 100, 8, 150, 17, 16, 34
    longest = max((len(b[0]) for _, bars in chart for b in bars), default=4)
    label_width = int(min(190, 18 + 7.0 * longest))  # room for the longest row name at 9 pt
    titles = [group.replace(", ", ",\n") for group, _ in chart]  # long class titles over two lines
    blocks = [(t, bars, 15 * (t.count("\n") + 1), row * len(bars)) for t, (_, bars) in zip(titles, chart)]
    height = pad + head + image_side + 22 + sum(th + bh + tick + 12 for _, _, th, bh in blocks) + pad
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)

    def box(left, top, w, h):  # pixels from the top-left corner -> figure fractions
        return [left / width, 1 - (top + h) / height, w / width, h / height]

    fig.text(pad / width, 1 - (pad + 12) / height, title, fontsize=10)
    fig.text(pad / width, 1 - (pad + 27) / height, "bars: predicted (filled), observed (outline)", fontsize=7.5,
             color="0.3")
    ax = fig.add_axes(box((width - image_side) / 2, pad + head, image_side, image_side))
    img = np.clip(np.asarray(image, np.float32), 0, 1)
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
    ax.set_axis_off()
    top = pad + head + image_side + 22
    for group, bars, title_h, bars_h in blocks:
        fig.text(pad / width, 1 - (top + title_h - 3) / height, group, fontsize=9.5, weight="bold")
        ax = fig.add_axes(box(label_width, top + title_h, width - label_width - pad - 4, bars_h))
        ys = np.arange(len(bars))
        predicted = np.array([b[1] for b in bars], np.float64)
        observed = np.array([b[2] for b in bars], np.float64)
        ax.barh(ys, predicted, color="tab:blue", height=0.7)
        if np.isfinite(observed).any():
            ax.barh(ys, np.nan_to_num(observed), fill=False, edgecolor="black", height=0.7)
        ax.set_yticks(ys, [b[0] for b in bars], fontsize=9)
        ax.set_ylim(len(bars) - 0.5, -0.5)
        ax.set_xlim(0, max(1.0, float(np.nanmax(np.concatenate([predicted, np.nan_to_num(observed)])))))
        ax.tick_params(axis="x", labelsize=8, pad=1)
        top += title_h + bars_h + tick + 12
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


class GalaxyGrids(keras.callbacks.Callback):
    """Every ``every`` epochs: a fixed validation sample with predictions (``galaxies/validation``) and its
    ``n`` worst predicted galaxies by the task's loss (``galaxies/worst_predicted``), in ``<logdir>/validation``.

    Args:
        images: (N, H, W, C) pixels in [0, 255] of validation galaxies (e.g. 64 to 256 of them).
        labels: their labels (vote counts, class indices or targets).
        task: the model's task (it describes each galaxy's chart and computes the loss).
        n: galaxies per grid.
    """

    def __init__(self, logdir, images: np.ndarray, labels: np.ndarray, task, every: int = 1, n: int = 6):
        super().__init__()
        self.logdir = str(Path(logdir) / "validation")
        self.images, self.labels, self.task = images, labels, task
        self.every, self.n = max(1, int(every)), int(n)
        self._writer = None

    def grids(self, model) -> dict[str, list[bytes]]:
        # A direct call, not model.predict: only the chief runs this callback, and predict() would start
        # collective ops under a multi-worker strategy that the other workers never join.
        outputs = np.concatenate([model(self.images[i:i + 64], training=False).numpy()
                                  for i in range(0, len(self.images), 64)])
        views = np.concatenate([model.view(self.images[i:i + 64], training=False).numpy()
                                for i in range(0, len(self.images), 64)])
        losses = self.task.loss().call(tf.constant(self.labels), tf.constant(outputs)).numpy()
        out = {}
        for tag, index in (("validation", np.arange(min(self.n, len(outputs)))),
                           ("worst_predicted", np.argsort(-losses)[:self.n])):
            out[tag] = [render_galaxy(views[i], self.task.chart(outputs[i], self.labels[i]),
                                      f"validation galaxy {i}, loss {losses[i]:.2f}") for i in index]
        return out

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.logdir)
        with self._writer.as_default():
            for tag, pngs in self.grids(self.model).items():
                tf.summary.image(f"galaxies/{tag}", tf.stack([tf.image.decode_png(p, channels=3) for p in
                                                               _same_size(pngs)]), step=epoch, max_outputs=len(pngs))
        self._writer.flush()


def validation_sample(source, load_size: int, n: int = 64):
    """(images, labels) of up to ``n`` validation galaxies, fixed for the whole run (for the galaxy grids)."""
    for x, y, w in source.dataset("val", n, load_size, cache=False).take(1):
        keep = w.numpy() > 0
        return x.numpy()[keep], y.numpy()[keep]
    return None, None


def _same_size(pngs: list[bytes]) -> list[bytes]:
    """Pad PNGs to one size (tf.summary.image takes a batch of equal-sized images)."""
    from PIL import Image

    ims = [Image.open(io.BytesIO(p)).convert("RGB") for p in pngs]
    w, h = max(i.width for i in ims), max(i.height for i in ims)
    out = []
    for im in ims:
        canvas = Image.new("RGB", (w, h), "white")
        canvas.paste(im, (0, 0))
        buf = io.BytesIO()
        canvas.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def thumbnail_size(n: int, largest: int = 96) -> int:
    """Side of each sprite thumbnail so that ``n`` of them fit TensorBoard's sprite limit."""
    per_row = math.ceil(math.sqrt(max(n, 1)))
    return int(max(8, min(largest, SPRITE_LIMIT // per_row)))


def sprite(thumbnails: np.ndarray) -> bytes:
    """Thumbnails (n, s, s, c) in [0, 1] -> one square PNG, row-major (TensorBoard's sprite layout)."""
    from PIL import Image

    n, s = len(thumbnails), thumbnails.shape[1]
    per_row = math.ceil(math.sqrt(max(n, 1)))
    canvas = np.zeros((per_row * s, per_row * s, 3), np.uint8)
    for i, t in enumerate(thumbnails):
        t = np.clip(np.asarray(t, np.float32), 0, 1)
        t = np.repeat(t, 3, axis=-1) if t.shape[-1] == 1 else t[..., :3]
        r, c = divmod(i, per_row)
        canvas[r * s:(r + 1) * s, c * s:(c + 1) * s] = np.round(255 * t).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="PNG")
    return buf.getvalue()


def write_projector(logdir, ids: Sequence[str], vectors: np.ndarray, metadata: pd.DataFrame,
                    thumbnails: np.ndarray | None = None, name: str = "galaxies", description: str = "") -> Path:
    """Write TensorBoard projector files into ``logdir``: ``<name>.tsv`` (the vectors), ``<name>_metadata.tsv``
    (``id_str`` first, then ``metadata``'s columns), ``<name>_sprite.png`` and ``projector_config.pbtxt``.
    ``tensorboard --logdir <logdir>`` (or a parent folder) then shows the points, searchable by id and
    colourable by any column. A text summary (``description``) makes the folder a TensorBoard run, which is
    how the projector finds it below a parent logdir."""
    from tensorboard.plugins import projector

    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    vectors = np.asarray(vectors, np.float32)
    if len(vectors) != len(ids) or len(metadata) != len(ids):
        raise ValueError(f"{len(ids)} ids, {len(vectors)} vectors and {len(metadata)} metadata rows must match")
    np.savetxt(logdir / f"{name}.tsv", vectors, delimiter="\t", fmt="%.6g")
    meta = pd.concat([pd.DataFrame({"id_str": list(ids)}), metadata.reset_index(drop=True)], axis=1)
    meta = meta.astype(str).replace({"\t": " ", "\n": " "}, regex=True)
    meta.to_csv(logdir / f"{name}_metadata.tsv", sep="\t", index=False)
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = name
    embedding.tensor_path = f"{name}.tsv"
    embedding.metadata_path = f"{name}_metadata.tsv"
    if thumbnails is not None and len(thumbnails):
        (logdir / f"{name}_sprite.png").write_bytes(sprite(thumbnails))
        embedding.sprite.image_path = f"{name}_sprite.png"
        embedding.sprite.single_image_dim.extend([thumbnails.shape[2], thumbnails.shape[1]])
    projector.visualize_embeddings(str(logdir), config)
    with tf.summary.create_file_writer(str(logdir)).as_default():
        tf.summary.text("embeddings", description or f"{len(ids)} galaxies, {vectors.shape[1]} dimensions", step=0)
    return logdir
