"""Similarity search and anomaly scores at survey scale (issue 17): the exact path against a direct
computation, FAISS's HNSW path against the exact one (recall@10 >= 0.95), PCA against scikit-learn's own."""
import numpy as np
import pytest

from zoobot_tf.representations import PCA, EmbeddingIndex


def clustered(n, d=64, centres=200, seed=0):
    """Embeddings with structure, as an encoder's are: galaxies around a few hundred morphological types."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d))
    return (c[rng.integers(0, centres, n)] + rng.normal(scale=0.6, size=(n, d))).astype(np.float32)


def test_exact_search_and_anomaly_scores_match_a_direct_computation():
    x = clustered(500, d=16)
    index = EmbeddingIndex([f"g{i}" for i in range(500)], x, method="exact")
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    expected = np.argsort(-sim[7])[:10]
    assert index.neighbours("g7", k=10)["id_str"].tolist() == [f"g{i}" for i in expected]
    direct = 1 - np.sort(sim, axis=1)[:, ::-1][:, :5].mean(axis=1)
    scores = index.anomaly_scores(k=5).set_index("id_str").loc[[f"g{i}" for i in range(500)], "anomaly_score"]
    np.testing.assert_allclose(scores.to_numpy(), direct, atol=1e-5)


def test_faiss_hnsw_recall_at_10_against_the_exact_search():
    pytest.importorskip("faiss", reason="the [search] extra (faiss-cpu) is not installed")
    x = clustered(20_000)
    ids = [f"g{i}" for i in range(len(x))]
    exact = EmbeddingIndex(ids, x, method="exact")
    approx = EmbeddingIndex(ids, x, exact_max=10_000)  # auto: above exact_max, FAISS
    assert approx.method == "faiss" and exact.method == "exact"
    queries = exact.unit[np.random.default_rng(1).choice(len(x), 500, replace=False)]
    _, truth = exact.search(queries, 10)
    _, found = approx.search(queries, 10)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found)])
    assert recall >= 0.95, recall
    a = exact.anomaly_scores(k=10).set_index("id_str")["anomaly_score"]
    b = approx.anomaly_scores(k=10).set_index("id_str").loc[a.index, "anomaly_score"]
    assert np.corrcoef(a, b)[0, 1] > 0.99
    top_exact, top_approx = set(a.index[:100]), set(b.sort_values(ascending=False).index[:100])
    assert len(top_exact & top_approx) >= 90  # the same most unusual galaxies


def test_pca_is_scikit_learns_and_refuses_too_many_components():
    from sklearn.decomposition import PCA as SkPCA

    x = np.random.default_rng(1).normal(size=(200, 6)) @ np.diag([5, 3, 1, 0.5, 0.1, 0.01])
    ours, theirs = PCA(2).fit(x), SkPCA(2).fit(x)
    np.testing.assert_allclose(np.abs(ours.transform(x)), np.abs(theirs.transform(x)), atol=1e-8)
    with pytest.raises(ValueError, match="exceeds min"):
        PCA(7).fit(x)
