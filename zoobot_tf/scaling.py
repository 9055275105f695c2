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


def load_grid(path_or_dict) -> dict:
    if isinstance(path_or_dict, dict):
        grid = dict(path_or_dict)
    else:
        path = Path(path_or_dict)
        if not path.exists():
            raise FileNotFoundError(f"Grid file not found: {path}")
        if path.suffix in (".yaml", ".yml"):
            import yaml

            grid = yaml.safe_load(path.read_text())
        else:
            grid = json.loads(path.read_text())
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


def _append(output_dir: Path, row: dict) -> None:
    path = output_dir / RESULTS
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / (RESULTS + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several jobs may finish at once
        existing = pd.read_csv(path) if path.exists() else pd.DataFrame()
        table = pd.concat([existing, pd.DataFrame([row])], ignore_index=True)
        tmp = path.with_suffix(".tmp")
        table.to_csv(tmp, index=False)
        os.replace(tmp, path)


def run_point(grid: dict, point: dict, progress: bool = False) -> dict | None:
    """Train and evaluate one grid point; append its row. Returns the row (None if already done)."""
    import keras

    from zoobot_tf.config import TrainConfig
    from zoobot_tf.training import train

    out = Path(grid["output_dir"])
    done = read_results(out)
    if len(done) and _key(point) in {_key(r) for _, r in done.iterrows()}:
        return None
    arch = grid["architectures"][point["architecture"]]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    train_kwargs = {k: v for k, v in {**grid.get("train", {}), **arch}.items() if k in fields}
    unknown = (set(grid.get("train", {})) | set(arch)) - fields
    if unknown:
        raise ValueError(f"Unknown training options in the grid: {sorted(unknown)}")
    run_dir = out / "runs" / f"{point['architecture']}_f{point['fraction']:.5f}_s{point['seed']}"
    config = TrainConfig(output_dir=str(run_dir), shards=grid.get("shards"), train_fraction=point["fraction"],
                         seed=point["seed"], export=False, progress=progress,
                         **{k: v for k, v in train_kwargs.items() if k not in ("output_dir", "shards")})
    keras.backend.clear_session()
    result = train(config)
    m = result.metrics.set_index("question")
    row = {**point, "backbone": config.backbone, "params": int(result.model.count_params()),
           "n_train": result.n_train, "epochs": len(result.history), "seconds": result.seconds,
           "test_loss": float(m.loc["total", "loss"]), "baseline_loss": float(m.loc["total", "baseline_loss"])}
    for q in m.index:
        if q != "total":
            row[f"loss_{q}"] = float(m.loc[q, "loss"])
    _append(out, row)
    return row


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

    Constrained to what a loss curve can be: a >= 0, 0 <= b <= B_MAX, 0 <= c <= min(y) (the floor is
    below every observed loss). x is scaled by its geometric mean inside the fit so that a is of the
    order of the losses (the raw problem is badly conditioned: a ~ 1e4 for b ~ 1); several starting
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
    c_max = float(y.min())
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
    err = np.sqrt(np.clip(np.diag(cov), 0, None))
    # back to the original units of x: a (x/x0)^-b = (a x0^b) x^-b
    a_orig = a * x0 ** b
    a_err = a_orig * np.hypot(err[0] / max(a, 1e-300), np.log(x0) * err[1])
    tol = 1e-6
    at_bound = [n for n, v, lo, hi in zip("abc", (a, b, c), lower, upper)
                if v - lo <= tol * max(1.0, abs(lo)) or (np.isfinite(hi) and hi - v <= tol * max(1.0, abs(hi)))]
    return {"a": float(a_orig), "b": float(b), "c": float(c), "a_err": float(a_err), "b_err": float(err[1]),
            "c_err": float(err[2]), "chi2": chi2, "dof": int(len(x) - 3), "at_bound": at_bound}


def _grouped(results: pd.DataFrame, by: str, value: str) -> pd.DataFrame:
    """Mean, standard deviation and count of ``value`` over seeds, per ``by`` group, with the mean
    training-set size of the group (seeds draw different shard subsets, so sizes differ slightly).

    ``sigma`` is the uncertainty of each mean: the seed-to-seed variance pooled over all groups, over
    sqrt(count). With 2 seeds a per-point standard deviation is itself very noisy (and ~0 by chance
    would pin a fit to that point); pooling gives one stable noise estimate per curve.
    """
    g = results.groupby(by)
    stats = pd.DataFrame({"n_train": g["n_train"].mean(), "params": g["params"].mean(), "mean": g[value].mean(),
                          "std": g[value].std(ddof=1).fillna(0.0), "n": g[value].count()}).reset_index(drop=True)
    dof = (stats["n"] - 1).clip(lower=0)
    pooled = float(np.sqrt((stats["std"] ** 2 * dof).sum() / dof.sum())) if dof.sum() > 0 else 0.0
    stats["sigma"] = max(pooled, 1e-3) / np.sqrt(stats["n"].clip(lower=1))
    return stats


def analyse(results: pd.DataFrame, output_dir: str | Path | None = None) -> dict:
    """Fit data-scaling laws per architecture (total and per question) and the parameter law; plot."""
    if results.empty:
        raise ValueError("No results to analyse.")
    fits: dict = {"data": {}, "params": None, "per_question": {}}
    questions = [c[len("loss_"):] for c in results.columns if c.startswith("loss_")]
    for arch, part in results.groupby("architecture"):
        stats = _grouped(part, "fraction", "test_loss")
        sigma = stats["sigma"]
        try:
            fits["data"][arch] = {**fit_power_law(stats["n_train"], stats["mean"], sigma),
                                  "params": int(part["params"].iloc[0])}
        except (ValueError, RuntimeError) as e:
            fits["data"][arch] = {"error": str(e)}
        fits["per_question"][arch] = {}
        for q in questions:
            qs = _grouped(part, "fraction", f"loss_{q}")
            try:
                fits["per_question"][arch][q] = fit_power_law(qs["n_train"], qs["mean"])["b"]
            except (ValueError, RuntimeError):
                fits["per_question"][arch][q] = math.nan
    fits["data_exponent_combined"] = combined_exponent(fits["data"])
    largest = results[results["fraction"] == results["fraction"].max()]
    by_params = _grouped(largest, "architecture", "test_loss")
    if len(by_params) >= 3:
        try:
            fits["params"] = fit_power_law(by_params["params"], by_params["mean"], by_params["sigma"])
        except (ValueError, RuntimeError) as e:
            fits["params"] = {"error": str(e)}
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        plot(results, fits, out)
        (out / "fits.json").write_text(json.dumps(fits, indent=2, default=float))
    return fits


def combined_exponent(data_fits: dict) -> dict | None:
    """Inverse-variance weighted mean of the data exponents b over architectures (fits whose b is on a
    bound or has no finite uncertainty are left out), with its 1-sigma uncertainty."""
    usable = [f for f in data_fits.values() if "b" in f and "b" not in f.get("at_bound", [])
              and np.isfinite(f["b_err"]) and f["b_err"] > 0]
    if not usable:
        return None
    w = np.array([1 / f["b_err"] ** 2 for f in usable])
    b = np.array([f["b"] for f in usable])
    return {"b": float((w * b).sum() / w.sum()), "b_err": float(1 / np.sqrt(w.sum())), "n_fits": len(usable)}


def exponent_table(fits: dict) -> str:
    lines = [f"{'architecture':>14s} {'params':>9s} {'b (data exponent)':>20s} {'a':>12s} {'c (floor)':>16s}  note"]
    for arch, f in sorted(fits["data"].items(), key=lambda kv: kv[1].get("params", 0)):
        if "error" in f:
            lines.append(f"{arch:>14s}  fit failed: {f['error']}")
            continue
        note = f"at bound: {', '.join(f['at_bound'])}" if f.get("at_bound") else ""
        lines.append(f"{arch:>14s} {f['params'] / 1e6:8.2f}M {f['b']:10.3f} +- {f['b_err']:.3f} "
                     f"{f['a']:12.4g} {f['c']:8.2f} +- {f['c_err']:.2f}  {note}")
    combined = fits.get("data_exponent_combined")
    if combined:
        lines.append(f"{'combined':>14s} {'':>9s} {combined['b']:10.3f} +- {combined['b_err']:.3f}  "
                     f"(inverse-variance mean over {combined['n_fits']} architectures)")
    return "\n".join(lines)


def plot(results: pd.DataFrame, fits: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    colours = plt.cm.viridis(np.linspace(0, 0.9, results["architecture"].nunique()))
    order = results.groupby("architecture")["params"].first().sort_values().index
    for colour, arch in zip(colours, order):
        part = results[results["architecture"] == arch]
        stats = _grouped(part, "fraction", "test_loss")
        f = fits["data"].get(arch, {})
        label = f"{arch} ({part['params'].iloc[0] / 1e6:.2f}M)"
        if "b" in f:
            label += f": b = {f['b']:.2f} $\\pm$ {f['b_err']:.2f}"
            xs = np.geomspace(stats["n_train"].min(), stats["n_train"].max(), 100)
            ax.plot(xs, power_law(xs, f["a"], f["b"], f["c"]), color=colour)
        ax.errorbar(stats["n_train"], stats["mean"], yerr=stats["std"], fmt="o", color=colour, label=label, capsize=2)
    if "baseline_loss" in results:
        ax.axhline(results["baseline_loss"].mean(), color="grey", ls=":", lw=1, label="no-image baseline")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("training galaxies (labels)")
    ax.set_ylabel("test loss (Dirichlet-multinomial NLL per galaxy)")
    ax.legend(fontsize=7)
    ax.set_title("loss vs data")
    ax = axes[1]
    for frac, part in results.groupby("fraction"):
        stats = _grouped(part, "architecture", "test_loss").sort_values("params")
        n = int(part["n_train"].mean())
        ax.errorbar(stats["params"], stats["mean"], yerr=stats["std"], fmt="o-", capsize=2, label=f"{n} galaxies")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("test loss")
    ax.legend(fontsize=7)
    ax.set_title("loss vs model size")
    fig.tight_layout()
    for suffix in ("png", "pdf"):
        fig.savefig(out / f"scaling.{suffix}", dpi=120)
    plt.close(fig)
