"""Predictions with MC dropout, the friendly table against direct computations, embeddings and search."""
import h5py
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from helpers import write_images
from scipy import stats as sps

from zoobot_tf import stats
from zoobot_tf.models import Zoobot
from zoobot_tf.predictions import predict
from zoobot_tf.representations import PCA, EmbeddingIndex, embed, read_embeddings
from zoobot_tf.schemas import get_schema
from zoobot_tf.tasks import ClassificationTask


@pytest.fixture(scope="module")
def model():
    m = Zoobot(backbone="resnet_micro", image_size=32, dropout_rate=0.5)
    m.init_head_prior(np.linspace(2, 30, 34), kernel_scale=1.0)
    return m


@pytest.fixture
def folder(tmp_path):
    write_images(tmp_path / "imgs", 10, size=40)
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return tmp_path / "imgs"


def test_predict_folder_writes_table_hdf5_and_skipped_list(model, folder, tmp_path):
    out = tmp_path / "preds.csv"
    skipped = predict(model, folder, out, n_samples=4, hdf5=tmp_path / "preds.h5", batch_size=4, progress=False)
    assert skipped["id_str"].tolist() == ["broken"]
    assert (tmp_path / "preds.csv.skipped.csv").exists()
    table = pd.read_csv(out, dtype={"id_str": str})
    assert len(table) == 10 and "broken" not in set(table.id_str)
    with h5py.File(tmp_path / "preds.h5") as f:
        conc = f["concentrations"][:]
        ids = [i.decode() for i in f["id_str"][:]]
    assert conc.shape == (10, 34, 4)
    assert not np.allclose(conc[..., 0], conc[..., 1])  # MC dropout samples differ
    schema = get_schema("gz_decals_dr5")
    table = table.set_index("id_str").loc[ids]
    # expected fraction = mean over samples of alpha / A (direct computation)
    alpha = conc[:, 0, :]
    total = conc[:, 0:3, :].sum(1)
    direct = (alpha / total).mean(-1)
    np.testing.assert_allclose(table["smooth-or-featured_smooth_fraction"], direct, rtol=1e-5)
    # P(asked) of bar = fraction(featured) x fraction(not edge-on), and bar is hidden where < 0.5
    frac = stats.expected_vote_fractions(conc, schema)
    p_bar = frac[:, 1] * frac[:, 4]
    np.testing.assert_allclose(table["bar_prob_asked"], p_bar, rtol=1e-5)
    hidden = p_bar < 0.5
    assert table["bar_strong_fraction"].isna().to_numpy().tolist() == hidden.tolist()
    # 90% interval of a sample-averaged Beta mixture: the mixture CDF at the bounds is 0.05 / 0.95
    lo = table["smooth-or-featured_smooth_fraction_lower"].to_numpy()
    a, b = conc[:, 0, :], conc[:, 0:3, :].sum(1) - conc[:, 0, :]
    cdf = np.mean([sps.beta.cdf(lo, a[:, k], b[:, k]) for k in range(4)], axis=0)
    np.testing.assert_allclose(cdf, 0.05, atol=1e-5)


def test_predict_parquet_tta_and_deterministic_single_sample(model, folder, tmp_path):
    predict(model, folder, tmp_path / "a.parquet", n_samples=1, progress=False)
    predict(model, folder, tmp_path / "b.parquet", n_samples=1, progress=False)
    a, b = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    pd.testing.assert_frame_equal(a, b)
    predict(model, folder, tmp_path / "c.parquet", n_samples=2, tta=True, progress=False)
    c = pd.read_parquet(tmp_path / "c.parquet")
    assert not np.allclose(c["merging_none_fraction"], a["merging_none_fraction"])


def test_predict_in_bfloat16_is_close_to_float32_and_leaves_the_model_alone(model, folder, tmp_path):
    predict(model, folder, tmp_path / "f32.csv", n_samples=1, progress=False)
    predict(model, folder, tmp_path / "bf16.csv", n_samples=1, progress=False, precision="mixed_bfloat16")
    a = pd.read_csv(tmp_path / "f32.csv", dtype={"id_str": str}).set_index("id_str")
    b = pd.read_csv(tmp_path / "bf16.csv", dtype={"id_str": str}).set_index("id_str").loc[a.index]
    cols = [c for c in a.columns if c.endswith("_fraction")]
    diff = np.abs(a[cols].to_numpy() - b[cols].to_numpy())
    assert np.nanmax(diff) < 0.01 and np.nanmax(diff) > 0  # vote fractions within 1%, and bfloat16 was used
    assert model.precision is None
    with pytest.raises(ValueError, match="Unknown precision"):
        predict(model, folder, tmp_path / "x.csv", progress=False, precision="float8")


def test_predict_classifier_and_catalog_input(tmp_path):
    paths = write_images(tmp_path / "imgs", 6, size=32)
    cat = pd.DataFrame({"id_str": [f"g{i}" for i in range(6)], "file_loc": paths})
    cat.loc[5, "file_loc"] = str(tmp_path / "missing.png")
    clf = Zoobot(task="classification", class_names=["ring", "none"], backbone="resnet_micro", image_size=32)
    skipped = predict(clf, cat, tmp_path / "p.csv", n_samples=3, progress=False)
    assert skipped["id_str"].tolist() == ["g5"]
    t = pd.read_csv(tmp_path / "p.csv")
    np.testing.assert_allclose(t["prob_ring"] + t["prob_none"], 1.0, rtol=1e-5)
    assert set(t["predicted_class"]) <= {"ring", "none"}


def test_embeddings_pca_similarity_and_anomalies(model, tmp_path):
    folder = tmp_path / "imgs"
    paths = write_images(folder, 12, size=40)
    (folder / "twin.jpg").write_bytes((folder / "g0003.jpg").read_bytes())  # an exact duplicate
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / "weird.jpg")  # pure noise
    table = embed(model, folder, tmp_path / "emb.parquet", progress=False)
    assert table.shape == (14, 1 + model.embedding_dim)
    again = read_embeddings(tmp_path / "emb.parquet")
    pd.testing.assert_frame_equal(table, again)
    index = EmbeddingIndex.from_table(table)
    nn = index.neighbours("g0003", k=3)
    assert nn["id_str"].iloc[0] == "twin" and nn["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    assert index.anomaly_scores(k=3)["id_str"].iloc[0] == "weird"
    small = embed(model, folder, tmp_path / "emb.h5", pca_components=4, progress=False)
    assert small.shape == (14, 5)
    assert read_embeddings(tmp_path / "emb.h5").shape == (14, 5)


def test_cli_similar_lists_neighbours_and_says_when_there_are_none(tmp_path, capsys):
    from zoobot_tf.cli import main

    table = pd.DataFrame({"id_str": ["a", "b", "c"], "feat_0": [1.0, 0.9, -1.0], "feat_1": [0.0, 0.1, 0.0]})
    table.to_csv(tmp_path / "e.csv", index=False)
    assert main(["similar", "--embeddings", str(tmp_path / "e.csv"), "--id", "a", "--k", "5"]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert lines[0].split() == ["id_str", "similarity"] and [ln.split()[0] for ln in lines[1:3]] == ["b", "c"]
    table[:1].to_csv(tmp_path / "one.csv", index=False)
    assert main(["similar", "--embeddings", str(tmp_path / "one.csv"), "--id", "a"]) == 0
    assert capsys.readouterr().out.strip() == f"{tmp_path / 'one.csv'} holds no galaxy but a: no neighbours to list."


def test_pca_matches_direct_eigendecomposition():
    x = np.random.default_rng(1).normal(size=(200, 6)) @ np.diag([5, 3, 1, 0.5, 0.1, 0.01])
    pca = PCA(2).fit(x)
    evals, evecs = np.linalg.eigh(np.cov(x.T))
    top = evecs[:, ::-1][:, :2]
    np.testing.assert_allclose(np.abs(pca.components_ @ top), np.eye(2), atol=1e-6)
    np.testing.assert_allclose(pca.explained_variance_ratio_, evals[::-1][:2] / evals.sum(), rtol=1e-6)


def test_predictions_from_shards_equal_predictions_from_the_same_images(model, folder, tmp_path):
    from zoobot_tf.data import tfrecords

    files = sorted(p for p in folder.iterdir() if p.stem != "broken")
    cat = pd.DataFrame({"id_str": [p.stem for p in files], "file_loc": [str(p) for p in files], "c": 0})
    tfrecords.write_shards(cat, tmp_path / "shards", task=ClassificationTask(["0", "1"]), label_cols=["c"],
                           splits={"train": 0.5, "test": 0.5}, progress=False)
    predict(model, folder, tmp_path / "folder.csv", n_samples=1, progress=False)
    predict(model, tmp_path / "shards", tmp_path / "shards.csv", n_samples=1, progress=False)
    a = pd.read_csv(tmp_path / "folder.csv", dtype={"id_str": str}).set_index("id_str").sort_index()
    b = pd.read_csv(tmp_path / "shards.csv", dtype={"id_str": str}).set_index("id_str").sort_index()
    assert list(b.index) == [p.stem for p in files]
    pd.testing.assert_frame_equal(a, b[a.columns], rtol=1e-4)


def test_cli_predict_with_precision_and_a_clear_error_for_an_unknown_one(folder, tmp_path):
    from zoobot_tf.cli import main

    out = tmp_path / "cli.csv"
    assert main(["predict", "--input", str(folder), "--output", str(out), "--n_samples", "1",
                 "--precision", "mixed_bfloat16"]) == 0
    table = pd.read_csv(out, dtype={"id_str": str})
    assert len(table) == 10 and table["smooth-or-featured_smooth_fraction"].between(0, 1).all()
    assert main(["predict", "--input", str(folder), "--output", str(tmp_path / "x.csv"), "--precision", "fp8"]) == 2


def test_a_galaxys_samples_depend_only_on_its_id_the_model_and_the_seed(tmp_path):
    """MC-dropout masks and test-time views are drawn per galaxy id and seed: the same samples in another
    batch size, from a new copy of the model (as another process would load it), and after a second call;
    another seed or another id draws others. The function is traced once per model and options."""
    import gc
    import weakref

    from zoobot_tf.models.resolve import load_model
    from zoobot_tf.predictions import sample_fn

    write_images(tmp_path / "imgs", 7, size=40)
    (tmp_path / "imgs" / "twin.jpg").write_bytes((tmp_path / "imgs" / "g0000.jpg").read_bytes())
    m = Zoobot(backbone="resnet_micro", image_size=32, dropout_rate=0.5)
    m.save(tmp_path / "m.keras")

    def samples(model, name, **kw):
        predict(model, tmp_path / "imgs", tmp_path / f"{name}.csv", n_samples=4, tta=True, progress=False,
                hdf5=tmp_path / f"{name}.h5", **kw)
        with h5py.File(tmp_path / f"{name}.h5") as f:
            return dict(zip([i.decode() for i in f["id_str"][:]], f["concentrations"][:]))

    a = samples(m, "a", batch_size=4)
    traces = sample_fn(m, 4, True).experimental_get_tracing_count()
    b = samples(m, "b", batch_size=4)
    assert sample_fn(m, 4, True).experimental_get_tracing_count() == traces  # not traced again
    c = samples(load_model(tmp_path / "m.keras"), "c", batch_size=3)
    d = samples(m, "d", batch_size=4, seed=1)
    for other in (b, c):
        for i in a:
            np.testing.assert_allclose(other[i], a[i], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a["g0000"][..., 0], a["g0000"][..., 1])  # the samples differ from each other
    assert not np.allclose(d["g0000"], a["g0000"])  # another seed
    assert not np.allclose(a["twin"], a["g0000"])  # the same image under another id
    alive = weakref.ref(m)
    del m
    gc.collect()
    assert alive() is None  # the cache does not keep its models alive


def test_seeded_mc_dropout_drops_the_layers_rate_and_keeps_the_mean():
    """The head's MC dropout with given draws is Keras' inverted dropout: units whose draw is below the rate
    are zeroed, the rest scaled by 1 / (1 - rate), so the mean over draws is the deterministic output."""
    from zoobot_tf.predictions import galaxy_keys, galaxy_uniforms

    m = Zoobot(task="regression", n_targets=1, backbone="resnet_micro", image_size=32, dropout_rate=0.4)
    dense = m.get_layer("head_dense")
    kernel, bias = dense.get_weights()
    dense.set_weights([np.ones_like(kernel), np.zeros_like(bias)])  # the output is the sum of the embedding
    emb = np.ones((1, m.embedding_dim), np.float32)
    draws = galaxy_uniforms(galaxy_keys(["a"]), 0, (400, m.embedding_dim))[0].numpy()
    assert 0.45 < draws.mean() < 0.55 and draws.min() >= 0 and draws.max() < 1
    outs = np.array([float(np.ravel(m.apply_head(emb, noise=draws[k:k + 1]))[0]) for k in range(400)])
    kept = (draws >= 0.4).sum(axis=1)
    np.testing.assert_allclose(outs, kept / 0.6, rtol=1e-5)  # the units kept, each scaled by 1 / (1 - 0.4)
    assert abs(outs.mean() / m.embedding_dim - 1.0) < 0.02  # unbiased: the deterministic output on average


def test_embed_traces_its_model_once_and_matches_the_embedding_model(model, folder, tmp_path):
    """Two ``embed`` calls with one model trace it once (a new function per call traced it every time),
    and the features are the embedding model's."""
    from zoobot_tf.data.images import decode_image_bytes
    from zoobot_tf.models.traced import embedding_fn

    first = embed(model, folder, tmp_path / "a.parquet", progress=False)
    traces = embedding_fn(model).experimental_get_tracing_count()
    assert traces >= 1  # embed ran through the model's one embedding function
    second = embed(model, folder, tmp_path / "b.parquet", progress=False)
    assert embedding_fn(model).experimental_get_tracing_count() == traces
    pd.testing.assert_frame_equal(first, second)
    image = decode_image_bytes(tf.constant((folder / "g0003.jpg").read_bytes()), model.load_size)[None]
    want = model.embedding_model()(image, training=False).numpy()[0]
    got = first.set_index("id_str").loc["g0003", [f"feat_{i}" for i in range(model.embedding_dim)]]
    np.testing.assert_allclose(got.to_numpy(np.float32), want, rtol=1e-4, atol=1e-5)
