"""Two finetuning variants tried against `zoobot-tf finetune`'s defaults, on validation galaxies only.

    python benchmarks/finetune_variants.py --variant ensemble --seeds 0,1,2,3,4,5,6
    python benchmarks/finetune_variants.py --variant logit_adjust --sets gz1_sdss --seeds 0,1,2,3

On the held-out quarter of each set's pool (benchmarks/embedded_card.py; no test split is read), 1,000 labels
drawn per seed from the rest, ``zoobot_tf.finetune`` from the packaged ``zoobot_sdss_mini`` with its card and
only the survey's crop and flip:

* ``ensemble``: K finetunings on the same labels (initialisation and augmentation seeds ``seed + 100 k``),
  their class probabilities averaged (arithmetic and geometric mean), against each member alone;
* ``logit_adjust``: trained without class weights, the balanced decision taken after training as
  ``argmax log p - tau log prior`` (the training labels' class frequencies; Menon et al. 2021) for tau 0,
  0.5 and 1, against the default (classes weighted by inverse frequency: the ``ensemble`` rows' first member).

Balanced accuracy per seed is printed and written as JSON (benchmarks/results/finetune_variants.json).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from embedded_card import split_pool  # noqa: E402
from finetune_real import SETS  # noqa: E402


def balanced_accuracy(task, labels: np.ndarray, log_scores: np.ndarray) -> float:
    """The task's own balanced accuracy (``task.evaluate``) of class scores given as logs."""
    scores = np.exp(log_scores - log_scores.max(axis=1, keepdims=True))
    table = task.evaluate(labels, scores / scores.sum(axis=1, keepdims=True)).set_index("question")
    return float(table.loc["total", "balanced_accuracy"])


def holdout_predictions(model, catalog: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities, labels) of the catalog's "test" rows (the held-out quarter), and its training labels."""
    from zoobot_tf.data.sources import CatalogSource
    from zoobot_tf.evaluate import predict_batches

    source = CatalogSource(catalog, model.task, "label")
    probabilities, labels = predict_batches(model, source.dataset("test", 64, model.load_size))
    return probabilities, labels.astype(int).ravel(), source.labels("train").astype(int).ravel()


def main(argv=None):
    import zoobot_tf as zt

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("ZOOBOT_TF_SHARED_DATA", str(HERE.parents[1] / "shared" / "data")))
    p.add_argument("--variant", choices=("ensemble", "logit_adjust"), required=True)
    p.add_argument("--sets", default="gz1_sdss,gz2_kaggle_spiral")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--members", type=int, default=3, help="K, for --variant ensemble")
    p.add_argument("--pretrained", default="zoobot_sdss_mini")
    p.add_argument("--out", default=str(HERE / "results" / "finetune_variants.json"))
    args = p.parse_args(argv)
    rows = []
    for name in args.sets.split(","):
        crop, flip = SETS[name][4], SETS[name][5]
        rest, holdout = split_pool(Path(args.data), name)
        for seed in map(int, args.seeds.split(",")):
            chosen = rest.sample(n=min(1000, len(rest)), random_state=seed).reset_index(drop=True)
            n_val = int(0.2 * len(chosen))
            catalog = pd.concat([chosen.assign(split=["val"] * n_val + ["train"] * (len(chosen) - n_val)),
                                 holdout.assign(split="test")], ignore_index=True)
            runs = range(args.members) if args.variant == "ensemble" else [0]
            members = []
            for k in runs:
                start = time.time()
                result = zt.finetune(args.pretrained, catalog, label_cols="label", seed=seed + 100 * k, verbose=0,
                                     crop_fraction=crop, augment={"flip": flip},
                                     balance_classes=args.variant == "ensemble")
                probabilities, labels, train_labels = holdout_predictions(result.model, catalog)
                row = {"variant": args.variant, "set": name, "seed": seed, "member": k,
                       "epochs": len(result.history["loss"]), "seconds": time.time() - start}
                score = functools.partial(balanced_accuracy, result.model.task, labels)
                log_p = np.log(np.clip(probabilities, 1e-12, 1.0))
                if args.variant == "ensemble":
                    members.append(probabilities)
                    row.update(alone=score(log_p), mean_of_members=score(np.log(np.mean(members, 0))),
                               geometric_mean=score(np.mean([np.log(np.clip(m, 1e-12, 1.0)) for m in members], 0)))
                else:
                    prior = np.bincount(train_labels, minlength=probabilities.shape[1]) + 1.0
                    for tau in (0.0, 0.5, 1.0):
                        row[f"tau_{tau}"] = score(log_p - tau * np.log(prior / prior.sum()))
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = Path(args.out)
    done = json.loads(out.read_text()) if out.exists() else {"rows": []}
    done["rows"] = [r for r in done["rows"] if r["variant"] != args.variant] + rows
    out.write_text(json.dumps(done, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
