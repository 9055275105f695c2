"""Finetune on real Galaxy Zoo sets with 100 / 300 / 1000 labels: pretrained vs random encoder.

    python benchmarks/finetune_real.py [--data ../shared/data] [--out benchmarks/results/finetune_real.json]

For each set in ../shared/data (gz_decals_rings: ring vs not; gz1_sdss: 6 GZ1 classes; gz2_kaggle_spiral:
binary), a fixed part is held aside as the test set; training sets of 100, 300 and 1000 labels (or all
the rest, where fewer) are drawn from the remainder (20% of each used for early stopping). Each is
finetuned from (a) the embedded encoder pretrained on synthetic Galaxy Zoo votes by zoobot-tf's own
training (saved_models/zoobot_synthetic) and (b) the same architecture randomly initialised, with the
same recipe. Prints a table of test accuracy and balanced accuracy and writes it as JSON.

Recipe (both encoders): resnet_micro (0.3M parameters) at 64x64 greyscale, the whole encoder trained
(AdamW lr 1e-3, dropout 0.5), classes weighted by inverse frequency, at most 30 epochs with early
stopping (patience 6) on the validation loss. About 5 minutes on 2 cores for the 16 runs.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]

# name: (folder, id column, label column, test fraction, crop fraction, flip)
SETS = {
    "gz_decals_rings": ("gz_decals_rings", "iauname", "ring", None, 0.6, True),  # its own dev/holdout split
    "gz1_sdss": ("gz1_sdss", "dr7objid", "gz1_class_name", 0.25, 0.35, False),  # winding direction: no flips
    "gz2_kaggle_spiral": ("gz2_kaggle_spiral", "GalaxyID", "spiral_flag", 0.3, 0.5, True),
}
SIZES = (100, 300, 1000)


def load_set(data: Path, name: str) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    from zoobot_tf.data.catalogs import split_by_id

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


def balanced_accuracy(y_true, y_pred, n_classes) -> float:
    recalls = [np.mean(y_pred[y_true == c] == c) for c in range(n_classes) if np.any(y_true == c)]
    return float(np.mean(recalls))


def run_one(pretrained, pool, test, n_labels, crop, flip, seed=0) -> dict:
    import keras

    from zoobot_tf.data.sources import encode_labels
    from zoobot_tf.evaluate import predict_batches
    from zoobot_tf.finetuning import Finetuner

    keras.utils.set_random_seed(seed)
    class_names = sorted(pd.unique(pd.concat([pool["label"], test["label"]])))
    chosen = pool.sample(n=min(n_labels, len(pool)), random_state=seed).reset_index(drop=True)
    n_val = max(int(0.2 * len(chosen)), 2)
    train, val = chosen[n_val:], chosen[:n_val]
    kwargs = dict(image_size=64, channels=1) if pretrained == "resnet_micro" else {}
    tuner = Finetuner(pretrained, task="classification", class_names=class_names, n_blocks=-1, learning_rate=1e-3,
                      crop_fraction=crop, augment={"flip": flip}, batch_size=32, **kwargs)
    start = time.time()
    from zoobot_tf.finetuning import balanced_class_weight

    train_y, _ = encode_labels(train["label"], class_names)
    weights = balanced_class_weight(train_y, len(class_names))  # the sets are imbalanced (up to 70% one class)
    hist = tuner.model.fit(tuner.dataset(train, "label", training=True, seed=seed, class_weight=weights),
                           validation_data=tuner.dataset(val, "label"), epochs=30,
                           callbacks=tuner.callbacks(patience=6), verbose=0)
    probs, labels = predict_batches(tuner.model, tuner.dataset(test, "label"))
    pred = probs.argmax(1)
    y, _ = encode_labels(test["label"], class_names)
    return {"n_train": len(train), "n_val": len(val), "n_test": len(test),
            "accuracy": float(np.mean(pred == y)), "balanced_accuracy": balanced_accuracy(y, pred, len(class_names)),
            "majority_accuracy": float(np.mean(y == np.bincount(y).argmax())),
            "epochs": len(hist.history["loss"]), "seconds": time.time() - start}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--pretrained", default=str(REPO / "saved_models" / "zoobot_synthetic"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "finetune_real.json"))
    parser.add_argument("--sets", default=",".join(SETS))
    args = parser.parse_args(argv)
    data = Path(args.data)
    results = []
    for name in args.sets.split(","):
        if not (data / SETS[name][0]).exists():
            print(f"skipping {name}: {data / SETS[name][0]} not found")
            continue
        pool, test, _ = load_set(data, name)
        for n in sorted({min(size, len(pool)) for size in SIZES}):  # "or all, where fewer"
            for encoder, source in (("pretrained (synthetic GZ)", args.pretrained), ("random init", "resnet_micro")):
                r = run_one(source, pool, test, n, SETS[name][4], SETS[name][5])
                r.update(dataset=name, labels=min(n, len(pool)), encoder=encoder)
                results.append(r)
                print(f"{name:18s} {r['labels']:5d} labels  {encoder:26s} acc {r['accuracy']:.3f}  "
                      f"bal.acc {r['balanced_accuracy']:.3f}  (majority {r['majority_accuracy']:.3f}, "
                      f"{r['epochs']} epochs, {r['seconds']:.0f} s)", flush=True)
    table = pd.DataFrame(results)
    print()
    print(table[["dataset", "labels", "encoder", "accuracy", "balanced_accuracy", "majority_accuracy",
                 "n_test"]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"setup": {"backbone": "resnet_micro", "image_size": 64, "channels": 1,
                                                     "max_epochs": 30, "patience": 6, "learning_rate": 1e-3},
                                          "results": results}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
