"""Finetune on real Galaxy Zoo sets with 100 / 300 / 1000 labels: pretrained vs random encoder.

    python benchmarks/finetune_real.py [--data ../shared/data] [--out benchmarks/results/finetune_real.json]
    # the scaling study's real-data view: 50 labels to all, 3 seeds, fitted by `zoobot-tf scaling analyse`
    python benchmarks/finetune_real.py --sizes 50,100,300,1000,all --seeds 0,1,2 \\
        --out benchmarks/scaling_mini/labels.json --csv benchmarks/scaling_mini/labels.csv
    # what `zoobot-tf finetune` does with no tuning flags (the packaged model's card), 1,000 labels
    python benchmarks/finetune_real.py --defaults --pretrained zoobot_sdss_mini --sets gz1_sdss,gz2_kaggle_spiral \
        --sizes 1000 --seeds 0,1,2 --out benchmarks/results/defaults_zoobot_sdss_mini.json
    # the same with GZ1's mirror pairs (`--mirror_pairs clockwise_spiral:anticlockwise_spiral`)
    python benchmarks/finetune_real.py --defaults --mirror_pairs --pretrained zoobot_sdss_mini --sets gz1_sdss \
        --sizes 1000 --seeds 0,1,2 --out benchmarks/results/defaults_zoobot_sdss_mini_mirror_pairs.json

For each set in ../shared/data (gz_decals_rings: ring vs not; gz1_sdss: 6 GZ1 classes; gz2_kaggle_spiral:
binary), a fixed part is held aside as the test set; training sets of 100, 300 and 1000 labels (or all
the rest, where fewer) are drawn from the remainder (20% of each used for early stopping). Each is
finetuned from (a) the embedded encoder pretrained on synthetic Galaxy Zoo votes by zoobot-tf's own
training (saved_models/zoobot_synthetic) and (b) the same architecture randomly initialised, with the
same recipe, through the public ``zoobot_tf.finetune``. Prints a table of test accuracy, balanced accuracy
and test loss (cross-entropy) and writes it as JSON (and CSV with ``--csv``). Seeds draw different labelled
galaxies and initialisations; the test set is the same for all.

Recipe (both encoders): resnet_micro (0.3M parameters) at 64x64 greyscale, the whole encoder trained
(AdamW lr 1e-3, dropout 0.5), classes weighted by inverse frequency, at most 30 epochs with early
stopping (patience 6) on the validation loss. About 5 minutes on 2 cores for the 16 runs.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]

# name: (folder, id column, label column, test fraction, crop fraction, flip)
SETS = {
    "gz_decals_rings": ("gz_decals_rings", "iauname", "ring", None, 0.6, True),  # its own dev/holdout split
    "gz1_sdss": ("gz1_sdss", "dr7objid", "gz1_class_name", 0.25, 0.35, False),  # winding direction: no flips
    "gz2_kaggle_spiral": ("gz2_kaggle_spiral", "GalaxyID", "spiral_flag", 0.3, 0.5, True),
}
SIZES = (100, 300, 1000)
# the classes a mirror image swaps (``--mirror_pairs``), for sets trained without flips
MIRROR_PAIRS = {"gz1_sdss": "clockwise_spiral:anticlockwise_spiral"}


def load_set(data: Path, name: str) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    from zoobot_tf.data.splits import split_by_id

    folder, id_col, label_col, test_frac, _, _ = SETS[name]
    root = data / folder
    df = pd.read_csv(root / "labels.csv", dtype={id_col: str})
    df = pd.DataFrame({"id_str": df[id_col].astype(str), "file_loc": [str(root / f) for f in df["file"]],
                       "label": df[label_col].astype(str), **({"split": df["split"]} if "split" in df else {})})
    if test_frac is None:
        test = df["split"] == "holdout"
    else:
        test = pd.Series(split_by_id(df["id_str"].tolist(), (1 - test_frac, test_frac), ("pool", "test")) == "test")
    return df[~test.to_numpy()].reset_index(drop=True), df[test.to_numpy()].reset_index(drop=True), label_col


# the recipe of the study's real-data view: the whole encoder trained at a from-scratch rate
WHOLE_ENCODER = dict(n_blocks=-1, learning_rate=1e-3, dropout_rate=0.5, batch_size=32, epochs=30, patience=6)


def run_one(pretrained, pool, test, n_labels, crop, flip, seed=0, recipe: dict | None = WHOLE_ENCODER,
            random_kwargs: dict | None = None, mirror_pairs: str | None = None) -> dict:
    """Finetune on ``n_labels`` galaxies drawn from ``pool`` with ``seed`` (20% of them for early stopping),
    through the public ``zoobot_tf.finetune``; score the fixed ``test`` set. ``recipe``: finetuning options
    (None: zoobot-tf's defaults, with only the survey's crop and flip given); ``random_kwargs``: the
    architecture of a randomly initialised encoder (``pretrained`` a backbone name); ``mirror_pairs``: the
    classes a mirror image swaps, for predictions symmetric under mirroring."""
    import zoobot_tf as zt

    chosen = pool.sample(n=min(n_labels, len(pool)), random_state=seed).reset_index(drop=True)
    n_val = max(int(0.2 * len(chosen)), 2)
    catalog = pd.concat([chosen.assign(split=["val"] * n_val + ["train"] * (len(chosen) - n_val)),
                         test.assign(split="test")], ignore_index=True)
    if random_kwargs is None and pretrained == "resnet_micro":
        random_kwargs = dict(image_size=64, channels=1)
    start = time.time()
    result = zt.finetune(pretrained, catalog, label_cols="label", task="classification", seed=seed, verbose=0,
                         crop_fraction=crop, augment={"flip": flip}, mirror_pairs=mirror_pairs, **(recipe or {}),
                         **(random_kwargs or {}))
    total = result.test_table.set_index("question").loc["total"]
    return {"n_train": int(result.sizes["train"]), "n_val": int(result.sizes["val"]), "n_test": int(total["n"]),
            "loss": float(total["loss"]), "seed": seed, "accuracy": float(total["accuracy"]),
            "balanced_accuracy": float(total["balanced_accuracy"]),
            "majority_accuracy": float(total["baseline_accuracy"]), "collapsed": bool(total["collapsed"]),
            "epochs": len(result.history["loss"]), "seconds": time.time() - start}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--pretrained", default=str(REPO / "saved_models" / "zoobot_synthetic"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "finetune_real.json"))
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="label counts, or 'all' (of the pool)")
    parser.add_argument("--seeds", default="0", help="seeds: each draws its own labelled galaxies and initialisation")
    parser.add_argument("--defaults", action="store_true", help="finetune --pretrained with zoobot-tf's defaults (its "
                        "model card), only the survey's crop and flip given, as `zoobot-tf finetune` would; no "
                        "random-init rows")
    parser.add_argument("--mirror_pairs", action="store_true", help="also give each set's mirror pairs "
                        "(MIRROR_PAIRS: GZ1's winding directions), as `zoobot-tf finetune --mirror_pairs` would")
    parser.add_argument("--csv", default=None, help="also write the rows as CSV (e.g. benchmarks/scaling_mini/"
                        "labels.csv, which `zoobot-tf scaling analyse` fits and plots)")
    args = parser.parse_args(argv)
    seeds = [int(v) for v in args.seeds.split(",")]
    data = Path(args.data)
    results = []
    for name in args.sets.split(","):
        if not (data / SETS[name][0]).exists():
            print(f"skipping {name}: {data / SETS[name][0]} not found")
            continue
        pool, test, _ = load_set(data, name)
        sizes = {len(pool) if v == "all" else min(int(v), len(pool)) for v in args.sizes.split(",")}
        encoders = ((f"{Path(args.pretrained).name} (defaults)", args.pretrained),) if args.defaults else (
            ("pretrained (synthetic GZ)", args.pretrained), ("random init", "resnet_micro"))
        for n, seed, (encoder, source) in itertools.product(sorted(sizes), seeds, encoders):
            r = run_one(source, pool, test, n, SETS[name][4], SETS[name][5], seed=seed,
                        recipe=None if args.defaults else WHOLE_ENCODER,
                        mirror_pairs=MIRROR_PAIRS.get(name) if args.mirror_pairs else None)
            r.update(dataset=name, labels=n, encoder=encoder)
            results.append(r)
            print(f"{name:18s} {r['labels']:5d} labels seed {seed} {encoder:26s} acc {r['accuracy']:.3f}  "
                  f"bal.acc {r['balanced_accuracy']:.3f}  (majority {r['majority_accuracy']:.3f}, "
                  f"{r['epochs']} epochs, {r['seconds']:.0f} s)", flush=True)
    table = pd.DataFrame(results)
    print()
    print(table[["dataset", "labels", "encoder", "accuracy", "balanced_accuracy", "majority_accuracy",
                 "n_test"]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    setup = ({"pretrained": args.pretrained, "recipe": "zoobot-tf's defaults (the model's card)"
              + (", the survey's mirror pairs" if args.mirror_pairs else "")} if args.defaults else
             {"backbone": "resnet_micro", "image_size": 64, "channels": 1, "max_epochs": 30, "patience": 6,
              "learning_rate": 1e-3})
    Path(args.out).write_text(json.dumps({"setup": setup,
                                          "results": results}, indent=2))
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(f"\nwrote {args.out}" + (f" and {args.csv}" if args.csv else ""))


if __name__ == "__main__":
    main()
