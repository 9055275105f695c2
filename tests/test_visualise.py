"""What TensorBoard is given: legible galaxy cards, the worst-predicted selection, sprites in the projector's
layout, projector files that match the embeddings, and the embed/finetune paths that write them."""
import io

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from zoobot_tf.tasks import ClassificationTask, VoteTask
from zoobot_tf.visualise import CARD_WIDTH, GalaxyGrids, render_galaxy, sprite, thumbnail_size, write_projector


def _tags(logdir):
    out = {}
    for f in tf.io.gfile.glob(f"{logdir}/**/events*") + tf.io.gfile.glob(f"{logdir}/events*"):
        for e in tf.compat.v1.train.summary_iterator(f):
            for v in e.summary.value:
                out.setdefault(v.tag, []).append(v)
    return out


def test_a_galaxy_card_is_as_wide_as_a_dashboard_card_and_grows_with_its_chart():
    image = np.random.default_rng(0).uniform(0, 1, (64, 64, 1))
    short = Image.open(io.BytesIO(render_galaxy(image, [("q", [("a", 0.2, 0.5), ("b", 0.8, 0.5)])], "g")))
    rows = [(f"question {i}", [("yes", 0.3, np.nan), ("no", 0.7, np.nan)]) for i in range(4)]
    tall = Image.open(io.BytesIO(render_galaxy(image, rows, "g")))
    assert short.width == tall.width == CARD_WIDTH and tall.height > short.height + 100


def test_vote_charts_show_only_the_questions_volunteers_were_asked():
    task = VoteTask("gz2")
    counts = np.zeros(task.n_outputs)
    q0 = task.schema.questions[0]
    counts[q0.start:q0.end] = [30, 10, 0][:q0.end - q0.start]  # only the first question asked
    chart = task.chart(np.full(task.n_outputs, 5.0), counts)
    assert [title for title, _ in chart] == [q0.name]
    observed = [r[2] for r in chart[0][1]]
    np.testing.assert_allclose(observed, (counts[q0.start:q0.end] / 40))


def test_galaxy_grids_log_a_fixed_sample_and_the_worst_predicted(tmp_path):
    from zoobot_tf.models.zoobot import Zoobot

    task = ClassificationTask(["a", "b"])
    images = np.random.default_rng(1).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    labels = np.array([0, 1] * 4)
    model = Zoobot(task=task, backbone="resnet_micro", image_size=32, channels=3, augment=False)
    grids = GalaxyGrids(tmp_path, images, labels, task, n=3)
    chosen = []
    import zoobot_tf.visualise as visualise

    real = visualise.render_galaxy
    visualise.render_galaxy = lambda image, chart, title: chosen.append(title) or real(image, chart, title)
    try:
        made = grids.grids(model)
    finally:
        visualise.render_galaxy = real
    assert [len(made[k]) for k in ("validation", "worst_predicted")] == [3, 3]
    # the fixed sample is the first galaxies; the worst are the highest cross-entropies, computed here directly
    probs = model.predict(images, verbose=0)
    losses = -np.log(probs[np.arange(8), labels])
    assert [t.split(",")[0] for t in chosen[:3]] == [f"validation galaxy {i}" for i in range(3)]
    assert [t.split(",")[0] for t in chosen[3:]] == [f"validation galaxy {i}" for i in np.argsort(-losses)[:3]]
    grids.set_model(model)
    grids.on_epoch_end(0)
    grids.on_epoch_end(1)
    tags = _tags(tmp_path)
    assert len(tags["galaxies/validation"]) == 2 and len(tags["galaxies/worst_predicted"]) == 2


def test_sprite_tiles_are_in_row_major_order():
    thumbs = np.zeros((5, 4, 4, 1))
    for i in range(5):
        thumbs[i] = i / 4
    grid = np.asarray(Image.open(io.BytesIO(sprite(thumbs))))
    assert grid.shape == (12, 12, 3)  # ceil(sqrt(5)) = 3 per row
    for i in range(5):
        r, c = divmod(i, 3)
        assert (grid[r * 4:(r + 1) * 4, c * 4:(c + 1) * 4] == round(255 * i / 4)).all()
    assert thumbnail_size(10_000) * 100 <= 8192 and thumbnail_size(10) == 96


def test_projector_files_match_the_embeddings(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(7, 5)).astype("float32")
    meta = pd.DataFrame({"kind": ["spiral\tarm"] + ["smooth"] * 6})
    write_projector(tmp_path, [f"g{i}" for i in range(7)], vectors, meta, rng.uniform(0, 1, (7, 8, 8, 3)))
    np.testing.assert_allclose(np.loadtxt(tmp_path / "galaxies.tsv", delimiter="\t"), vectors, rtol=1e-5)
    table = pd.read_csv(tmp_path / "galaxies_metadata.tsv", sep="\t")
    assert list(table.columns) == ["id_str", "kind"] and table["kind"][0] == "spiral arm"
    config = (tmp_path / "projector_config.pbtxt").read_text()
    assert 'sprite' in config and "single_image_dim: 8" in config and "galaxies_metadata.tsv" in config
    with pytest.raises(ValueError, match="must match"):
        write_projector(tmp_path, ["a"], vectors, meta)


def test_embed_writes_the_projector_with_predictions_and_catalog_columns(tmp_path):
    import zoobot_tf as zt
    from zoobot_tf.data.synthetic import make_synthetic_catalog

    catalog = make_synthetic_catalog(12, tmp_path / "field", progress=False)
    table = zt.embed("zoobot_synthetic", catalog, tensorboard=tmp_path / "board", tensorboard_columns=["true_kind"],
                     anomaly_k=3)
    meta = pd.read_csv(tmp_path / "board" / "galaxies_metadata.tsv", sep="\t")
    assert list(meta["id_str"]) == list(table["id_str"]) and "true_kind" in meta and "anomaly_score" in meta
    assert "smooth-or-featured" in meta  # the model's most likely answer
    vectors = np.loadtxt(tmp_path / "board" / "galaxies.tsv", delimiter="\t")
    assert vectors.shape == (12, 128)
    with pytest.raises(ValueError, match="not columns"):
        zt.embed("zoobot_synthetic", catalog, tensorboard=tmp_path / "b2", tensorboard_columns=["nope"])
