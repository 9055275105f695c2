"""Finetuning variants tried against `zoobot-tf finetune`'s defaults, on validation galaxies only.

    python benchmarks/finetune_variants.py --variant ensemble --seeds 0,1,2,3,4,5,6
    python benchmarks/finetune_variants.py --variant logit_adjust --sets gz1_sdss --seeds 0,1,2,3
    python benchmarks/finetune_variants.py --variant pretrained_head --sets gz1_sdss --seeds 0,1,2,3
    python benchmarks/finetune_variants.py --variant mirrored --sets gz1_sdss --seeds 0,1,2,3
    python benchmarks/finetune_variants.py --variant mirror_tta --sets gz1_sdss --seeds 0,1,2,3
    python benchmarks/finetune_variants.py --variant symmetric --sets gz1_sdss,gz2_kaggle_spiral,gz_decals_rings
    python benchmarks/finetune_variants.py --variant cosine --sets gz1_sdss --seeds 0,1,2,3
    python benchmarks/finetune_variants.py --variant label_smoothing --sets gz1_sdss --seeds 0,1,2,3

On the held-out quarter of each set's pool (benchmarks/embedded_card.py; no test split is read), 1,000 labels
drawn per seed from the rest, ``zoobot_tf.finetune`` from the packaged ``zoobot_sdss_mini`` with its card and
only the survey's crop and flip:

* ``ensemble``: K finetunings on the same labels (initialisation and augmentation seeds ``seed + 100 k``),
  their class probabilities averaged (arithmetic and geometric mean), against each member alone;
* ``logit_adjust``: trained without class weights, the balanced decision taken after training as
  ``argmax log p - tau log prior`` (the training labels' class frequencies; Menon et al. 2021) for tau 0,
  0.5 and 1, against the default (classes weighted by inverse frequency: the ``ensemble`` rows' first member);
* ``pretrained_head``: the new head starts as the pretrained model's own head, its classes matched by name
  (``zoobot_sdss_mini`` already predicts GZ1's six classes), not as Keras initialises it; also the
  pretrained model's predictions before any finetuning (``zero_shot``);
* ``mirrored``: every training galaxy also mirrored, with the two spiral directions' labels swapped (GZ1,
  whose winding direction rules out plain flips; the validation galaxies stay as they are).
* ``mirror_tta``: the default finetuning, its held-out predictions averaged with those of the mirrored images
  (spiral directions' probabilities swapped): a prediction symmetric under mirroring, as GZ1's classes are;
* ``symmetric``: the library's symmetric predictions (``Zoobot.symmetric``: each image and its exact mirror,
  the decoded pixels flipped), GZ1 with ``mirror_pairs`` (its spiral directions), sets trained with flips with
  their classes unchanged; against the same model's predictions from the image alone, and averaged over the
  image turned by quarter turns too (``with_quarter_turns``: the dihedral group of the pixel grid);
* ``cosine``: Zoobot's cosine learning-rate decay (to 1% at 100 epochs, as its ``cosine_schedule``) after a
  2-epoch linear warmup, instead of the card's constant rate;
* ``label_smoothing``: cross-entropy against labels smoothed by 0.1 (PyTorch's definition, as Zoobot's
  ``label_smoothing``).

Balanced accuracy per seed is printed and written as JSON (benchmarks/results/finetune_variants.json).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from embedded_card import split_pool  # noqa: E402
from finetune_real import MIRROR_PAIRS, SETS  # noqa: E402


def balanced_accuracy(task, labels: np.ndarray, log_scores: np.ndarray) -> float:
    """The task's own balanced accuracy (``task.evaluate``) of class scores given as logs."""
    scores = np.exp(log_scores - log_scores.max(axis=1, keepdims=True))
    table = task.evaluate(labels, scores / scores.sum(axis=1, keepdims=True)).set_index("question")
    return float(table.loc["total", "balanced_accuracy"])


def holdout_predictions(model, catalog: pd.DataFrame, fn=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities, labels) of the catalog's "test" rows (the held-out quarter), and its training labels
    (``fn``: images -> probabilities, instead of the model's own predictions)."""
    from zoobot_tf.data.sources import CatalogSource
    from zoobot_tf.evaluate import predict_batches

    source = CatalogSource(catalog, model.task, "label")
    probabilities, labels = predict_batches(model, source.dataset("test", 64, model.load_size), fn)
    return probabilities, labels.astype(int).ravel(), source.labels("train").astype(int).ravel()


@contextlib.contextmanager
def pretrained_head(pretrained: str):
    """Inside: every ``Finetuner`` starts its head as ``pretrained``'s, class by class (a benchmark-only hook on
    the public class; the library's finetuning always starts a new head)."""
    from zoobot_tf import finetuning
    from zoobot_tf.models.resolve import load_model

    source = load_model(pretrained, compile=False)
    kernel, bias = source.get_layer("head_dense").get_weights()
    build = finetuning.Finetuner.__init__

    def init(self, *args, **kwargs):
        build(self, *args, **kwargs)
        order = [source.task.class_names.index(c) for c in self.task.class_names]
        self.model.get_layer("head_dense").set_weights([kernel[:, order], bias[order]])

    finetuning.Finetuner.__init__ = init
    try:
        yield
    finally:
        finetuning.Finetuner.__init__ = build


# variants that are finetuning options of zoobot_tf.finetune, and their values
OPTIONS = {"cosine": dict(cosine_schedule=True, warmup_epochs=2), "label_smoothing": dict(label_smoothing=0.1)}

# GZ1's classes a mirror image swaps, both ways (for the benchmark's own mirrored copies)
CLOCKWISE, ANTICLOCKWISE = MIRROR_PAIRS["gz1_sdss"].split(":")
MIRRORED_LABELS = {CLOCKWISE: ANTICLOCKWISE, ANTICLOCKWISE: CLOCKWISE}


def quarter_turns(model):
    """images -> the model's (symmetric) probabilities averaged over the images turned by 0, 90, 180 and 270
    degrees (exact on the pixel grid; every morphology label is rotation-invariant)."""
    import tensorflow as tf

    return tf.function(lambda x: tf.add_n([model(tf.image.rot90(x, k), training=False) for k in range(4)]) / 4)


def one_view(model):
    """images -> the model's probabilities from the image alone (a symmetric model's without its mirror image)."""
    import tensorflow as tf
    from zoobot_tf.models.traced import embedding_fn

    embed = embedding_fn(model)
    return tf.function(lambda x: model.apply_head(embed(x)))


def with_mirrored(catalog: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """The catalog plus a mirrored copy of each "train" row, spiral directions swapped
    (:func:`zoobot_tf.data.catalogs.mirrored_rows`, as the pretraining's GZ1 stage made them)."""
    from zoobot_tf.data.catalogs import mirrored_rows

    train = catalog[catalog["split"] == "train"]
    return pd.concat([catalog, mirrored_rows(train, folder, MIRRORED_LABELS)], ignore_index=True)


def mirror_averaged(model, catalog: pd.DataFrame, probabilities: np.ndarray, folder: Path) -> np.ndarray:
    """``probabilities`` of the held-out rows averaged with the model's on their mirror images, whose spiral
    directions' columns are swapped back (labels as the unmirrored galaxies')."""
    from zoobot_tf.data.catalogs import mirrored_rows

    mirrored = mirrored_rows(catalog[catalog["split"] == "test"], folder, swap={})  # labels as the galaxies'
    on_mirrors, _, _ = holdout_predictions(model, pd.concat([catalog[catalog["split"] != "test"], mirrored]))
    names = list(model.task.class_names)
    return (probabilities + on_mirrors[:, [names.index(MIRRORED_LABELS.get(c, c)) for c in names]]) / 2


def zero_shot(pretrained: str, holdout: pd.DataFrame, crop: float) -> float:
    """Balanced accuracy of the pretrained model's own head on the held-out galaxies, at the survey's crop."""
    import zoobot_tf as zt

    with pretrained_head(pretrained):
        tuner = zt.Finetuner(pretrained, class_names=sorted(holdout["label"].unique()), crop_fraction=crop,
                             augment=False)
    probabilities, labels, _ = holdout_predictions(tuner.model, holdout.assign(split="test"))
    return balanced_accuracy(tuner.model.task, labels, np.log(np.clip(probabilities, 1e-12, 1.0)))


def main(argv=None):
    import zoobot_tf as zt

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("ZOOBOT_TF_SHARED_DATA", str(HERE.parents[1] / "shared" / "data")))
    p.add_argument("--variant", choices=("ensemble", "logit_adjust", "pretrained_head", "mirrored", "mirror_tta",
                                            "symmetric", *OPTIONS),
                   required=True)
    p.add_argument("--sets", default="gz1_sdss,gz2_kaggle_spiral")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--members", type=int, default=3, help="K, for --variant ensemble")
    p.add_argument("--pretrained", default="zoobot_sdss_mini")
    p.add_argument("--out", default=str(HERE / "results" / "finetune_variants.json"))
    args = p.parse_args(argv)
    rows = []
    mirrors = tempfile.TemporaryDirectory() if args.variant in ("mirrored", "mirror_tta") else None
    hook = functools.partial(pretrained_head, args.pretrained) if args.variant == "pretrained_head" \
        else contextlib.nullcontext
    for name in args.sets.split(","):
        crop, flip = SETS[name][4], SETS[name][5]
        rest, holdout = split_pool(Path(args.data), name)
        if args.variant == "pretrained_head":  # the pretrained head alone, before any finetuning
            rows.append({"variant": "zero_shot", "set": name,
                         "balanced_accuracy": zero_shot(args.pretrained, holdout, crop)})
            print(json.dumps(rows[-1]), flush=True)
        for seed in map(int, args.seeds.split(",")):
            chosen = rest.sample(n=min(1000, len(rest)), random_state=seed).reset_index(drop=True)
            n_val = int(0.2 * len(chosen))
            catalog = pd.concat([chosen.assign(split=["val"] * n_val + ["train"] * (len(chosen) - n_val)),
                                 holdout.assign(split="test")], ignore_index=True)
            if args.variant == "mirrored":
                catalog = with_mirrored(catalog, Path(mirrors.name))
            runs = range(args.members) if args.variant == "ensemble" else [0]
            members = []
            for k in runs:
                start = time.time()
                with hook():
                    pairs = {"mirror_pairs": MIRROR_PAIRS.get(name, [])} \
                        if args.variant == "symmetric" else {}
                    result = zt.finetune(args.pretrained, catalog, label_cols="label", seed=seed + 100 * k,
                                         verbose=0, crop_fraction=crop, augment={"flip": flip},
                                         balance_classes=args.variant != "logit_adjust",
                                         **OPTIONS.get(args.variant, {}), **pairs)
                probabilities, labels, train_labels = holdout_predictions(result.model, catalog)
                row = {"variant": args.variant, "set": name, "seed": seed, "member": k,
                       "epochs": len(result.history["loss"]), "seconds": time.time() - start}
                score = functools.partial(balanced_accuracy, result.model.task, labels)
                log_p = np.log(np.clip(probabilities, 1e-12, 1.0))
                if args.variant == "ensemble":
                    members.append(probabilities)
                    row.update(alone=score(log_p), mean_of_members=score(np.log(np.mean(members, 0))),
                               geometric_mean=score(np.mean([np.log(np.clip(m, 1e-12, 1.0)) for m in members], 0)))
                elif args.variant == "logit_adjust":
                    prior = np.bincount(train_labels, minlength=probabilities.shape[1]) + 1.0
                    for tau in (0.0, 0.5, 1.0):
                        row[f"tau_{tau}"] = score(log_p - tau * np.log(prior / prior.sum()))
                elif args.variant == "symmetric":
                    alone, _, _ = holdout_predictions(result.model, catalog, one_view(result.model))
                    turned, _, _ = holdout_predictions(result.model, catalog, quarter_turns(result.model))
                    row.update(alone=score(np.log(np.clip(alone, 1e-12, 1.0))), symmetric=score(log_p),
                               with_quarter_turns=score(np.log(np.clip(turned, 1e-12, 1.0))))
                elif args.variant == "mirror_tta":
                    averaged = mirror_averaged(result.model, catalog, probabilities, Path(mirrors.name))
                    row.update(alone=score(log_p), mirror_averaged=score(np.log(np.clip(averaged, 1e-12, 1.0))))
                else:
                    row["balanced_accuracy"] = score(log_p)
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = Path(args.out)
    done = json.loads(out.read_text()) if out.exists() else {"rows": []}
    key = lambda r: (r["variant"], r["set"], r.get("seed"), r.get("member"))  # noqa: E731
    done["rows"] = [r for r in done["rows"] if key(r) not in set(map(key, rows))] + rows
    out.write_text(json.dumps(done, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
