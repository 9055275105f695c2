"""Scaling-law studies: a grid of training-set fractions x architectures x seeds, power-law fits, plots.

A study is a YAML/JSON grid::

    shards: data/shards                # one fixed test split for every run
    output_dir: runs/scaling
    fractions: [0.0625, 0.125, 0.25, 0.5, 1.0]
    seeds: [0, 1]
    architectures:
      small: {backbone: resnet_micro, backbone_kwargs: {widths: [8, 16, 32, 64], stem_width: 8}}
      base:  {backbone: resnet_micro}
    train: {image_size: 48, epochs: 15, patience: 3}   # any TrainConfig field

Every grid point is one job (``zoobot-tf scaling run --grid g.yaml --index I``, SLURM-array friendly)
that trains with early stopping, evaluates the Dirichlet-multinomial test loss (total and per question)
and appends a row to ``<output_dir>/results.csv`` under a file lock; points already in the table are
skipped, so a sweep can be resumed, extended, or spread over machines sharing the folder.

``zoobot-tf scaling analyse`` fits ``L(D) = a D^-b + c`` per architecture (D = training galaxies),
with uncertainties from the seeds, and ``L(N)`` at the largest D (N = parameters); per-question
data-scaling exponents; and plots loss vs labels and loss vs parameters (PNG and PDF).
"""
from __future__ import annotations

import dataclasses
import fcntl
import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = "results.csv"
CURVES = "curves.csv"  # validation loss per epoch of every point (convergence)


def load_grid(path_or_dict) -> dict:
    if isinstance(path_or_dict, dict):
        grid = dict(path_or_dict)
    else:
        path = Path(path_or_dict)
        if not path.exists():
            raise FileNotFoundError(f"Grid file not found: {path}")
        is_yaml = path.suffix in (".yaml", ".yml")
        try:
            if is_yaml:
                import yaml

                grid = yaml.safe_load(path.read_text())
            else:
                grid = json.loads(path.read_text())
        except Exception as e:  # yaml's and json's parse errors, said in one line with the file named
            raise ValueError(f"Cannot read the scaling grid {path} as {'YAML' if is_yaml else 'JSON'}: "
                             f"{' '.join(str(e).split())}") from None
        if not isinstance(grid, dict):
            raise ValueError(f"The scaling grid {path} must be a mapping (fractions, seeds, architectures, "
                             f"output_dir, ...); it holds a {type(grid).__name__}")
    for key in ("fractions", "seeds", "architectures", "output_dir"):
        if key not in grid:
            raise ValueError(f"The scaling grid needs {key!r}. Received keys: {sorted(grid)}")
    return grid


def grid_points(grid: dict) -> list[dict]:
    """Every (architecture, fraction, seed) of the grid, in a stable order (index = job number)."""
    archs = sorted(grid["architectures"])
    return [{"architecture": a, "fraction": float(f), "seed": int(s)}
            for a, f, s in itertools.product(archs, sorted(grid["fractions"]), sorted(grid["seeds"]))]


def _key(row) -> tuple:
    return (str(row["architecture"]), round(float(row["fraction"]), 8), int(row["seed"]))


def read_results(output_dir) -> pd.DataFrame:
    path = Path(output_dir) / RESULTS
    return pd.read_csv(path) if path.exists() else pd.DataFrame()


def append_rows(output_dir: Path, rows: pd.DataFrame, name: str) -> None:
    """Append ``rows`` to the CSV ``output_dir/name`` under a lock: several jobs may finish at once."""
    path = output_dir / name
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / (name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several jobs may finish at once
        existing = pd.read_csv(path) if path.exists() else pd.DataFrame()
        table = pd.concat([existing, rows], ignore_index=True)
        tmp = path.with_suffix(".tmp")
        table.to_csv(tmp, index=False)
        os.replace(tmp, path)


def point_config(grid: dict, point: dict, progress: bool = False):
    """The training configuration of one grid point: the grid's ``train`` options, the architecture's, and
    the point's data fraction and seed (unknown options are refused here, before any work)."""
    from zoobot_tf.config import TrainConfig

    arch = grid["architectures"][point["architecture"]]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = (set(grid.get("train", {})) | set(arch)) - fields
    if unknown:
        raise ValueError(f"Unknown training options in the grid: {sorted(unknown)}")
    options = {k: v for k, v in {**grid.get("train", {}), **arch}.items() if k not in ("output_dir", "shards")}
    run_dir = Path(grid["output_dir"]) / "runs" / f"{point['architecture']}_f{point['fraction']:.5f}_s{point['seed']}"
    return TrainConfig(output_dir=str(run_dir), shards=grid.get("shards"), train_fraction=point["fraction"],
                       seed=point["seed"], export=False, progress=progress, **options)


def run_point(grid: dict, point: dict, progress: bool = False) -> dict | None:
    """Train and evaluate one grid point; append its row. Returns the row (None if already done)."""
    import keras

    from zoobot_tf.training import train

    out = Path(grid["output_dir"])
    done = read_results(out)
    if len(done) and _key(point) in {_key(r) for _, r in done.iterrows()}:
        return None
    config = point_config(grid, point, progress)
    keras.backend.clear_session()
    result = train(config)
    m = result.metrics.set_index("question")
    row = {**point, "backbone": config.backbone, "params": int(result.model.count_params()),
           "n_train": result.n_train, "epochs": len(result.history), "seconds": result.seconds,
           "test_loss": float(m.loc["total", "loss"]), "baseline_loss": float(m.loc["total", "baseline_loss"]),
           **convergence(result.history, config)}
    if "loss_sem" in m.columns:
        row["test_loss_sem"] = float(m.loc["total", "loss_sem"])
    steps = config.steps_per_epoch or 0
    curve = [{**point, "step": (i + 1) * steps if steps else i + 1, "val_loss": h.get("val_loss", math.nan),
              "train_loss": h.get("loss", math.nan)} for i, h in enumerate(result.history)]
    append_rows(out, pd.DataFrame(curve), CURVES)  # before the result row: a point with a row has its curve
    for q in m.index:
        if q != "total":
            row[f"loss_{q}"] = float(m.loc[q, "loss"])
    append_rows(out, pd.DataFrame([row]), RESULTS)
    return row


def convergence(history: list[dict], config) -> dict:
    """How a run ended, in optimizer steps: the step of its best validation loss, the steps run, and whether
    early stopping ended it (``stopped_early``: the validation loss had not improved for ``patience`` epochs,
    so the point is converged for this recipe) or the step budget did."""
    val = [h.get("val_loss", math.nan) for h in history]
    steps = config.steps_per_epoch or 0
    if not val or not steps:
        return {}
    best = int(np.nanargmin(val)) if np.isfinite(val).any() else len(val) - 1
    return {"steps": len(val) * steps, "best_step": (best + 1) * steps,
            "stopped_early": bool(len(val) < config.epochs), "val_loss_best": float(val[best]),
            "val_loss_last": float(val[-1])}


def run(grid_path, index: int | None = None, progress: bool = False) -> list[dict]:
    """Run one grid point (``index``) or all remaining ones."""
    grid = load_grid(grid_path)
    points = grid_points(grid)
    if index is not None:
        if not 0 <= index < len(points):
            raise IndexError(f"--index must be in [0, {len(points)}) for this grid")
        points = [points[index]]
    rows = []
    for p in points:
        row = run_point(grid, p, progress)
        if row:
            rows.append(row)
            print(f"{p['architecture']:>10s}  fraction {p['fraction']:.4f}  seed {p['seed']}  "
                  f"{row['n_train']:6d} galaxies  test loss {row['test_loss']:.3f}  ({row['seconds']:.0f} s)", flush=True)
    return rows


# --------------------------------------------------------------------------- fitting
def power_law(x, a, b, c):
    return a * np.power(x, -b) + c


B_MAX = 3.0  # exponents above this are not physical for learning curves; a fit that reaches it is flagged


def fit_power_law(x, y, sigma=None, p0=None) -> dict:
    """Least-squares fit of ``y = a x^-b + c``; returns a, b, c with 1-sigma uncertainties.

    Constrained to what a loss curve can be: a >= 0, 0 <= b <= B_MAX, 0 <= c <= min(y + 2 sigma) (the floor
    is below every observed loss, within its noise). x is scaled by its geometric mean inside the fit so
    that a is of the order of the losses (the raw problem is badly conditioned: a ~ 1e4 for b ~ 1); several starting
    exponents are tried and the best chi-square kept. ``at_bound`` names parameters that ended on a
    bound: their uncertainty is not meaningful and the curve does not constrain them.
    """
    from scipy.optimize import curve_fit

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(np.unique(x)) < 3:
        raise ValueError("A power law with an offset needs at least 3 distinct x values.")
    sigma = None if sigma is None else np.maximum(np.asarray(sigma, dtype=np.float64), 1e-6)
    x0 = float(np.exp(np.log(x).mean()))
    xs = x / x0
    # within 2 sigma: a curve that flattens inside the data would otherwise pin c to its lowest point,
    # which noise puts below the true floor about half the time
    c_max = float(y.min() if sigma is None else (y + 2 * sigma).min())
    lower, upper = [0.0, 0.0, 0.0], [np.inf, B_MAX, c_max]
    if p0 is not None:  # a user's start is in the original units of x
        starts = [(p0[0] * x0 ** -p0[1], p0[1], p0[2])]
    else:
        span = max(y.max() - y.min(), 1e-6)
        starts = [(span, b, max(c_max - 0.1 * span, 0.0)) for b in (0.1, 0.3, 0.6, 1.0, 2.0)]
    best = None
    for start in starts:
        start = np.clip(start, lower, np.minimum(upper, 1e12) - 1e-9)
        try:
            params, cov = curve_fit(power_law, xs, y, p0=start, sigma=sigma, absolute_sigma=sigma is not None,
                                    maxfev=20000, bounds=(lower, upper))
        except RuntimeError:
            continue
        resid = (power_law(xs, *params) - y) / (1.0 if sigma is None else sigma)
        chi2 = float(resid @ resid)
        if best is None or chi2 < best[0] - 1e-12:
            best = (chi2, params, cov)
    if best is None:
        raise RuntimeError("The power-law fit did not converge from any starting point.")
    chi2, (a, b, c), cov = best
    cov = np.where(np.isfinite(cov), cov, np.inf)
    err = np.sqrt(np.clip(np.diag(cov), 0, None))
    # back to the original units of x: a (x/x0)^-b = (a x0^b) x^-b
    a_orig = a * x0 ** b
    a_err = a_orig * np.hypot(err[0] / max(a, 1e-300), np.log(x0) * err[1])
    tol = 1e-6
    at_bound = [n for n, v, lo, hi in zip("abc", (a, b, c), lower, upper)
                if v - lo <= tol * max(1.0, abs(lo)) or (np.isfinite(hi) and hi - v <= tol * max(1.0, abs(hi)))]
    return {"a": float(a_orig), "b": float(b), "c": float(c), "a_err": float(a_err), "b_err": float(err[1]),
            "c_err": float(err[2]), "chi2": chi2, "dof": int(len(x) - 3), "at_bound": at_bound,
            "x0": x0, "cov": cov.tolist()}


def intrinsic_scatter(x, y, sigma) -> dict | None:
    """The scatter ``s`` that, added in quadrature to every point's ``sigma``, brings the power law's
    chi2/dof to 1 (0 when it is already at most 1), and the fit with it: the usual way to quote how far
    points sit off a law beyond their measured noise. None without degrees of freedom."""
    from scipy.optimize import brentq

    x, y, sigma = (np.asarray(v, dtype=np.float64) for v in (x, y, sigma))
    dof = len(x) - 3
    if dof <= 0:
        return None

    def excess(s):
        f = fit_power_law(x, y, np.hypot(sigma, s))
        return f["chi2"] / dof - 1.0, f

    value, fit = excess(0.0)
    if value <= 0:
        return {"s": 0.0, "fit": fit}
    high = float(np.ptp(y)) + float(sigma.max())  # chi2/dof < 1 here: the points' spread as their error
    while excess(high)[0] > 0:
        high *= 2
    s = brentq(lambda v: excess(v)[0], 0.0, high, xtol=1e-6, rtol=1e-6)
    return {"s": float(s), "fit": excess(s)[1]}


def predict_power_law(fit: dict, x) -> tuple[np.ndarray, np.ndarray]:
    """The fitted curve at ``x`` and its 1-sigma uncertainty from the fit's parameter covariance
    (linear error propagation; parameters on a bound carry no meaningful covariance)."""
    x = np.asarray(x, dtype=np.float64)
    xs = x / fit["x0"]
    a_s = fit["a"] * fit["x0"] ** -fit["b"]  # the amplitude in the fit's scaled units
    value = a_s * xs ** -fit["b"] + fit["c"]
    jac = np.stack([xs ** -fit["b"], -a_s * np.log(xs) * xs ** -fit["b"], np.ones_like(xs)], axis=-1)
    cov = np.asarray(fit["cov"], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        var = np.einsum("...i,ij,...j->...", jac, cov, jac)
    return value, np.sqrt(np.clip(var, 0, None))


def _grouped(results: pd.DataFrame, by: str, value: str) -> pd.DataFrame:
    """Mean, standard deviation and count of ``value`` over seeds, per ``by`` group, with the mean
    training-set size of the group (seeds draw different shard subsets, so sizes differ slightly).

    ``sigma`` is the uncertainty of each mean: the seed-to-seed variance pooled over all groups, over
    sqrt(count). With 2 seeds a per-point standard deviation is itself very noisy (and ~0 by chance
    would pin a fit to that point); pooling gives one stable noise estimate per curve.
    """
    g = results.groupby(by)
    stats = pd.DataFrame({"n_train": g["n_train"].mean(), "params": g["params"].mean(), "mean": g[value].mean(),
                          "std": g[value].std(ddof=1).fillna(0.0), "n": g[value].count()}).reset_index()
    dof = (stats["n"] - 1).clip(lower=0)
    pooled = float(np.sqrt((stats["std"] ** 2 * dof).sum() / dof.sum())) if dof.sum() > 0 else 0.0
    stats["sigma"] = max(pooled, 1e-3) / np.sqrt(stats["n"].clip(lower=1))
    return stats


PREDICT_FROM = 2 / 3  # the prediction test fits the smaller two thirds of the data sizes


def analyse(results: pd.DataFrame, output_dir: str | Path | None = None) -> dict:
    """Everything a study reports, from its results table: data-scaling fits per architecture (total and per
    question, with chi2/dof), the combined exponent, the parameter law at every data size, the prediction
    test, how the runs ended, and the test set's own noise. With ``output_dir``: fits.json, table.md and
    scaling.png/.pdf there."""
    if results.empty:
        raise ValueError("No results to analyse.")
    fits: dict = {"data": {}, "params": None, "per_question": {}, "per_question_err": {}, "prediction": {}}
    questions = [c[len("loss_"):] for c in results.columns if c.startswith("loss_")]
    for arch, part in results.groupby("architecture"):
        stats = _grouped(part, "fraction", "test_loss")
        try:
            fits["data"][arch] = {**fit_power_law(stats["n_train"], stats["mean"], stats["sigma"]),
                                  "params": int(part["params"].iloc[0])}
        except (ValueError, RuntimeError) as e:
            fits["data"][arch] = {"error": str(e)}
        else:
            try:
                scatter = intrinsic_scatter(stats["n_train"], stats["mean"], stats["sigma"])
            except (ValueError, RuntimeError):  # a refit that fails leaves the fit without a scatter
                scatter = None
            if scatter is not None:
                fits["data"][arch]["scatter"] = {"s": scatter["s"], "b": scatter["fit"]["b"],
                                                 "b_err": scatter["fit"]["b_err"]}
        fits["prediction"][arch] = prediction_test(stats)
        fits["per_question"][arch], fits["per_question_err"][arch] = {}, {}
        for q in questions:
            qs = _grouped(part, "fraction", f"loss_{q}")
            try:
                f = fit_power_law(qs["n_train"], qs["mean"], qs["sigma"] if len(part) > len(qs) else None)
                fits["per_question"][arch][q], fits["per_question_err"][arch][q] = f["b"], f["b_err"]
            except (ValueError, RuntimeError):
                fits["per_question"][arch][q] = fits["per_question_err"][arch][q] = math.nan
    fits["data_exponent_combined"] = combined_exponent(fits["data"])
    largest = results[results["fraction"] == results["fraction"].max()]
    by_params = _grouped(largest, "architecture", "test_loss")
    if len(by_params) >= 3:
        try:
            fits["params"] = fit_power_law(by_params["params"], by_params["mean"], by_params["sigma"])
        except (ValueError, RuntimeError) as e:
            fits["params"] = {"error": str(e)}
    fits["params_by_data"] = params_by_data(results)
    fits["per_question_params"] = {q: params_gain(largest, f"loss_{q}") for q in questions}
    fits["convergence"] = convergence_table(results)
    fits["noise"] = {"seed_sd": float(_grouped(results, ["architecture", "fraction"], "test_loss")["std"].pow(2)
                                      .mean() ** 0.5),
                     "test_loss_sem": float(results["test_loss_sem"].mean()) if "test_loss_sem" in results else None}
    fits["results_digest"] = results_digest(results)
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        plot(results, fits, out)
        (out / "fits.json").write_text(json.dumps(fits, indent=2, default=float) + "\n")
        (out / "table.md").write_text(results_table(fits))
    return fits


LABELS = "labels.csv"  # the real-data view: finetuning runs (benchmarks/finetune_real.py --csv)


def analyse_labels(runs: pd.DataFrame, output_dir: str | Path | None = None) -> dict:
    """The real-data view: test loss and balanced accuracy against the number of finetuning labels, per data
    set and encoder (mean and seed-to-seed spread), with L(n) = a n^-b + c fitted to the loss where it fits.
    With ``output_dir``: labels.png/.pdf there. ``runs``: one row per finetuning run with ``dataset``,
    ``encoder``, ``labels``, ``seed``, ``loss`` and ``balanced_accuracy``."""
    out: dict = {}
    for (dataset, encoder), part in runs.groupby(["dataset", "encoder"]):
        part = part.assign(n_train=part["labels"], params=0)
        loss, acc = _grouped(part, "labels", "loss"), _grouped(part, "labels", "balanced_accuracy")
        entry = {"labels": [float(v) for v in loss["labels"]], "loss": [float(v) for v in loss["mean"]],
                 "loss_sd": [float(v) for v in loss["std"]], "balanced_accuracy": [float(v) for v in acc["mean"]],
                 "balanced_accuracy_sd": [float(v) for v in acc["std"]], "seeds": int(part["seed"].nunique())}
        if len(loss) <= 3:  # a, b and c through three points: nothing left to test the law with
            entry["fit"] = {"error": "too few label sizes", "note": f"{len(loss)} label sizes for 3 parameters"}
        else:
            try:
                entry["fit"] = fit_power_law(loss["labels"], loss["mean"], loss["sigma"])
            except (ValueError, RuntimeError) as e:
                entry["fit"] = {"error": str(e)}
        out.setdefault(dataset, {})[encoder] = entry
    if output_dir is not None:
        plot_labels(out, Path(output_dir), results_digest(runs))
    return out


def labels_table(view: dict) -> str:
    lines = ["| set | encoder | " + "labels: balanced accuracy (sd) |" + " loss fit: b | chi2 / dof |", "|---|---|---|---|---|"]
    for dataset, encoders in view.items():
        for encoder, e in encoders.items():
            cells = ", ".join(f"{n:.0f}: {a:.3f} ({sd:.3f})" for n, a, sd in
                              zip(e["labels"], e["balanced_accuracy"], e["balanced_accuracy_sd"]))
            f = e["fit"]
            fit = (f"{_pm(f['b'], f['b_err'])}" + (f" (at bound: {', '.join(f['at_bound'])})" if f["at_bound"] else ""),
                   f"{f['chi2']:.1f} / {f['dof']}") if "b" in f else ("no fit" + (f": {f['note']}" if "note" in f else ""), "")
            lines.append(f"| {dataset} | {encoder} | {cells} | {fit[0]} | {fit[1]} |")
    return "\n".join(lines) + "\n"


def plot_labels(view: dict, out: Path, digest: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(view), figsize=(4.2 * len(view), 7.5), squeeze=False)
    for col, (dataset, encoders) in enumerate(view.items()):
        for colour, (encoder, e) in zip(("tab:blue", "tab:orange", "tab:green"), encoders.items()):
            x = np.array(e["labels"])
            axes[0, col].errorbar(x, e["balanced_accuracy"], yerr=e["balanced_accuracy_sd"], fmt="o-", capsize=2,
                                  color=colour, label=encoder)
            axes[1, col].errorbar(x, e["loss"], yerr=e["loss_sd"], fmt="o", capsize=2, color=colour, label=encoder)
            f = e["fit"]
            if "b" in f:
                xs = np.geomspace(x.min(), x.max(), 100)
                axes[1, col].plot(xs, power_law(xs, f["a"], f["b"], f["c"]), color=colour, lw=1,
                                  label=f"fit: b = {f['b']:.2f}, chi2/dof = {f['chi2']:.1f}/{f['dof']}")
        axes[0, col].set_title(dataset)
        axes[0, col].set_ylabel("test balanced accuracy")
        axes[1, col].set_ylabel("test loss (cross-entropy)")
        for ax in axes[:, col]:
            ax.set_xscale("log")
            ax.set_xlabel("finetuning labels")
            ax.legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, out / "labels", f"results sha256 {digest}")


def _save_figure(fig, stem: Path, source: str) -> None:
    """``stem``.png and .pdf, each stamped with ``source`` (the digest of the table it was made from), then closed;
    the PDF without a creation date, so that remaking it from the same table gives the same file."""
    import matplotlib.pyplot as plt

    fig.savefig(stem.with_suffix(".png"), dpi=110, metadata={"Source": source})
    fig.savefig(stem.with_suffix(".pdf"), metadata={"Subject": source, "CreationDate": None})
    plt.close(fig)


def plot_curves(curves: pd.DataFrame, out: Path, digest: str) -> None:
    """convergence.png/.pdf: validation loss against optimizer steps, one panel per architecture, one line per
    data size (mean over seeds): whether each point had reached its best (and flattened) within the budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = curves.drop_duplicates(["architecture", "fraction", "seed", "step"], keep="last")
    archs = sorted(curves["architecture"].unique())
    fig, axes = plt.subplots(1, len(archs), figsize=(3.6 * len(archs), 3.4), sharey=True, squeeze=False)
    sizes = sorted(curves["fraction"].unique())
    for ax, arch in zip(axes[0], archs):
        part = curves[curves["architecture"] == arch]
        for colour, frac in zip(plt.cm.plasma(np.linspace(0, 0.85, len(sizes))), sizes):
            mean = part[part["fraction"] == frac].groupby("step")["val_loss"].mean()
            ax.plot(mean.index, mean.values, "o-", ms=3, color=colour, label=f"fraction {frac:g}")
        ax.set_title(arch)
        ax.set_xlabel("optimizer step")
    axes[0, 0].set_ylabel("validation loss (mean over seeds)")
    # overfitting small sets climb far above where training began; clip there so the converged curves show
    top = curves[curves["step"] == curves["step"].min()]["val_loss"].mean() + 2
    if np.isfinite(top) and curves["val_loss"].max() > top:
        axes[0, 0].set_ylim(curves["val_loss"].min() - 0.3, top)
        axes[0, 0].set_ylabel(f"val loss, seed mean (up to {top:.1f})")
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, out / "convergence", f"curves sha256 {digest}")


def results_digest(results: pd.DataFrame) -> str:
    """sha256 of the results table as CSV: stamped into the figures and fits, so that a test can tell
    that the committed figures were made from the committed results."""
    import hashlib

    return hashlib.sha256(results.to_csv(index=False).encode()).hexdigest()


def prediction_test(stats: pd.DataFrame, fraction: float = PREDICT_FROM) -> dict:
    """Fit the smaller ``fraction`` of the data sizes; predict the largest size's loss with the fit's
    1-sigma interval; compare with the measured mean (``z``: the difference in combined sigmas)."""
    stats = stats.sort_values("n_train")
    k = max(3, int(math.floor(fraction * len(stats) + 1e-9)))
    if len(stats) <= k:
        return {"error": f"needs more than {k} data sizes; has {len(stats)}"}
    head, last = stats.iloc[:k], stats.iloc[-1]
    try:
        fit = fit_power_law(head["n_train"], head["mean"], head["sigma"])
    except (ValueError, RuntimeError) as e:
        return {"error": str(e)}
    value, err = predict_power_law(fit, float(last["n_train"]))
    diff_err = float(np.hypot(err, last["sigma"]))
    return {"fit_sizes": [float(n) for n in head["n_train"]], "n_train": float(last["n_train"]),
            "predicted": float(value), "predicted_err": float(err), "measured": float(last["mean"]),
            "measured_err": float(last["sigma"]), "z": float((last["mean"] - value) / diff_err) if diff_err else None,
            "b": fit["b"], "at_bound": fit["at_bound"]}


def params_by_data(results: pd.DataFrame) -> dict:
    """At each data size: mean loss per architecture and the smallest model within 1 sigma of the best
    (where a bigger model stops helping)."""
    out = {}
    for frac, part in results.groupby("fraction"):
        stats = _grouped(part, "architecture", "test_loss").sort_values("params").reset_index(drop=True)
        best = int(stats["mean"].idxmin())
        enough = [i for i in range(len(stats))
                  if stats["mean"][i] - stats["mean"][best] <= np.hypot(stats["sigma"][i], stats["sigma"][best])]
        out[f"{frac:g}"] = {"n_train": float(part["n_train"].mean()),
                            "loss": {a: float(m) for a, m in zip(stats["architecture"], stats["mean"])},
                            "sigma": {a: float(m) for a, m in zip(stats["architecture"], stats["sigma"])},
                            "best": stats["architecture"][best], "enough": stats["architecture"][min(enough)]}
    return out


def params_gain(part: pd.DataFrame, column: str) -> dict:
    """Loss of the smallest model minus the largest's (> 0: parameters help), with its 1-sigma uncertainty."""
    stats = _grouped(part, "architecture", column).sort_values("params")
    small, big = stats.iloc[0], stats.iloc[-1]
    return {"gain": float(small["mean"] - big["mean"]), "sigma": float(np.hypot(small["sigma"], big["sigma"]))}


def convergence_table(results: pd.DataFrame) -> dict:
    """Per data size: the share of runs that early stopping ended (rather than the step budget), and the
    median step of the best validation loss and of the end."""
    if "stopped_early" not in results:
        return {}
    out = {}
    for frac, part in results.groupby("fraction"):
        out[f"{frac:g}"] = {"n_train": float(part["n_train"].mean()), "runs": int(len(part)),
                            "stopped_early": float(part["stopped_early"].astype(bool).mean()),
                            "best_step_median": float(part["best_step"].median()),
                            "steps_median": float(part["steps"].median())}
    return out


def combined_exponent(data_fits: dict) -> dict | None:
    """Inverse-variance weighted mean of the data exponents b over architectures (fits whose b is on a
    bound or has no finite uncertainty are left out), with its 1-sigma uncertainty. Where a fit carries an
    intrinsic scatter (:func:`intrinsic_scatter`), its b and uncertainty with that scatter are used: the
    seed scatter alone would understate how well such a curve pins b."""
    usable = [f.get("scatter") or f for f in data_fits.values() if "b" in f and "b" not in f.get("at_bound", [])]
    usable = [f for f in usable if np.isfinite(f["b_err"]) and f["b_err"] > 0]
    if not usable:
        return None
    w = np.array([1 / f["b_err"] ** 2 for f in usable])
    b = np.array([f["b"] for f in usable])
    return {"b": float((w * b).sum() / w.sum()), "b_err": float(1 / np.sqrt(w.sum())), "n_fits": len(usable)}


def exponent_table(fits: dict) -> str:
    lines = [f"{'architecture':>14s} {'params':>9s} {'b (data exponent)':>20s} {'a':>12s} {'c (floor)':>16s} "
             f"{'chi2/dof':>10s}  note"]
    for arch, f in sorted(fits["data"].items(), key=lambda kv: kv[1].get("params", 0)):
        if "error" in f:
            lines.append(f"{arch:>14s}  fit failed: {f['error']}")
            continue
        note = f"at bound: {', '.join(f['at_bound'])}" if f.get("at_bound") else ""
        if f.get("scatter", {}).get("s"):
            note += f"{'; ' if note else ''}chi2/dof = 1 with {f['scatter']['s']:.3f} added per point"
        lines.append(f"{arch:>14s} {f['params'] / 1e6:8.2f}M {f['b']:10.3f} +- {f['b_err']:.3f} "
                     f"{f['a']:12.4g} {f['c']:8.2f} +- {f['c_err']:.2f} {_chi2(f):>10s}  {note}")
    combined = fits.get("data_exponent_combined")
    if combined:
        lines.append(f"{'combined':>14s} {'':>9s} {combined['b']:10.3f} +- {combined['b_err']:.3f}  "
                     f"(inverse-variance mean over {combined['n_fits']} architectures)")
    return "\n".join(lines)


def _chi2(f: dict) -> str:
    return f"{f['chi2'] / f['dof']:.2f}" if f.get("dof") else f"{f.get('chi2', math.nan):.2f} / 0"


def _pm(v: float, e: float, digits: int = 2) -> str:
    return f"{v:.{digits}f} ± {e:.{digits}f}" if np.isfinite(e) else f"{v:.{digits}f} (unconstrained)"


def results_table(fits: dict) -> str:
    """The study's tables as Markdown (written to table.md; the docs show it as is)."""
    order = sorted((a for a in fits["data"] if "b" in fits["data"][a]), key=lambda a: fits["data"][a]["params"])
    lines = ["| model | parameters | data exponent b | floor c | chi2 / dof | scatter for chi2/dof = 1: s, and b with it "
             "| predicted loss at largest size (fit on smaller 2/3) | measured | z |", "|---|---|---|---|---|---|---|---|---|"]
    for arch in order:
        f, p = fits["data"][arch], fits["prediction"].get(arch, {})
        bound = f" (at bound: {', '.join(f['at_bound'])})" if f["at_bound"] else ""
        pred = (f"{_pm(p['predicted'], p['predicted_err'])} at {p['n_train']:.0f}", _pm(p["measured"], p["measured_err"]),
                f"{p['z']:+.1f}" if p.get("z") is not None else "") if "predicted" in p else ("n/a", "", "")
        sc = f.get("scatter")
        scatter = f"{sc['s']:.3f}: b = {_pm(sc['b'], sc['b_err'], 3)}" if sc and sc["s"] > 0 else ("0" if sc else "")
        lines.append(f"| {arch} | {f['params'] / 1e6:.3f}M | {_pm(f['b'], f['b_err'], 3)}{bound} | {_pm(f['c'], f['c_err'])} "
                     f"| {f['chi2']:.1f} / {f['dof']} | {scatter} | {pred[0]} | {pred[1]} | {pred[2]} |")
    c = fits.get("data_exponent_combined")
    if c:
        lines.append(f"| all (inverse-variance mean) | | **{_pm(c['b'], c['b_err'], 3)}** | | | | | | |")
    lines += ["", "| training galaxies | " + " | ".join(order) + " | smallest model within 1 sigma of the best |",
              "|---|" + "---|" * (len(order) + 1)]
    for entry in fits.get("params_by_data", {}).values():
        cells = [_pm(entry["loss"][a], entry["sigma"][a]) if a in entry["loss"] else "" for a in order]
        lines.append(f"| {entry['n_train']:.0f} | " + " | ".join(cells) + f" | {entry['enough']} |")
    questions = sorted(next(iter(fits["per_question"].values()), {}))
    if questions:
        lines += ["", "| question | " + " | ".join(f"b, {a}" for a in order) +
                  " | loss gain from the largest model at full data |", "|---|" + "---|" * (len(order) + 1)]
        for q in questions:
            cells = [_pm(fits["per_question"][a][q], fits["per_question_err"][a][q]) for a in order]
            gain = fits["per_question_params"].get(q)
            lines.append(f"| {q} | " + " | ".join(cells) + (f" | {_pm(gain['gain'], gain['sigma'], 3)} |" if gain else " | |"))
    conv = fits.get("convergence")
    if conv:
        lines += ["", "| training galaxies | runs | ended by early stopping | median step of best val loss | median steps run |",
                  "|---|---|---|---|---|"]
        for e in conv.values():
            lines.append(f"| {e['n_train']:.0f} | {e['runs']} | {e['stopped_early']:.0%} | {e['best_step_median']:.0f} "
                         f"| {e['steps_median']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(results: pd.DataFrame, fits: dict, out: Path) -> None:
    """scaling.png and scaling.pdf: loss vs data (fits, and the prediction test's extrapolation), loss vs
    parameters at every data size, per-question data exponents, per-question gain from parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    order = list(results.groupby("architecture")["params"].first().sort_values().index)
    colours = dict(zip(order, plt.cm.viridis(np.linspace(0, 0.9, len(order)))))
    ax = axes[0, 0]
    for arch in order:
        part, colour = results[results["architecture"] == arch], colours[arch]
        stats = _grouped(part, "fraction", "test_loss")
        f, pred = fits["data"].get(arch, {}), fits["prediction"].get(arch, {})
        label = f"{arch} ({part['params'].iloc[0] / 1e6:.2f}M)"
        xs = np.geomspace(stats["n_train"].min(), stats["n_train"].max(), 100)
        if "b" in f:
            label += f": b = {f['b']:.2f} $\\pm$ {f['b_err']:.2f}"
            ax.plot(xs, power_law(xs, f["a"], f["b"], f["c"]), color=colour)
        if "predicted" in pred:
            ax.errorbar([pred["n_train"]], [pred["predicted"]], yerr=[pred["predicted_err"]], fmt="s", mfc="none",
                        color=colour, capsize=3)
        ax.errorbar(stats["n_train"], stats["mean"], yerr=stats["std"], fmt="o", color=colour, label=label, capsize=2)
    if "baseline_loss" in results:
        ax.axhline(results["baseline_loss"].mean(), color="grey", ls=":", lw=1, label="no-image baseline")
    ax.plot([], [], "s", mfc="none", color="k", label="predicted from the smaller 2/3 of sizes")
    ax.set_xscale("log")
    ax.set_xlabel("training galaxies (labels)")
    ax.set_ylabel("test loss (Dirichlet-multinomial NLL per galaxy)")
    ax.legend(fontsize=7)
    ax.set_title("loss vs data (error bars: seed-to-seed sd)")
    ax = axes[0, 1]
    sizes = sorted(results["fraction"].unique())
    for colour, frac in zip(plt.cm.plasma(np.linspace(0, 0.85, len(sizes))), sizes):
        part = results[results["fraction"] == frac]
        stats = _grouped(part, "architecture", "test_loss").sort_values("params")
        ax.errorbar(stats["params"], stats["mean"], yerr=stats["std"], fmt="o-", capsize=2, color=colour,
                    label=f"{part['n_train'].mean():.0f} galaxies")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("parameters")
    ax.set_ylabel("test loss")
    ax.legend(fontsize=7)
    ax.set_title("loss vs model size, at each data size")
    questions = sorted(next(iter(fits["per_question"].values()), {}))
    width = 0.8 / max(len(order), 1)
    ax = axes[1, 0]
    for k, arch in enumerate(order):
        b = [fits["per_question"].get(arch, {}).get(q, np.nan) for q in questions]
        e = [fits["per_question_err"].get(arch, {}).get(q, np.nan) for q in questions]
        ax.bar(np.arange(len(questions)) + (k - (len(order) - 1) / 2) * width, b, width, yerr=np.nan_to_num(e),
               color=colours[arch], label=arch, capsize=1.5)
    ax.set_xticks(np.arange(len(questions)), questions, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("data exponent b")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    ax.set_title("per question: loss ~ D^-b")
    ax = axes[1, 1]
    gains = [fits["per_question_params"].get(q, {"gain": np.nan, "sigma": np.nan}) for q in questions]
    ax.bar(np.arange(len(questions)), [g["gain"] for g in gains], yerr=[2 * g["sigma"] for g in gains], capsize=2,
           color="tab:blue")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(questions)), questions, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"loss({order[0]}) - loss({order[-1]})")
    ax.set_title("per question, full data: gain from the largest model (2 sigma)")
    fig.tight_layout()
    digest = fits.get("results_digest", "")
    _save_figure(fig, out / "scaling", f"results sha256 {digest}")
