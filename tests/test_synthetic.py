import numpy as np

from zoobot_tf.data import synthetic
from zoobot_tf.schemas import get_schema


def test_deterministic_and_independent_of_catalog_size(tmp_path):
    a = synthetic.make_synthetic_catalog(6, tmp_path / "a", stored_size=32, seed=5, progress=False)
    b = synthetic.make_synthetic_catalog(3, tmp_path / "b", stored_size=32, seed=5, progress=False)
    schema = get_schema("gz_decals_dr5")
    np.testing.assert_array_equal(a[schema.label_cols].to_numpy()[:3], b[schema.label_cols].to_numpy())
    assert (tmp_path / "a" / "images" / "synth-5-000000.jpg").read_bytes() == \
        (tmp_path / "b" / "images" / "synth-5-000000.jpg").read_bytes()


def test_votes_walk_the_tree():
    schema = get_schema("gz_decals_dr5")
    for i in range(200):
        rng = np.random.default_rng([1, i])
        g = synthetic.sample_truth(rng)
        counts = synthetic.simulate_votes(g, schema, rng, n_volunteers=40)
        for q in schema.questions:
            n_q = counts[q.start:q.end].sum()
            expected = 40 if q.asked_after is None else counts[schema.answer(q.asked_after).index]
            assert n_q == expected


def test_votes_follow_the_truth():
    """Volunteers see what was rendered: smooth galaxies get mostly 'smooth' votes, edge-on discs 'yes'."""
    schema = get_schema("gz_decals_dr5")
    smooth_frac, edge_frac = [], []
    for i in range(400):
        rng = np.random.default_rng([2, i])
        g = synthetic.sample_truth(rng)
        c = synthetic.simulate_votes(g, schema, rng)
        if g.kind == "smooth":
            smooth_frac.append(c[0] / c[:3].sum())
        if g.kind == "disk" and g.edge_on and c[3:5].sum() > 0:
            edge_frac.append(c[3] / c[3:5].sum())
    assert np.mean(smooth_frac) > 0.7 and np.mean(edge_frac) > 0.6


def test_render_is_an_image():
    rng = np.random.default_rng(0)
    img = synthetic.render(synthetic.sample_truth(rng), 48, rng)
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8 and img.std() > 5


def test_true_answer_probabilities_are_what_the_votes_were_drawn_from(tmp_path):
    from zoobot_tf.data import synthetic
    from zoobot_tf.schemas import get_schema

    schema = get_schema("gz_decals_dr5")
    n = 40
    cat = synthetic.make_synthetic_catalog(n, tmp_path, stored_size=32, seed=3, mean_volunteers=20000, progress=False)
    truth = synthetic.true_answer_probabilities(n, seed=3, stored_size=32, mean_volunteers=20000)
    q = schema.question("smooth-or-featured")  # asked of every volunteer: multinomial(total, truth)
    counts = cat[schema.label_cols[q.start:q.end]].to_numpy(dtype=float)
    total = counts.sum(1, keepdims=True)
    p = truth[:, q.start:q.end]
    z = (counts / total - p) / np.sqrt(p * (1 - p) / total + 1e-12)
    assert np.abs(z).max() < 5 and np.allclose(truth.reshape(n, -1).sum(1), len(schema.questions))
