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

    from zoobot_tf.training import TrainConfig, train

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


def fit_power_law(x, y, sigma=None, p0=None) -> dict:
    """Least-squares fit of ``y = a x^-b + c``; returns a, b, c with 1-sigma uncertainties."""
    from scipy.optimize import curve_fit

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(np.unique(x)) < 3:
        raise ValueError("A power law with an offset needs at least 3 distinct x values.")
    if p0 is None:
        c0 = y.min() - 0.1 * (y.max() - y.min())
        slope = np.polyfit(np.log(x), np.log(np.maximum(y - c0, 1e-9)), 1)[0]
        p0 = (np.exp(np.log(np.maximum(y - c0, 1e-9)).mean() - slope * np.log(x).mean()), max(-slope, 1e-3), c0)
    sigma = None if sigma is None else np.maximum(np.asarray(sigma, dtype=np.float64), 1e-6)
    params, cov = curve_fit(power_law, x, y, p0=p0, sigma=sigma, absolute_sigma=sigma is not None, maxfev=200000,
                            bounds=([0, 0, -np.inf], [np.inf, 5, np.inf]))
    err = np.sqrt(np.clip(np.diag(cov), 0, None))
    return {"a": params[0], "b": params[1], "c": params[2], "a_err": err[0], "b_err": err[1], "c_err": err[2]}


def _grouped(results: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    g = results.groupby(by)[value]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1).fillna(0.0), "n": g.count()}).reset_index()


def analyse(results: pd.DataFrame, output_dir: str | Path | None = None) -> dict:
    """Fit data-scaling laws per architecture (total and per question) and the parameter law; plot."""
    if results.empty:
        raise ValueError("No results to analyse.")
    fits: dict = {"data": {}, "params": None, "per_question": {}}
    questions = [c[len("loss_"):] for c in results.columns if c.startswith("loss_")]
    for arch, part in results.groupby("architecture"):
        stats = _grouped(part, ["n_train"], "test_loss")
        # uncertainty of a mean over seeds; a floor avoids infinite weights when seeds agree exactly
        sigma = np.maximum(stats["std"] / np.sqrt(np.maximum(stats["n"], 1)), 0.01)
        try:
            fits["data"][arch] = {**fit_power_law(stats["n_train"], stats["mean"], sigma),
                                  "params": int(part["params"].iloc[0])}
        except (ValueError, RuntimeError) as e:
            fits["data"][arch] = {"error": str(e)}
        fits["per_question"][arch] = {}
        for q in questions:
            qs = _grouped(part, ["n_train"], f"loss_{q}")
            try:
                fits["per_question"][arch][q] = fit_power_law(qs["n_train"], qs["mean"])["b"]
            except (ValueError, RuntimeError):
                fits["per_question"][arch][q] = math.nan
    largest = results[results["fraction"] == results["fraction"].max()]
    by_params = _grouped(largest, ["params"], "test_loss")
    if len(by_params) >= 3:
        try:
            fits["params"] = fit_power_law(by_params["params"], by_params["mean"],
                                           np.maximum(by_params["std"] / np.sqrt(by_params["n"]), 0.01))
        except (ValueError, RuntimeError) as e:
            fits["params"] = {"error": str(e)}
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        plot(results, fits, out)
        (out / "fits.json").write_text(json.dumps(fits, indent=2, default=float))
    return fits


def exponent_table(fits: dict) -> str:
    lines = [f"{'architecture':>14s} {'params':>9s} {'b (data exponent)':>20s} {'a':>10s} {'c (floor)':>12s}"]
    for arch, f in sorted(fits["data"].items(), key=lambda kv: kv[1].get("params", 0)):
        if "error" in f:
            lines.append(f"{arch:>14s}  fit failed: {f['error']}")
            continue
        lines.append(f"{arch:>14s} {f['params'] / 1e6:8.2f}M {f['b']:10.3f} +- {f['b_err']:.3f} "
                     f"{f['a']:10.2f} {f['c']:8.2f} +- {f['c_err']:.2f}")
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
        stats = _grouped(part, ["n_train"], "test_loss")
        label = f"{arch} ({part['params'].iloc[0] / 1e6:.2f}M)"
        ax.errorbar(stats["n_train"], stats["mean"], yerr=stats["std"], fmt="o", color=colour, label=label, capsize=2)
        f = fits["data"].get(arch, {})
        if "b" in f:
            xs = np.geomspace(stats["n_train"].min(), stats["n_train"].max(), 100)
            ax.plot(xs, power_law(xs, f["a"], f["b"], f["c"]), color=colour,
                    label=f"  fit b = {f['b']:.2f} +- {f['b_err']:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training galaxies (labels)")
    ax.set_ylabel("test loss (Dirichlet-multinomial NLL per galaxy)")
    ax.legend(fontsize=7)
    ax.set_title("loss vs data")
    ax = axes[1]
    for frac, part in results.groupby("fraction"):
        stats = _grouped(part, ["params"], "test_loss")
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
