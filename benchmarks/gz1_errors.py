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


def mirrored(rows: pd.DataFrame, work: Path) -> pd.DataFrame:
    """The rows' images mirrored left-right (written once into ``work``), with winding directions swapped."""
    from PIL import Image, ImageOps

    work.mkdir(parents=True, exist_ok=True)
    locs = []
    for f in rows["file_loc"]:
        out = work / Path(f).name
        if not out.exists():
            with Image.open(f) as im:
                ImageOps.mirror(im).save(out, quality=95)
        locs.append(str(out))
    return rows.assign(file_loc=locs, id_str=rows["id_str"] + "_mirrored",
                       label=rows["label"].map(lambda v: SPIRALS.get(v, v)))


def balanced(confusion: pd.DataFrame) -> float:
    c = confusion.to_numpy(float)
    return float(np.mean(np.diag(c) / c.sum(axis=1)))


def default_finetuning(pool: pd.DataFrame, seed: int) -> tuple[float, pd.DataFrame]:
    import zoobot_tf as zt

    shuffled = pool.sample(frac=1, random_state=100 + seed).reset_index(drop=True)
    chosen, dev = shuffled[:1000], shuffled[1000:2000]
    catalog = pd.concat([chosen.assign(split=["val"] * 200 + ["train"] * 800), dev.assign(split="test")],
                        ignore_index=True)
    result = zt.finetune("zoobot_synthetic", catalog, label_cols="label", seed=seed, verbose=0,
                         crop_fraction=CROP, augment={"flip": FLIP})
    table = result.test_table.set_index("question")
    names = [q for q in table.index if q != "total"]
    confusion = table.loc[names, [f"as_{c}" for c in names]].astype(int)  # Int64 -> int64 for the sums
    confusion.columns = names
    return float(table.loc["total", "balanced_accuracy"]), confusion


def winding_only(pool: pd.DataFrame, work: Path, pretrained: str, seed: int, **options) -> float:
    import zoobot_tf as zt

    spirals = pool[pool["label"].isin(SPIRALS)].sample(frac=1, random_state=seed).reset_index(drop=True)
    dev, chosen = spirals[:150], spirals[150:]
    train = chosen[40:]
    catalog = pd.concat([chosen[:40].assign(split="val"), train.assign(split="train"),
                         mirrored(train, work).assign(split="train"), dev.assign(split="test")], ignore_index=True)
    result = zt.finetune(pretrained, catalog, label_cols="label", seed=seed, verbose=0, crop_fraction=CROP,
                         augment={"flip": False}, **options)
    return float(result.test_table.set_index("question").loc["total", "balanced_accuracy"])


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
    Path(args.out).write_text(json.dumps({
        "seeds": seeds, "balanced_accuracy": scores, "confusion": total.to_dict(orient="index"),
        "balanced_accuracy_one_spiral_class": balanced(merged), "winding_only": winding,
        "winding_no_training": no_training,
        "minutes": (time.time() - start) / 60}, indent=2))
    print(f"wrote {args.out} ({(time.time() - start) / 60:.1f} min)")


if __name__ == "__main__":
    main()
