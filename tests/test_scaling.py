"""Scaling-law fits on exact power laws, and a 2-point sweep end to end."""
import json
import math
import re
from pathlib import Path

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
            "train": {"image_size": 32, "epochs": 2, "batch_size": 16, "steps_per_epoch": 2, "lr_schedule": "cosine",
                      "warmup_steps": 1, "galaxy_cards": False}}
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
    # how each run ended, in steps, and its validation curve (the evidence that small points converged)
    assert set(table["steps"]) == {4} and table["best_step"].isin([2, 4]).all()
    assert not table["stopped_early"].any() and (table["test_loss_sem"] > 0).all()
    curves = pd.read_csv(tmp_path / "sweep" / scaling.CURVES)
    assert len(curves) == 4 and set(curves["step"]) == {2, 4}
    best = curves.loc[curves.groupby("fraction")["val_loss"].idxmin()].set_index("fraction")["val_loss"]
    np.testing.assert_allclose(best.sort_index(), table.set_index("fraction")["val_loss_best"].sort_index(), rtol=1e-6)


def test_combined_exponent_is_the_inverse_variance_mean_and_skips_bounded_fits():
    fits = {"x": {"b": 0.4, "b_err": 0.1, "at_bound": []}, "y": {"b": 0.7, "b_err": 0.2, "at_bound": []},
            "z": {"b": 3.0, "b_err": 0.01, "at_bound": ["b"]}, "bad": {"error": "no fit"}}
    combined = scaling.combined_exponent(fits)
    w = np.array([100.0, 25.0])
    assert combined["n_fits"] == 2
    np.testing.assert_allclose(combined["b"], (w * [0.4, 0.7]).sum() / w.sum())
    np.testing.assert_allclose(combined["b_err"], 1 / np.sqrt(w.sum()))
    # a fit with an intrinsic scatter enters with its b and uncertainty under that scatter
    fits["x"]["scatter"] = {"s": 0.05, "b": 0.5, "b_err": 0.2}
    combined = scaling.combined_exponent(fits)
    np.testing.assert_allclose([combined["b"], combined["b_err"]], [0.6, 1 / np.sqrt(50.0)])


def test_intrinsic_scatter_recovers_the_scatter_the_noise_does_not_explain():
    """Points drawn with a known extra scatter beyond their stated errors: the scatter that brings chi2/dof
    to 1 matches it (over many curves: the mean of s^2 against s_true^2), the fit with it has chi2/dof = 1,
    and points the stated errors already explain get 0."""
    rng = np.random.default_rng(0)
    x = np.geomspace(250, 25000, 6)
    truth, sigma, s_true = scaling.power_law(x, 4e4, 1.0, 36.0), np.full(6, 0.03), 0.08
    found = []
    for _ in range(40):
        y = truth + rng.normal(0, np.hypot(sigma, s_true))
        r = scaling.intrinsic_scatter(x, y, sigma)
        if r["s"] > 0:
            np.testing.assert_allclose(r["fit"]["chi2"] / r["fit"]["dof"], 1.0, rtol=1e-3)
        found.append(r["s"])
    # s^2 + sigma^2 is a variance estimate with ~3 degrees of freedom: unbiased on average, noisy per curve
    np.testing.assert_allclose(np.mean(np.square(found) + sigma[0] ** 2), s_true ** 2 + sigma[0] ** 2, rtol=0.3)
    quiet = scaling.intrinsic_scatter(x, truth + rng.normal(0, 0.2 * sigma), sigma)
    assert quiet["s"] == 0.0 and quiet["fit"]["chi2"] / quiet["fit"]["dof"] < 1
    assert scaling.intrinsic_scatter(x[:3], truth[:3], sigma[:3]) is None  # no degrees of freedom


def test_fit_flags_an_unconstrained_floor():
    # a pure power law with no floor: c ends on its lower bound (0) and is flagged
    x = np.array([100, 200, 400, 800, 1600])
    fit = scaling.fit_power_law(x, scaling.power_law(x, 30.0, 0.5, 0.0))
    assert "c" in fit["at_bound"] and abs(fit["b"] - 0.5) < 1e-3


def test_a_floor_reached_inside_the_data_is_not_pinned_to_its_lowest_noisy_point():
    # the curve flattens at c = 10 within the data; the last two measured points fall below it by their
    # noise (-1 sigma). Bounded by min(y), c would sit on 9.9 flagged; within 2 sigma it is fitted freely.
    x = np.array([250, 640, 1600, 4000, 10000, 25000])
    sigma = np.full(6, 0.1)
    y = scaling.power_law(x, 4e4, 1.5, 10.0) + np.array([0.0, 0.05, 0.0, 0.05, -0.1, -0.1])
    fit = scaling.fit_power_law(x, y, sigma)
    assert fit["at_bound"] == [] and abs(fit["c"] - 10.0) < 2 * fit["c_err"] and fit["c"] > y.min()
    assert fit["chi2"] / fit["dof"] < 1.5


def test_real_data_view_fits_the_law_only_where_points_are_left_to_test_it():
    """4 label counts: fitted (one degree of freedom); 3: not fitted, and the table says why."""
    rng = np.random.default_rng(0)
    rows = [{"dataset": d, "encoder": "e", "labels": n, "seed": s, "balanced_accuracy": 0.5,
             "loss": 2.0 * n ** -0.5 + 0.3 + rng.normal(0, 0.001)}
            for d, sizes in (("four", (50, 100, 300, 1000)), ("three", (50, 100, 300))) for n in sizes for s in range(3)]
    view = scaling.analyse_labels(pd.DataFrame(rows))
    assert view["four"]["e"]["fit"]["dof"] == 1 and abs(view["four"]["e"]["fit"]["b"] - 0.5) < 0.05
    assert "b" not in view["three"]["e"]["fit"]
    assert "| three | e | 50: 0.500 (0.000), 100: 0.500 (0.000), 300: 0.500 (0.000) | no fit: 3 label sizes for " \
           "3 parameters |  |" in scaling.labels_table(view)


def test_a_sweep_on_a_new_machine_goes_on_from_the_committed_points(tmp_path):
    """benchmarks/scaling_mini/run.py: points committed beside the grid join this machine's results (rows it
    already has are not doubled), so they are not run again and the copies written back keep them."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("scaling_mini_run", STUDY / "run.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    kept, out = tmp_path / "kept", tmp_path / "scratch"
    kept.mkdir()
    row = {"architecture": "r1", "fraction": 0.5, "seed": 0, "test_loss": 1.0}
    pd.DataFrame([row, {**row, "seed": 1, "test_loss": 2.0}]).to_csv(kept / scaling.RESULTS, index=False)
    pd.DataFrame([{**row, "step": 100}, {**row, "seed": 1, "step": 100}]).to_csv(kept / scaling.CURVES, index=False)
    runner.merge_committed(kept, out)  # an empty scratch folder: everything committed
    assert len(scaling.read_results(out)) == 2 and len(pd.read_csv(out / scaling.CURVES)) == 2
    scaling.append_rows(out, pd.DataFrame([{**row, "seed": 2, "test_loss": 3.0}]), scaling.RESULTS)  # ran here
    pd.DataFrame([row, {**row, "fraction": 1.0, "test_loss": 4.0}]).to_csv(kept / scaling.RESULTS, index=False)
    runner.merge_committed(kept, out)  # finished elsewhere and committed: r1 at fraction 1.0
    merged = scaling.read_results(out)
    assert sorted(scaling._key(r) for _, r in merged.iterrows()) == [
        ("r1", 0.5, 0), ("r1", 0.5, 1), ("r1", 0.5, 2), ("r1", 1.0, 0)]


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


GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "scaling.md"


def test_the_guides_and_committed_grids_configure_every_point(tmp_path):
    """The grid in the scaling guide and every committed study grid name only real training options, and
    every point of each builds its training configuration (a typo in a grid fails here, not hours into a
    sweep)."""
    import yaml

    example = re.search(r"```yaml\n(.*?)```", GUIDE.read_text(), re.S)
    assert example, "the scaling guide shows no grid.yaml"
    grids = [yaml.safe_load(example.group(1))] + [scaling.load_grid(p) for p in sorted(STUDY.rglob("grid.yaml"))]
    assert len(grids) >= 2
    for grid in grids:
        grid = {**grid, "shards": str(tmp_path)}  # the shards are made by the study's run.py, not here
        for point in scaling.grid_points(scaling.load_grid(grid)):
            config = scaling.point_config(grid, point)
            assert (config.train_fraction, config.seed) == (point["fraction"], point["seed"])
            assert config.lr_schedule == grid["train"]["lr_schedule"]
    with pytest.raises(ValueError, match=r"Unknown training options in the grid: \['learning_rat'\]"):
        scaling.point_config({**grids[0], "train": {"learning_rat": 1e-3}}, scaling.grid_points(grids[0])[0])


def test_prediction_from_the_smaller_sizes_extrapolates_an_exact_law_within_its_interval():
    rng = np.random.default_rng(1)
    sizes = np.array([250, 640, 1600, 4000, 10000, 25600])
    rows = [{"architecture": "m", "fraction": n / 25600, "seed": seed, "params": 1e5, "n_train": n,
             "test_loss": scaling.power_law(n, 40.0, 0.45, 30.0) + rng.normal(0, 0.03)}
            for n in sizes for seed in range(3)]
    stats = scaling._grouped(pd.DataFrame(rows), "fraction", "test_loss")
    pred = scaling.prediction_test(stats)
    assert pred["fit_sizes"] == [250.0, 640.0, 1600.0, 4000.0]  # the smaller two thirds
    truth = scaling.power_law(25600, 40.0, 0.45, 30.0)
    assert abs(pred["predicted"] - truth) < 3 * pred["predicted_err"] and pred["predicted_err"] < 0.3
    assert abs(pred["z"]) < 3


def test_predicted_interval_matches_monte_carlo_over_the_fit_covariance():
    x = np.array([100, 200, 400, 800, 1600])
    y = scaling.power_law(x, 20.0, 0.5, 5.0) + np.array([0.02, -0.03, 0.01, 0.02, -0.01])
    fit = scaling.fit_power_law(x, y, sigma=np.full(5, 0.03))
    value, err = scaling.predict_power_law(fit, 3200.0)
    rng = np.random.default_rng(0)
    a_s = fit["a"] * fit["x0"] ** -fit["b"]
    draws = rng.multivariate_normal([a_s, fit["b"], fit["c"]], fit["cov"], 20000)
    mc = draws[:, 0] * (3200.0 / fit["x0"]) ** -draws[:, 1] + draws[:, 2]
    np.testing.assert_allclose(value, scaling.power_law(3200.0, fit["a"], fit["b"], fit["c"]), rtol=1e-9)
    np.testing.assert_allclose(err, mc.std(), rtol=0.15)  # linear propagation vs sampling (mildly non-linear in b)


STUDY = Path(__file__).resolve().parents[1] / "benchmarks" / "scaling_mini"


@pytest.mark.skipif(not (STUDY / scaling.RESULTS).exists(), reason="no committed scaling study results")
def test_committed_study_figures_and_tables_are_what_its_results_produce(tmp_path):
    """`zoobot-tf scaling analyse` over the committed results remakes the committed fits, table and figure."""
    from PIL import Image

    from zoobot_tf.cli import main

    assert main(["scaling", "analyse", "--results", str(STUDY), "--out", str(tmp_path)]) == 0
    results = scaling.read_results(STUDY)
    digest = scaling.results_digest(results)
    committed = json.loads((STUDY / "fits.json").read_text())
    assert committed["results_digest"] == digest, "fits.json was made from other results: rerun the analysis"
    assert _close(json.loads((tmp_path / "fits.json").read_text()), committed)
    assert _same_table((tmp_path / "table.md").read_text(), (STUDY / "table.md").read_text())
    assert Image.open(STUDY / "scaling.png").info["Source"] == f"results sha256 {digest}"
    _same_figure(STUDY, tmp_path, "scaling.png", scaling.RESULTS)
    docs = (Path(__file__).resolve().parents[1] / "docs" / "guides" / "scaling.md").read_text()
    assert (STUDY / "table.md").read_text().strip() in docs, "docs/guides/scaling.md does not show table.md"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert (STUDY / "table.md").read_text().split("\n\n")[0].strip() in readme, "README lacks the study's table"
    _same_figure(STUDY, tmp_path, "convergence.png", scaling.CURVES)


def _same_figure(study: Path, remade: Path, figure: str, table: str) -> None:
    """The committed figure carries the digest of the committed table and looks like the remade one; the
    docs show the same file."""
    from matplotlib.testing.compare import compare_images
    from PIL import Image

    digest = scaling.results_digest(pd.read_csv(study / table))
    assert Image.open(study / figure).info["Source"].endswith(digest), f"{figure} was not made from {table}"
    assert compare_images(str(study / figure), str(remade / figure), tol=2) is None
    docs_copy = Path(__file__).resolve().parents[1] / "docs" / "assets" / figure
    assert docs_copy.read_bytes() == (study / figure).read_bytes(), f"docs/assets/{figure} is not the committed one"


@pytest.mark.skipif(not (STUDY / scaling.LABELS).exists(), reason="no committed finetuning-labels results")
def test_committed_real_data_view_is_what_its_runs_produce(tmp_path):
    """The real-data view (finetuning labels on real galaxies): table and figure remade from labels.csv."""
    import shutil

    from zoobot_tf.cli import main

    shutil.copy(STUDY / scaling.LABELS, tmp_path / scaling.LABELS)  # only the runs, not the sweep's results
    assert main(["scaling", "analyse", "--results", str(tmp_path)]) == 0
    assert _same_table((tmp_path / "labels.md").read_text(), (STUDY / "labels.md").read_text())
    docs = (Path(__file__).resolve().parents[1] / "docs" / "guides" / "scaling.md").read_text()
    assert (STUDY / "labels.md").read_text().strip() in docs, "docs/guides/scaling.md does not show labels.md"
    _same_figure(STUDY, tmp_path, "labels.png", scaling.LABELS)


# The fits are least-squares solutions whose last digits differ between CPUs (up to 2e-5 relative between an
# AMD EPYC and an Intel Xeon for the same results): fits.json (covariances too) must be what the results give
# to 1e-3; the printed tables to one unit of each number's last digit, or 1e-4 of it.
FIT_RTOL, TABLE_RTOL = 1e-3, 1e-4


def _close(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=FIT_RTOL, abs_tol=1e-9)
    return a == b


_NUMBER = re.compile(r"[-+]?\d+(?:\.(\d+))?")


def _same_table(made: str, committed: str) -> bool:
    """The same markdown table: identical text between the numbers, integers (counts, sizes, dof) identical,
    and every decimal equal to within one unit of its last printed digit and TABLE_RTOL (a fit's value that
    sits on a rounding edge may print either way)."""
    if _NUMBER.split(made)[::2] != _NUMBER.split(committed)[::2]:
        return False
    pairs = list(zip(_NUMBER.finditer(made), _NUMBER.finditer(committed)))
    return len(pairs) == len(_NUMBER.findall(committed)) and all(
        x.group() == y.group() if y.group(1) is None else
        abs(float(x.group()) - float(y.group())) <= 10.0 ** -len(y.group(1)) + TABLE_RTOL * abs(float(y.group()))
        for x, y in pairs)


def test_same_table_tolerates_the_last_digit_only():
    a = "| r006k | 38.86 ± 0.06 | 1.8 / 3 | 25496 |"
    assert _same_table(a, a) and _same_table("| r006k | 38.87 ± 0.06 | 1.8 / 3 | 25496 |", a)
    assert not _same_table("| r006k | 38.89 ± 0.06 | 1.8 / 3 | 25496 |", a)  # three units off
    assert not _same_table("| r006k | 38.86 ± 0.06 | 1.8 / 4 | 25496 |", a)
    assert not _same_table("| r021k | 38.86 ± 0.06 | 1.8 / 3 | 25496 |", a)  # text differs
    assert not _same_table("| r006k | 38.86 ± 0.06 | 1.8 / 3 |", a)
