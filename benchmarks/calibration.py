"""Calibration of `predict`'s 90% vote-fraction intervals, against the truth the renderer knows.

    python benchmarks/calibration.py [--model zoobot_synthetic] [--galaxies 2000] [--n_samples 5]

Renders synthetic galaxies the model never saw (seed 1; the embedded model was trained on seed 0's), predicts
them through the public ``zoobot_tf.predictions.predict`` (MC dropout, ``--n_samples`` passes) and checks, for
every answer of every question the table gives an interval for (questions volunteers would be asked with
probability >= 0.5), whether the galaxy's own answer probability - the one its simulated votes were drawn
from - lies inside ``[<answer>_lower, <answer>_upper]``. A calibrated 90% interval contains it 90% of the
time. Prints coverage and mean width per question; writes benchmarks/results/calibration.json.

Twice: with the intervals straight from the head ("raw"), and calibrated ("calibrated") by the per-question
concentration scale that ``zoobot-tf train`` now fits on its validation split (``zoobot_tf.evaluate.calibrate``).
For a model trained before that (the embedded one), the scale is fitted here on the votes of ``--galaxies``
other synthetic galaxies (``--fit_seed``), as training would on its validation split: votes only, no truth.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from timing import write_json

REPO = Path(__file__).resolve().parents[1]


def coverage_table(table: pd.DataFrame, truth: np.ndarray, schema) -> pd.DataFrame:
    """Per question: galaxies with an interval, coverage of the true answer probabilities, mean width."""
    rows = []
    for q in schema.questions:
        cols = schema.label_cols[q.start:q.end]
        lower = table[[f"{c}_fraction_lower" for c in cols]].to_numpy(dtype=np.float64)
        upper = table[[f"{c}_fraction_upper" for c in cols]].to_numpy(dtype=np.float64)
        has = np.isfinite(lower).all(axis=1) & np.isfinite(upper).all(axis=1)
        p = truth[:, q.start:q.end][has]
        inside = (lower[has] <= p) & (p <= upper[has])
        rows.append({"question": q.name, "galaxies": int(has.sum()),
                     "coverage": float(inside.mean()) if has.any() else np.nan,
                     "mean_width": float((upper[has] - lower[has]).mean()) if has.any() else np.nan})
    out = pd.DataFrame(rows)
    n = out["galaxies"] * (out["question"].map({q.name: q.end - q.start for q in schema.questions}))
    total = {"question": "all answers", "galaxies": int(out["galaxies"].max()),
             "coverage": float(np.nansum(out["coverage"] * n) / n.sum()),
             "mean_width": float(np.nansum(out["mean_width"] * n) / n.sum())}
    return pd.concat([out, pd.DataFrame([total])], ignore_index=True)


def fitted_scale(model, n: int, seed: int, size: int, tmp: Path) -> list[float]:
    """The scale ``zoobot_tf.evaluate.calibrate`` fits on the votes of ``n`` synthetic galaxies of ``seed``."""
    from zoobot_tf.data import synthetic
    from zoobot_tf.data.sources import CatalogSource
    from zoobot_tf.evaluate import calibrate

    catalog = synthetic.make_synthetic_catalog(n, tmp / f"fit{seed}", stored_size=size, seed=seed,
                                               schema=model.schema)
    source = CatalogSource(catalog.assign(split="val"), model.task)
    return [float(v) for v in calibrate(model, source.dataset("val", 64, size))]


def main(argv=None):
    from zoobot_tf.data import synthetic
    from zoobot_tf.models.resolve import load_model
    from zoobot_tf.predictions import predict

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoobot_synthetic")
    parser.add_argument("--galaxies", type=int, default=2000)
    parser.add_argument("--n_samples", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1, help="synthetic catalog seed (not the model's training seed)")
    parser.add_argument("--fit_seed", type=int, default=2, help="seed of the galaxies whose votes fit the scale "
                        "of a model that has none")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "calibration.json"))
    args = parser.parse_args(argv)
    model = load_model(args.model)
    size = model.load_size  # rendered at the size the model reads
    start = time.time()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        catalog = synthetic.make_synthetic_catalog(args.galaxies, Path(tmp) / "synthetic", stored_size=size,
                                                   seed=args.seed, schema=model.schema)
        truth = synthetic.true_answer_probabilities(args.galaxies, args.seed, size, model.schema)
        own = model.task.concentration_scale
        scale = own or fitted_scale(model, args.galaxies, args.fit_seed, size, Path(tmp))
        for name, s in (("raw", None), ("calibrated", scale)):
            model.task.concentration_scale = s
            skipped = predict(model, catalog[["id_str", "file_loc"]], Path(tmp) / f"{name}.csv",
                              n_samples=args.n_samples, progress=False)
            assert skipped.empty, f"unreadable rendered images: {skipped}"
            table = pd.read_csv(Path(tmp) / f"{name}.csv", dtype={"id_str": str})
            table = table.set_index("id_str").loc[catalog["id_str"]].reset_index()
            results[name] = coverage_table(table, truth, model.schema)
    merged = results["raw"].merge(results["calibrated"].drop(columns="galaxies"), on="question",
                                  suffixes=("_raw", "_calibrated"))
    merged.insert(1, "scale", [*scale, np.nan])
    print(merged.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    write_json({"model": str(args.model), "galaxies": args.galaxies, "n_samples": args.n_samples, "level": 0.9,
                "seed": args.seed, "scale": scale,
                "scale_from": "the model" if own else f"votes of seed {args.fit_seed}",
                "seconds": time.time() - start, "rows": merged.to_dict(orient="records")}, args.out)


if __name__ == "__main__":
    main()
