"""Embeddings: the pooled encoder output of every galaxy, similarity search and anomaly scores.

    from zoobot_tf.representations import embed, EmbeddingIndex
    table = embed("runs/demo/model.keras", "my_images/", "embeddings.parquet", pca_components=32)
    index = EmbeddingIndex.from_table(table)
    index.neighbours("J1234+5678", k=10)        # most similar galaxies (cosine similarity)
    index.anomaly_scores(k=10)                   # mean distance to the k nearest neighbours

Tables have ``id_str`` and ``feat_0 .. feat_{d-1}`` (Parquet, CSV or HDF5). PCA is fitted on up to
``pca_fit_max`` galaxies and applied to all, so it scales to large catalogs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from zoobot_tf.data.catalogs import ID_COL
from zoobot_tf.data.pipeline import decoded_batches
from zoobot_tf.data.sources import open_source
from zoobot_tf.outputs import Parts, list_skipped, read_table, require_some_read, write_table


def feature_columns(table: pd.DataFrame) -> list[str]:
    cols = [c for c in table.columns if c.startswith("feat_")]
    return sorted(cols, key=lambda c: int(c.split("_")[1]))


def PCA(n_components: int, max_rows: int | None = None):
    """scikit-learn's PCA (randomised SVD when it pays off; ``explained_variance_ratio_`` and ``components_``
    as usual). A count above min(galaxies, features) is refused up front with the numbers."""
    from sklearn.decomposition import PCA as SkPCA

    class CheckedPCA(SkPCA):
        def fit(self, x, y=None):
            x = np.asarray(x)
            if self.n_components > min(x.shape):
                raise ValueError(f"pca_components={self.n_components} exceeds min(galaxies, features)={min(x.shape)}")
            return super().fit(x.astype(np.float64))

    return CheckedPCA(n_components=int(n_components), random_state=0)


def read_embeddings(path: str | Path) -> pd.DataFrame:
    """An embeddings table written by :func:`embed` (Parquet, CSV or HDF5)."""
    return read_table(path)


def embedded_batches(model, ds, batch_size: int):
    """(encoded bytes, id) -> per batch a table ``id_str, feat_0..``: what every embed path (this process, or a
    worker of a distributed job) computes; unreadable images are dropped."""
    from zoobot_tf.models.traced import embedding_fn

    run = embedding_fn(model)
    for images, batch_ids in decoded_batches(ds, batch_size, model.load_size):
        x = run(images).numpy().astype(np.float32)
        yield pd.concat([pd.DataFrame({ID_COL: [i.decode() for i in batch_ids.numpy()]}),
                         pd.DataFrame(x, columns=[f"feat_{i}" for i in range(x.shape[1])])], axis=1)


def embed(model, source, output: str | Path | None = None, batch_size: int = 64, pca_components: int | None = None,
          pca_fit_max: int = 50_000, split: str | None = None, progress: bool = True, anomaly_k: int | None = None,
          precision: str | None = None, chunk: int = 4096, tensorboard: str | Path | None = None,
          tensorboard_columns: Sequence[str] = (), tensorboard_max: int = 10_000) -> pd.DataFrame:
    """Embeddings for every readable galaxy of ``source`` (catalog, folder of images, shards, ``tfds:<name>``).

    Returns (and writes, if ``output``) a table ``id_str, feat_0..feat_{d-1}``; with ``pca_components``
    the features are the first k principal components; with ``anomaly_k`` an ``anomaly_score`` column
    (mean cosine distance to the k nearest neighbours). With an ``output``, the embeddings are written in
    parts as they are computed, so a rerun after an interruption continues where it stopped.

    With ``tensorboard`` (a folder), TensorBoard projector files are written there for up to
    ``tensorboard_max`` galaxies (a fixed random subset beyond that): the features, a metadata table (id, the
    model's predicted answers or class, the anomaly score, and the source catalog's ``tensorboard_columns``)
    and a sprite of thumbnails made by the model's view layer: ``tensorboard --logdir <folder>``.
    """
    from tqdm import tqdm

    from zoobot_tf.models.resolve import load_model

    model = load_model(model, compile=False)  # inference only: no optimizer slots
    if precision:
        model = model.with_precision(precision)
    data = open_source(source)
    parts = None
    if output:
        from zoobot_tf.predictions import _identity

        Path(output).parent.mkdir(parents=True, exist_ok=True)
        parts = Parts(output, {"job": "embed", "model": _identity(model), "source": str(data), "split": split,
                               "precision": precision}, chunk)
    tables = []
    done = len(parts.done_ids) if parts else 0
    try:
        with data.reading():  # a corrupt shard or data file is named, with how to remake it
            expected, ds = data.images(split, exclude=parts.done_ids if parts else None)
            with tqdm(total=len(expected) + done, initial=done, desc="embedding", unit="galaxy",
                      disable=not progress) as bar:
                for part in embedded_batches(model, ds, batch_size):
                    if parts:
                        parts.add(part)
                    else:
                        tables.append(part)
                    bar.update(len(part))
        table = parts.merge_table() if parts else (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame())
        skipped = list_skipped(expected, set(table[ID_COL].astype(str)) if len(table) else set(), output)
    finally:
        if parts:
            parts.close()
    require_some_read(len(table), source, skipped, output, parts)
    table = finish_embeddings(model, data, split, table, output, pca_components, pca_fit_max, anomaly_k,
                              tensorboard, tensorboard_columns, tensorboard_max, batch_size)
    if output:
        parts.cleanup()
    return table


def finish_embeddings(model, data, split, table, output, pca_components=None, pca_fit_max=50_000, anomaly_k=None,
                      tensorboard=None, tensorboard_columns=(), tensorboard_max=10_000, batch_size=64):
    """After every galaxy is embedded: PCA, anomaly scores, projector files, and the output table written."""
    feats = feature_columns(table)
    x = x_raw = table[feats].to_numpy(np.float32)
    meta = {"backbone": model.backbone, "embedding_dim": int(x.shape[1])}
    if pca_components:
        rng = np.random.default_rng(0)
        fit_rows = rng.choice(len(x), size=min(len(x), pca_fit_max), replace=False)
        pca = PCA(pca_components).fit(x[fit_rows])
        x = pca.transform(x).astype(np.float32)
        meta["pca_explained_variance_ratio"] = pca.explained_variance_ratio_.tolist()
        table = pd.concat([table[[ID_COL]], pd.DataFrame(x, columns=[f"feat_{i}" for i in range(x.shape[1])])],
                          axis=1)
    if anomaly_k:
        table = table.merge(EmbeddingIndex.from_table(table).anomaly_scores(k=anomaly_k), on=ID_COL)
    if tensorboard:
        _projector(model, data, split, table, x_raw, tensorboard, tensorboard_columns, tensorboard_max, batch_size)
    if output:
        write_table(table, Path(output), meta)
    return table


def _projector(model, data, split, table, features, logdir, columns, limit, batch_size) -> None:
    """Projector files for (a fixed subset of) the table: predictions from the head, thumbnails from the view."""
    import tensorflow as tf

    from zoobot_tf.visualise import thumbnail_size, write_projector

    rows = np.arange(len(table))
    if len(rows) > limit:
        rows = np.sort(np.random.default_rng(0).choice(rows, size=limit, replace=False))
    ids = table[ID_COL].astype(str).to_numpy()[rows]
    outputs = np.concatenate([model.apply_head(tf.constant(features[rows[i:i + 1024]]), training=False).numpy()
                              for i in range(0, len(rows), 1024)])
    metadata = model.task.categories(outputs)
    if "anomaly_score" in table.columns:
        metadata["anomaly_score"] = np.round(table["anomaly_score"].to_numpy()[rows], 4)
    catalog = getattr(data, "catalog", None)
    missing = [c for c in columns if catalog is None or c not in catalog.columns]
    if missing:
        raise ValueError(f"--tensorboard_columns {missing} are not columns of the input catalog")
    if columns:
        extra = catalog.set_index(catalog[ID_COL].astype(str))[list(columns)]
        metadata = pd.concat([metadata, extra.loc[ids].reset_index(drop=True)], axis=1)
    size = thumbnail_size(len(rows))
    keep = set(ids)
    _, ds = data.images(split, exclude=set(table[ID_COL].astype(str)) - keep)
    thumbs = {}
    for images, batch_ids in decoded_batches(ds, batch_size, model.load_size):
        views = tf.image.resize(model.view(images, training=False), (size, size), antialias=True).numpy()
        thumbs.update(zip((i.decode() for i in batch_ids.numpy()), views))
    vectors = table.loc[rows, feature_columns(table)].to_numpy(np.float32)
    write_projector(logdir, ids, vectors, metadata, np.stack([thumbs[i] for i in ids]),
                    description=f"Embeddings of {len(ids)} galaxies by {model.summary_line()}; metadata: "
                                f"{', '.join(metadata.columns)}")


def embed_job(config) -> pd.DataFrame:
    """``zoobot-tf embed`` from a :class:`~zoobot_tf.config.EmbedConfig` (on Apache Beam with ``--runner``)."""
    from zoobot_tf.config import _comma_list

    precision = None if config.precision == "float32" else config.precision
    if config.runner:
        from zoobot_tf.engines.beam import run_inference

        finish = {"pca_components": config.pca, "anomaly_k": config.anomaly_k, "tensorboard": config.tensorboard,
                  "tensorboard_columns": _comma_list(config.tensorboard_columns),
                  "tensorboard_max": config.tensorboard_max}
        return run_inference("embed", config.model, config.input, config.output, config.runner, config.workers,
                             config.beam_options, config.split, config.batch_size, config.chunk,
                             {"precision": precision,
                              "seed": config.seed, "finish": finish})
    return embed(config.model, config.input, config.output, batch_size=config.batch_size, pca_components=config.pca,
                 split=config.split, progress=config.progress, anomaly_k=config.anomaly_k,
                 precision=precision, chunk=config.chunk,
                 tensorboard=config.tensorboard, tensorboard_columns=_comma_list(config.tensorboard_columns),
                 tensorboard_max=config.tensorboard_max)


class EmbeddingIndex:
    """Cosine-similarity search and k-nearest-neighbour anomaly scores over an embedding table.

    Up to ``exact_max`` galaxies (and whenever FAISS is absent) the search is exact (numpy: a matrix product
    per block); above it, an approximate HNSW graph from FAISS (``pip install zoobot-tf[search]``), whose
    recall@10 against the exact search is tested >= 0.95 and which turns the anomaly scores from O(N^2) into
    about O(N log N) (benchmarks/similarity.py measures both at a million galaxies).

    Args:
        method: ``"auto"`` (above), ``"exact"`` or ``"faiss"``.
        ef_search: HNSW's search breadth (higher: better recall, slower queries).
    """

    def __init__(self, ids, features: np.ndarray, method: str = "auto", exact_max: int = 50_000,
                 ef_search: int = 128):
        self.ids = np.asarray(ids).astype(str)
        x = np.asarray(features, dtype=np.float32)
        self.unit = np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))
        self._row = {i: n for n, i in enumerate(self.ids)}
        if method not in ("auto", "exact", "faiss"):
            raise ValueError(f"method must be auto, exact or faiss. Received: {method!r}")
        if method == "auto":
            method = "faiss" if len(self.ids) > exact_max and _faiss() is not None else "exact"
        self.method = method
        self._faiss = None
        if method == "faiss":
            faiss = _faiss()
            if faiss is None:
                raise ImportError("method='faiss' needs faiss-cpu: pip install 'zoobot-tf[search]'")
            index = faiss.IndexHNSWFlat(self.unit.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            index.hnsw.efSearch = ef_search
            index.add(self.unit)
            self._faiss = index

    @classmethod
    def from_table(cls, table: pd.DataFrame | str | Path, **kwargs) -> "EmbeddingIndex":
        if not isinstance(table, pd.DataFrame):
            table = read_embeddings(table)
        return cls(table[ID_COL], table[feature_columns(table)].to_numpy(), **kwargs)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar galaxies to each unit-norm query row: (similarities, row indices), best first."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self.ids))
        if self._faiss is not None:
            self._faiss.hnsw.efSearch = max(self._faiss.hnsw.efSearch, k)
            return self._faiss.search(queries, k)
        sims, rows = [], []
        block = max(1, min(4096, 2 ** 27 // len(self.ids)))  # a block's similarities in <= 512 MB
        for start in range(0, len(queries), block):
            sim = queries[start:start + block] @ self.unit.T
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            part = np.take_along_axis(sim, top, axis=1)
            order = np.argsort(-part, axis=1)
            sims.append(np.take_along_axis(part, order, axis=1))
            rows.append(np.take_along_axis(top, order, axis=1))
        return np.concatenate(sims), np.concatenate(rows)

    def neighbours(self, query, k: int = 10, include_self: bool = False) -> pd.DataFrame:
        """The ``k`` most similar galaxies to ``query`` (an id, or a feature vector)."""
        if isinstance(query, str):
            if query not in self._row:
                raise KeyError(f"id_str {query!r} is not in the index")
            q = self.unit[self._row[query]]
        else:
            q = np.asarray(query, dtype=np.float32)
            q = q / max(np.linalg.norm(q), 1e-12)
        own = self._row[query] if isinstance(query, str) and not include_self else None
        sim, rows = self.search(q[None, :], k + (own is not None))
        keep = rows[0] != own if own is not None else np.ones(rows.shape[1], bool)
        keep &= rows[0] >= 0
        sim, rows = sim[0][keep][:k], rows[0][keep][:k]
        return pd.DataFrame({ID_COL: self.ids[rows], "similarity": sim})

    def anomaly_scores(self, k: int = 10) -> pd.DataFrame:
        """Mean cosine distance to each galaxy's ``k`` nearest neighbours (itself excluded): high = unusual."""
        k = min(k, len(self.ids) - 1)
        if k < 1:
            raise ValueError("Anomaly scores need at least 2 galaxies.")
        sim, rows = self.search(self.unit, k + 1)
        own = rows == np.arange(len(self.ids))[:, None]
        # drop each galaxy itself (or, for exact duplicates found first, the last of the k + 1)
        drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
        keep = np.ones_like(own)
        keep[np.arange(len(self.ids)), drop] = False
        nearest = sim[keep].reshape(len(self.ids), k)
        scores = (1.0 - nearest.mean(axis=1)).astype(np.float32)
        return pd.DataFrame({ID_COL: self.ids, "anomaly_score": scores}).sort_values(
            "anomaly_score", ascending=False, ignore_index=True)


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss
