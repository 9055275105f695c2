"""Finetuning a new decision tree: the vote head started at random against started at the training votes' prior.

    python benchmarks/vote_head_start.py [--model zoobot_synthetic] [--labels 200 800] [--seeds 3]

Renders 3,000 synthetic galaxies (seed 5; the embedded model was trained on seed 0's) with simulated GZ DECaLS
DR8 votes, a head the encoder never had. For each label count and seed: that many training galaxies and a
quarter as many validation galaxies drawn from the first 2,000, scored on the last 1,000 (never used to choose
anything), through the public ``zoobot_tf.finetune(..., task="votes")`` with its defaults. Twice: with the new
head's Dense layer as Keras initialises it (every concentration ~51 whatever the votes: what ``finetune`` did
before), and started at the training votes' constant Dirichlet (``Task.finetune_from_prior``, now the default
for vote heads). Prints the mean test loss per galaxy (Dirichlet-multinomial NLL summed over questions) against
the no-image baseline's, as the finetuning guide's table; writes benchmarks/results/vote_head_start.json.
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
SCHEMA = "gz_decals_dr8"


def split(catalog: pd.DataFrame, n_labels: int, seed: int) -> pd.DataFrame:
    """``n_labels`` train and ``n_labels // 4`` val galaxies from the first 2,000 (by seed); the rest: test."""
    pool = catalog[:2000].sample(frac=1, random_state=seed).reset_index(drop=True)
    n_val = n_labels // 4
    return pd.concat([pool[:n_labels].assign(split="train"), pool[n_labels:n_labels + n_val].assign(split="val"),
                      catalog[2000:].assign(split="test")], ignore_index=True)


def markdown_table(rows: list[dict]) -> str:
    """The finetuning guide's table: per label count, the mean +- std test loss from each start and the baseline."""
    by = {(r["labels"], r["head"]): r for r in rows}
    lines = ["| labels | head started at the prior | head started at random | no-image baseline |", "|---|---|---|---|"]
    for labels in sorted({n for n, _ in by}):
        cells = [f"{by[labels, head]['test_loss']:.2f} +- {by[labels, head]['test_loss_std']:.2f}"
                 for head in ("prior", "random")]
        lines.append(f"| {labels} | {cells[0]} | {cells[1]} | {by[labels, 'prior']['baseline_loss']:.2f} |")
    return "\n".join(lines)


def one_run(model: str, catalog: pd.DataFrame, from_prior: bool, seed: int) -> dict:
    import zoobot_tf as zt
    from zoobot_tf.tasks.votes import VoteTask

    default = VoteTask.finetune_from_prior
    VoteTask.finetune_from_prior = from_prior
    try:
        start = time.time()
        result = zt.finetune(model, catalog, task="votes", schema=SCHEMA, seed=seed, verbose=0)
    finally:
        VoteTask.finetune_from_prior = default
    total = result.test_table.set_index("question").loc["total"]
    return {"test_loss": float(total["loss"]), "baseline_loss": float(total["baseline_loss"]),
            "epochs": len(result.history["loss"]), "seconds": time.time() - start}


def main(argv=None):
    from zoobot_tf.data.synthetic import make_synthetic_catalog

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoobot_synthetic")
    parser.add_argument("--labels", type=int, nargs="+", default=[200, 800])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "vote_head_start.json"))
    args = parser.parse_args(argv)
    start = time.time()
    runs, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        catalog = make_synthetic_catalog(3000, Path(tmp) / "synthetic", seed=5, schema=SCHEMA, progress=False)
        for n_labels in args.labels:
            for from_prior in (False, True):
                head, scores = "prior" if from_prior else "random", []
                for seed in range(args.seeds):
                    run = one_run(args.model, split(catalog, n_labels, seed), from_prior, seed)
                    runs.append({"labels": n_labels, "head": head, "seed": seed, **run})
                    scores.append(run)
                    print(runs[-1], flush=True)
                loss = [r["test_loss"] for r in scores]
                rows.append({"labels": n_labels, "head": head,
                             "test_loss": float(np.mean(loss)), "test_loss_std": float(np.std(loss, ddof=1)),
                             "baseline_loss": float(np.mean([r["baseline_loss"] for r in scores])),
                             "epochs": float(np.mean([r["epochs"] for r in scores]))})
    print(markdown_table(rows))
    write_json({"model": str(args.model), "schema": SCHEMA, "galaxies": 3000, "test_galaxies": 1000,
                "seeds": args.seeds, "seconds": time.time() - start, "rows": rows, "runs": runs}, args.out)


if __name__ == "__main__":
    main()
