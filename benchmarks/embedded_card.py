"""Choose the embedded model's recommended finetuning settings (its card) on real galaxies, on validation
galaxies only.

    python benchmarks/embedded_card.py [--seeds 0,1] [--write]

For GZ1 SDSS (6 classes) and the Kaggle GZ2 spiral flag: a quarter of each set's labelled pool (the
galaxies benchmarks/finetune_real.py may train on; its test split is never read here) is held out for
scoring; 1,000 labels are drawn from the rest per seed, and ``zoobot_tf.finetune`` runs from the packaged
encoder with each candidate card, everything else left to its defaults but the survey's crop and flip.
Prints the balanced accuracy per set, card and seed, writes benchmarks/results/embedded_card.json and, with
``--write``, puts the card with the best mean balanced accuracy into saved_models/zoobot_synthetic
(``zoobot_tf.export.update_export``: the weights are not touched).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from finetune_real import SETS, load_set, run_one  # noqa: E402

CARDS = {"none (Zoobot's defaults: head only, lr 1e-4)": {},
         "whole encoder, lr 1e-3": {"n_blocks": -1, "learning_rate": 1e-3}}
HOLDOUT, HOLDOUT_SEED = 0.25, 123


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("ZOOBOT_TF_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--sets", default="gz1_sdss,gz2_kaggle_spiral")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--labels", type=int, default=1000)
    p.add_argument("--out", default=str(HERE / "results" / "embedded_card.json"))
    p.add_argument("--write", action="store_true", help="write the best card into saved_models/zoobot_synthetic")
    args = p.parse_args(argv)
    rows = []
    for name in args.sets.split(","):
        pool, _test, _ = load_set(Path(args.data), name)  # the test split stays unread
        holdout = pool.sample(frac=HOLDOUT, random_state=HOLDOUT_SEED)
        rest = pool.drop(holdout.index)
        for seed in map(int, args.seeds.split(",")):
            for card, settings in CARDS.items():
                r = run_one("zoobot_synthetic", rest, holdout, args.labels, SETS[name][4], SETS[name][5], seed=seed,
                            recipe=settings or None)
                rows.append({"set": name, "card": card, **r})
                print(f"{name:18s} seed {seed}  {card:45s} balanced accuracy {r['balanced_accuracy']:.3f} "
                      f"({r['epochs']} epochs, {r['seconds']:.0f} s)", flush=True)
    table = pd.DataFrame(rows).pivot_table(index="card", columns="set", values="balanced_accuracy", aggfunc="mean")
    table["mean"] = table.mean(axis=1)
    print("\nmean balanced accuracy on the held-out part of each pool:\n" + table.round(3).to_string())
    best = table["mean"].idxmax()
    Path(args.out).write_text(json.dumps({"labels": args.labels, "holdout": HOLDOUT, "cards": CARDS, "best": best,
                                          "rows": rows}, indent=1) + "\n")
    print(f"best: {best}; wrote {args.out}")
    if args.write:
        from zoobot_tf.export import update_export

        card = CARDS[best] or None
        update_export(REPO / "saved_models" / "zoobot_synthetic", config={"finetuning": card},
                      metadata={"finetuning": card})
        print(f"card {card} written into saved_models/zoobot_synthetic")


if __name__ == "__main__":
    main()
