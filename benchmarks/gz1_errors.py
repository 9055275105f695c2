"""Where the GZ1 errors are: the confusion matrix of the default finetuning, and whether winding direction
can be learned at all from these images.

    python benchmarks/gz1_errors.py --work /path/to/scratch [--seeds 0,1,2]

Everything here is scored on galaxies carved from GZ1's pool (benchmarks/finetune_real.py's split), never on
its test split, so nothing in it can leak into the transfer benchmark's scores.

1. ``zoobot-tf finetune``'s defaults with the survey's crop and flip (``crop_fraction=0.35``, no flips) from
   the packaged encoder, 1,000 labels drawn from the pool (200 of them for early stopping), scored on 1,000
   other pool galaxies; per seed: balanced accuracy; summed over seeds: the confusion matrix, and the balanced
   accuracy the same predictions would have if clockwise and anticlockwise were one class ("spiral").
2. Winding direction alone: clockwise vs anticlockwise spirals only (the pool's spirals but 150 held out),
   with each training image also mirrored and its label swapped (a mirrored clockwise spiral is an
   anticlockwise one), from the packaged encoder (64 px) and from a random colour encoder at 128 px.
3. Whether the direction is in the pixels at all, with no training: every pool spiral resampled in
   (log radius, angle) about its centre, out to a fraction of the image (0.2, 0.35: the finetuning crop);
   an arm is a line in that plane, so the sign of the correlation of the intensity gradients along the two
   axes gives its direction.
4. Whether synthetic galaxies can teach it (:func:`synthetic_winding_encoders`): the packaged encoder
   finetuned on the winding direction of rendered face-on spirals (the renderer knows each one's handedness),
   and that one finetuned again on the votes of rendered galaxies of every kind with a direction question
   added; each then finetuned on the real spirals' direction as in 2 (its encoder kept, only the head
   trained) and on the six classes as in 1.
Writes benchmarks/results/gz1_errors.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from finetune_real import SETS, load_set  # noqa: E402

CROP, FLIP = SETS["gz1_sdss"][4], SETS["gz1_sdss"][5]
SPIRALS = {"clockwise_spiral": "anticlockwise_spiral", "anticlockwise_spiral": "clockwise_spiral"}


def balanced(confusion: pd.DataFrame) -> float:
    c = confusion.to_numpy(float)
    return float(np.mean(np.diag(c) / c.sum(axis=1)))


def default_finetuning(pool: pd.DataFrame, seed: int, pretrained="zoobot_synthetic",
                       **options) -> tuple[float, pd.DataFrame]:
    import zoobot_tf as zt

    shuffled = pool.sample(frac=1, random_state=100 + seed).reset_index(drop=True)
    chosen, dev = shuffled[:1000], shuffled[1000:2000]
    catalog = pd.concat([chosen.assign(split=["val"] * 200 + ["train"] * 800), dev.assign(split="test")],
                        ignore_index=True)
    result = zt.finetune(pretrained, catalog, label_cols="label", seed=seed, verbose=0,
                         crop_fraction=CROP, augment={"flip": FLIP}, **options)
    table = result.test_table.set_index("question")
    names = [q for q in table.index if q != "total"]
    confusion = table.loc[names, [f"as_{c}" for c in names]].astype(int)  # Int64 -> int64 for the sums
    confusion.columns = names
    return float(table.loc["total", "balanced_accuracy"]), confusion


def winding_only(pool: pd.DataFrame, work: Path, pretrained: str, seed: int, **options) -> float:
    import zoobot_tf as zt
    from zoobot_tf.data.catalogs import mirrored_rows

    spirals = pool[pool["label"].isin(SPIRALS)].sample(frac=1, random_state=seed).reset_index(drop=True)
    dev, chosen = spirals[:150], spirals[150:]
    train = chosen[40:]
    catalog = pd.concat([chosen[:40].assign(split="val"), train.assign(split="train"),
                         mirrored_rows(train, work, SPIRALS).assign(split="train"), dev.assign(split="test")],
                        ignore_index=True)
    result = zt.finetune(pretrained, catalog, label_cols="label", seed=seed, verbose=0, crop_fraction=CROP,
                         augment={"flip": False}, **options)
    return float(result.test_table.set_index("question").loc["total", "balanced_accuracy"])


def with_direction_votes(catalog: pd.DataFrame, seed: int = 1) -> tuple[pd.DataFrame, object]:
    """The synthetic catalog with one more question, ``spiral-direction`` (clockwise / anticlockwise), asked
    of the volunteers who answered ``has-spiral-arms_yes``: for a spiral, the true handedness is chosen with
    a probability that grows with how clearly it and its arms are seen; for anything else, at random. And the
    schema holding it (GZ DECaLS DR5 plus that question)."""
    from zoobot_tf.schemas import Schema, get_schema

    tree = get_schema("gz_decals_dr5").to_dict()
    tree["name"] = "gz_decals_dr5_direction"
    tree["questions"]["spiral-direction"] = {"answers": ["clockwise", "anticlockwise"],
                                             "asked_after": "has-spiral-arms_yes"}
    asked = catalog["has-spiral-arms_yes"].to_numpy()
    sureness = np.clip(catalog["true_clarity"] * (0.4 + 0.6 * catalog["true_arm_strength"]), 0, 0.96)
    p_clockwise = np.where(catalog["true_spiral"], 0.5 + 0.5 * catalog["true_handedness"] * sureness, 0.5)
    clockwise = np.random.default_rng(seed).binomial(asked, p_clockwise)
    return (catalog.assign(**{"spiral-direction_clockwise": clockwise,
                              "spiral-direction_anticlockwise": asked - clockwise}), Schema.from_dict(tree))


def synthetic_winding_encoders(work: Path, n_galaxies: int, seed: int = 0) -> dict:
    """Two encoders taught winding direction by rendered galaxies (128 px, no flips: a flip turns a spiral's
    direction; framing 0.8): ``direction``, the packaged encoder finetuned on the handedness of the face-on
    spirals (``true_handedness``; 10% of them for early stopping, 10% scored); ``direction_then_votes``, that
    one finetuned again, at a tenth of the rate, on the votes of half the galaxies of every kind with the
    direction question added (:func:`with_direction_votes`), so it relearns the rest of the tree. Returns,
    per encoder, its model file and how well it tells the direction of held-out rendered galaxies (the first:
    balanced accuracy on the spirals; the second: accuracy of its direction question)."""
    import zoobot_tf as zt
    from zoobot_tf.data.synthetic import make_synthetic_catalog

    catalog = make_synthetic_catalog(n_galaxies, work / "synthetic", stored_size=128, seed=7, progress=False)
    catalog["split"] = [("val", "test")[i % 2] if i % 10 < 2 else "train" for i in range(len(catalog))]
    common = dict(seed=seed, verbose=0, crop_fraction=0.8, augment={"flip": False}, n_blocks=-1,
                  balance_classes=False)
    spirals = catalog[(catalog["true_kind"] == "disk") & catalog["true_spiral"] & ~catalog["true_edge_on"]]
    spirals = spirals.assign(label=spirals["true_handedness"].map({1: "clockwise", -1: "anticlockwise"}))
    first = zt.finetune("zoobot_synthetic", spirals, label_cols="label", learning_rate=1e-3, epochs=15, patience=4,
                        **common)
    out = {"direction": (work / "winding_encoder.keras",
                         float(first.test_table.set_index("question").loc["total", "balanced_accuracy"]))}
    first.model.save(out["direction"][0])
    voted, schema = with_direction_votes(catalog[: n_galaxies // 2])
    second = zt.finetune(first.model, voted, task="votes", schema=schema, learning_rate=1e-4, epochs=10,
                         patience=5, **common)
    direction = second.test_table.set_index("question").loc["spiral-direction"]
    out["direction_then_votes"] = (work / "winding_votes_encoder.keras", float(direction["accuracy"]))
    second.model.save(out["direction_then_votes"][0])
    return out


def winding_signs(path: str, extents: tuple[float, ...]) -> list[float]:
    """Per extent, the correlation of the intensity gradients along log radius and along angle, within that
    fraction of the image about its centre (the image's radial profile removed): its sign is the arms'
    winding direction. The image is read and smoothed once for every extent."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter, map_coordinates

    with Image.open(path) as im:
        image = np.asarray(im.convert("L"), float)
    centre, sky, smooth = (image.shape[0] - 1) / 2, np.median(image), gaussian_filter(image, 1.0)
    angle = np.linspace(0, 2 * np.pi, 180, endpoint=False)
    signs = []
    for extent in extents:
        radius = np.exp(np.linspace(np.log(3), np.log(extent * image.shape[0] / 2), 64))
        r, a = np.meshgrid(radius, angle, indexing="ij")
        polar = map_coordinates(smooth, [centre + r * np.sin(a), centre + r * np.cos(a)], order=1)
        polar = np.log1p(np.clip(polar - sky, 0, None))
        polar -= polar.mean(axis=1, keepdims=True)
        along_r = np.gradient(polar, axis=0)
        along_a = (np.roll(polar, -1, axis=1) - np.roll(polar, 1, axis=1)) / 2
        signs.append(float((along_r * along_a).sum()
                           / (np.sqrt((along_r ** 2).sum() * (along_a ** 2).sum()) + 1e-9)))
    return signs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="scratch folder for the mirrored images")
    p.add_argument("--shared", default=str(HERE.parent.parent / "shared" / "data"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--synthetic_galaxies", type=int, default=24000,
                   help="rendered for part 4 (about a quarter are face-on spirals)")
    p.add_argument("--out", default=str(HERE / "results" / "gz1_errors.json"))
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    pool, _, _ = load_set(Path(args.shared), "gz1_sdss")  # the test split is not used here
    start = time.time()
    scores, total = [], None
    for seed in seeds:
        score, confusion = default_finetuning(pool, seed)
        scores.append(score)
        total = confusion if total is None else total + confusion
        print(f"default finetuning, seed {seed}: balanced accuracy {score:.3f}", flush=True)
    merged = total.rename(index=lambda c: "spiral" if c in SPIRALS else c,
                          columns=lambda c: "spiral" if c in SPIRALS else c)
    merged = merged.T.groupby(level=0).sum().T.groupby(level=0).sum()
    print("\nconfusion matrix over the seeds (rows: true class, columns: predicted)\n" + total.to_string())
    print(f"\nbalanced accuracy {np.mean(scores):.3f} +- {np.std(scores, ddof=1):.3f}; the same predictions with "
          f"the two winding directions as one class (5 classes): {balanced(merged):.3f}")
    winding = {}
    for name, (pretrained, options) in {
            "packaged encoder, 64 px greyscale": ("zoobot_synthetic", {}),
            "random encoder, 128 px colour": ("resnet_micro", {"image_size": 128, "channels": 3})}.items():
        winding[name] = [winding_only(pool, Path(args.work) / "mirrored", pretrained, seed, **options)
                         for seed in seeds]
        print(f"winding direction alone (2 classes, mirrored copies), {name}: balanced accuracy "
              f"{np.mean(winding[name]):.3f} +- {np.std(winding[name], ddof=1):.3f}", flush=True)
    spirals = pool[pool["label"].isin(SPIRALS)]
    clockwise = (spirals["label"] == "clockwise_spiral").to_numpy()
    extents = (0.2, CROP)
    signs = np.array([winding_signs(f, extents) for f in spirals["file_loc"]])  # (spirals, extents)
    no_training = {}
    for extent, says_clockwise in zip(extents, (signs > 0).T):
        no_training[str(extent)] = float(np.mean([np.mean(says_clockwise[clockwise]),
                                                  np.mean(~says_clockwise[~clockwise])]))
        print(f"winding direction with no training (gradient correlation within {extent} of the image, "
              f"{len(spirals)} pool spirals): balanced accuracy {no_training[str(extent)]:.3f}")
    from_synthetic = {}
    encoders = synthetic_winding_encoders(Path(args.work), args.synthetic_galaxies)
    for name, (encoder, synthetic_score) in encoders.items():
        direction = [winding_only(pool, Path(args.work) / "mirrored", str(encoder), seed, n_blocks=0,
                                  learning_rate=1e-3) for seed in seeds]
        six = [default_finetuning(pool, seed, str(encoder), n_blocks=-1, learning_rate=3e-4)[0] for seed in seeds]
        from_synthetic[name] = {"synthetic_score": synthetic_score, "winding_only": direction, "six_classes": six}
        print(f"encoder taught by synthetic galaxies ({name}; direction of rendered galaxies {synthetic_score:.3f}): "
              f"winding direction of real spirals (as in 2, its encoder kept, head at 1e-3) {np.mean(direction):.3f} "
              f"+- {np.std(direction, ddof=1):.3f}; six classes (as in 1, whole encoder at 3e-4) {np.mean(six):.3f} "
              f"+- {np.std(six, ddof=1):.3f}", flush=True)
    Path(args.out).write_text(json.dumps({
        "seeds": seeds, "balanced_accuracy": scores, "confusion": total.to_dict(orient="index"),
        "balanced_accuracy_one_spiral_class": balanced(merged), "winding_only": winding,
        "winding_no_training": no_training,
        "synthetic_winding": {"synthetic_galaxies": args.synthetic_galaxies, "encoders": from_synthetic},
        "minutes": (time.time() - start) / 60}, indent=2))
    print(f"wrote {args.out} ({(time.time() - start) / 60:.1f} min)")


if __name__ == "__main__":
    main()
