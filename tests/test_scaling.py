"""Scaling-law fits on exact power laws, and a 2-point sweep end to end."""
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from helpers import vote_catalog

from zoobot_tf import scaling
from zoobot_tf.data import tfrecords
from zoobot_tf.tasks import VoteTask


@pytest.mark.parametrize("a,b,c", [(50.0, 0.5, 10.0), (8.0, 0.3, 2.0), (300.0, 0.9, 30.0)])
def test_fit_recovers_an_exact_power_law(a, b, c):
    x = np.array([100, 200, 400, 800, 1600, 3200, 6400])
    fit = scaling.fit_power_law(x, scaling.power_law(x, a, b, c))
    np.testing.assert_allclose([fit["a"], fit["b"], fit["c"]], [a, b, c], rtol=1e-4)


def test_fit_uncertainty_covers_the_truth_with_noise():
    rng = np.random.default_rng(0)
    x = np.repeat([100, 200, 400, 800, 1600, 3200], 4)
    y = scaling.power_law(x, 40.0, 0.5, 20.0) + rng.normal(0, 0.05, len(x))
    fit = scaling.fit_power_law(x, y, sigma=np.full(len(x), 0.05))
    assert abs(fit["b"] - 0.5) < 3 * fit["b_err"] and fit["b_err"] < 0.2


def test_analyse_tables_and_plots(tmp_path):
    rows = []
    for arch, params, c in [("small", 1e5, 22.0), ("big", 1e6, 20.0)]:
        for n in [100, 200, 400, 800, 1600]:
            for seed in (0, 1):
                rows.append({"architecture": arch, "fraction": n / 1600, "seed": seed, "params": params,
                             "n_train": n, "test_loss": scaling.power_law(n, 30.0, 0.4, c) + 0.01 * seed,
                             "loss_q1": scaling.power_law(n, 10.0, 0.6, 1.0)})
    fits = scaling.analyse(pd.DataFrame(rows), tmp_path)
    assert abs(fits["data"]["small"]["b"] - 0.4) < 0.02 and abs(fits["per_question"]["big"]["q1"] - 0.6) < 0.02
    assert (tmp_path / "scaling.png").exists() and (tmp_path / "scaling.pdf").exists()
    assert "small" in scaling.exponent_table(fits)


def test_two_point_sweep_appends_resumable_rows(tmp_path):
    df = vote_catalog(tmp_path / "img", n=60)
    tfrecords.write_shards(df, tmp_path / "shards", task=VoteTask("gz_decals_dr5"), progress=False)
    grid = {"shards": str(tmp_path / "shards"), "output_dir": str(tmp_path / "sweep"), "fractions": [0.5, 1.0],
            "seeds": [0], "architectures": {"micro": {"backbone": "resnet_micro",
                                                       "backbone_kwargs": {"widths": [8, 8, 16, 16], "stem_width": 8}}},
            "train": {"image_size": 32, "epochs": 1, "batch_size": 16}}
    assert len(scaling.grid_points(grid)) == 2
    rows = scaling.run(grid, index=1)
    assert len(rows) == 1 and rows[0]["fraction"] == 1.0
    rows = scaling.run(grid)  # the remaining point only
    assert len(rows) == 1 and rows[0]["fraction"] == 0.5
    table = scaling.read_results(tmp_path / "sweep")
    assert len(table) == 2 and set(table["fraction"]) == {0.5, 1.0}
    assert table.set_index("fraction").loc[0.5, "n_train"] < table.set_index("fraction").loc[1.0, "n_train"]
    assert np.isfinite(table["test_loss"]).all() and "loss_smooth-or-featured" in table.columns
    assert scaling.run(grid) == []  # nothing left to do


def test_combined_exponent_is_the_inverse_variance_mean_and_skips_bounded_fits():
    fits = {"x": {"b": 0.4, "b_err": 0.1, "at_bound": []}, "y": {"b": 0.7, "b_err": 0.2, "at_bound": []},
            "z": {"b": 3.0, "b_err": 0.01, "at_bound": ["b"]}, "bad": {"error": "no fit"}}
    combined = scaling.combined_exponent(fits)
    w = np.array([100.0, 25.0])
    assert combined["n_fits"] == 2
    np.testing.assert_allclose(combined["b"], (w * [0.4, 0.7]).sum() / w.sum())
    np.testing.assert_allclose(combined["b_err"], 1 / np.sqrt(w.sum()))


def test_fit_flags_an_unconstrained_floor():
    # a pure power law with no floor: c ends on its lower bound (0) and is flagged
    x = np.array([100, 200, 400, 800, 1600])
    fit = scaling.fit_power_law(x, scaling.power_law(x, 30.0, 0.5, 0.0))
    assert "c" in fit["at_bound"] and abs(fit["b"] - 0.5) < 1e-3


def test_training_subsets_are_nested_deterministic_and_counted(tmp_path):
    cat = vote_catalog(tmp_path / "imgs", n=60, size=32)
    tfrecords.write_shards(cat, tmp_path / "shards", task=VoteTask("gz_decals_dr5"), splits={"train": 1.0},
                           progress=False)
    ids, _ = tfrecords.read_labels(tmp_path / "shards", "train")

    def kept(fraction, seed):
        mask = tfrecords.subset_filter(fraction, seed)(tf.constant(ids)).numpy()
        return {i for i, k in zip(ids, mask) if k}

    quarter, half = kept(0.25, 0), kept(0.5, 0)
    assert quarter < half < set(ids)  # nested, strictly growing
    assert kept(0.5, 0) == half and kept(0.5, 1) != half  # deterministic per seed, different across seeds
    assert tfrecords.subset_size(tmp_path / "shards", "train", 0.5, 0) == len(half)
    ds = tfrecords.shard_dataset(tmp_path / "shards", "train", 8, 32, training=False, fraction=0.5, fraction_seed=0)
    weights = np.concatenate([w.numpy() for _, _, w in ds])
    assert (weights > 0).sum() == len(half)  # exactly the subset's galaxies (padding rows weigh 0)


def test_bad_train_fractions_are_refused_before_any_work():
    from zoobot_tf.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match=r"--train_fraction must be > 0.0 \(accepted: \(0.0, 1.0\]\)"):
        TrainConfig(train_fraction=0.0)
    with pytest.raises(ConfigError, match="needs TFRecord shards"):
        TrainConfig(train_fraction=0.5, tfds="synthetic_gz")
