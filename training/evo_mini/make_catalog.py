"""Build the pretraining catalog of the embedded encoder: Zoobot's GZ Evo recipe in miniature.

One catalog, one decision tree (``schema.yaml``), one Dirichlet-multinomial head over the questions of
every campaign: each galaxy has vote counts only for its own campaign's questions, so the others
contribute nothing to its loss (Zoobot's design, Walmsley et al. 2024).

Campaigns (``--sources``), from ``../shared/data`` and the project's renderer:

* ``synthetic``: rendered galaxies with simulated volunteers down the GZ DECaLS tree (questions ``*-synth``);
* ``gz1_sdss``: the GZ1 class as one vote on ``gz1-class`` (6 answers). Mirror images are added with the
  clockwise/anticlockwise votes swapped (flip augmentation that respects chirality; the model itself
  trains with ``--flip false``), in the same split as their original;
* ``gz2_kaggle_spiral``: the Kaggle flag as one vote on ``kaggle-spiral-odd`` (yes/no), mirrors added;
* ``gz_decals_rings``: the ring tag as one vote on ``ring`` (yes/no), mirrors added; the 28 galaxies with
  real volunteer counts also vote on ``smooth-or-featured-dr5``.

Real images are cropped to each survey's framing (``CROPS``: the galaxy fills the central ~30% of a GZ1
cutout) and stored at ``--stored_size``, like the synthetic ones. ``--exclude`` leaves sets out (the
leave-one-survey-out benchmark pretrains without the set it scores on); ``--exclude_ids`` leaves out
single galaxies (those a benchmark scores on).

    python training/evo_mini/make_catalog.py --out data/evo_mini --synthetic 20000
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
from PIL import Image, ImageOps

from zoobot_tf.data.splits import split_by_id
from zoobot_tf.schemas import Schema, get_schema

SOURCES = ("synthetic", "gz1_sdss", "gz2_kaggle_spiral", "gz_decals_rings")
CROPS = {"gz1_sdss": 0.35, "gz2_kaggle_spiral": 0.5, "gz_decals_rings": 0.7}  # central fraction kept
GZ1_ANSWERS = ["elliptical", "clockwise-spiral", "anticlockwise-spiral", "edge-on", "dont-know", "merger"]
GZ1_MIRROR = {1: 2, 2: 1}  # a mirror image winds the other way


def evo_schema(sources) -> Schema:
    parts = []
    if "synthetic" in sources:
        parts.append(get_schema("gz_decals_dr5").with_suffix("-synth"))
    if "gz1_sdss" in sources:
        parts.append(Schema("gz1", {"gz1-class": GZ1_ANSWERS}))
    if "gz2_kaggle_spiral" in sources:
        parts.append(Schema("kaggle", {"kaggle-spiral-odd": ["yes", "no"]}))
    if "gz_decals_rings" in sources:
        parts.append(Schema("rings", {"ring": ["yes", "no"]}))
        parts.append(Schema("dr5-smooth", {"smooth-or-featured-dr5": ["smooth", "featured-or-disk", "artifact"]}))
    return Schema.combine("gz_evo_mini", parts)


def _store(src: Path, dst: Path, crop: float, size: int, mirror: bool) -> None:
    with Image.open(src) as im:
        im = im.convert("RGB")
        w, h = im.size
        side = min(w, h) * crop
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        im = im.resize((size, size), Image.LANCZOS, box=box)
        if mirror:
            im = ImageOps.mirror(im)
        dst.parent.mkdir(parents=True, exist_ok=True)
        im.save(dst, quality=92)


def real_rows(shared: Path, name: str, out: Path, size: int, exclude_ids: frozenset = frozenset()) -> list[dict]:
    folder = shared / name
    labels = pd.read_csv(folder / "labels.csv", dtype=str)
    rows = []
    for r in labels.itertuples():
        if name == "gz1_sdss":
            gid, answer = r.dr7objid, int(r.gz1_class)
        elif name == "gz2_kaggle_spiral":
            gid, answer = r.GalaxyID, 0 if int(r.spiral_flag) else 1
        else:
            gid, answer = r.iauname, 0 if int(r.ring) else 1
        if f"{name}-{gid}" in exclude_ids:
            continue
        for mirror in (False, True):
            row = {"id_str": f"{name}-{gid}" + ("-mirror" if mirror else ""), "base_id": f"{name}-{gid}",
                   "source": name, "mirror": mirror}
            path = out / "images" / name / f"{row['id_str']}.jpg"
            if not path.exists():
                _store(folder / r.file, path, CROPS[name], size, mirror)
            row["file_loc"] = str(path.resolve())
            if name == "gz1_sdss":
                a = GZ1_MIRROR.get(answer, answer) if mirror else answer
                row[f"gz1-class_{GZ1_ANSWERS[a]}"] = 1
            elif name == "gz2_kaggle_spiral":
                row[["kaggle-spiral-odd_yes", "kaggle-spiral-odd_no"][answer]] = 1
            else:
                row[["ring_yes", "ring_no"][answer]] = 1
                answers = ("smooth", "featured-or-disk", "artifact")
                votes = [labels.loc[r.Index, f"panoptes2018_smooth-or-featured_{a}"] for a in answers]
                if all(isinstance(v, str) and v.strip() for v in votes):  # the 28 with real volunteer counts
                    for a, v in zip(answers, votes):
                        row[f"smooth-or-featured-dr5_{a}"] = int(float(v))
            rows.append(row)
    return rows


def synthetic_rows(n: int, out: Path, size: int) -> list[dict]:
    from zoobot_tf.data.synthetic import make_synthetic_catalog

    dr5 = get_schema("gz_decals_dr5")
    cat = make_synthetic_catalog(n, out / "images" / "synthetic", stored_size=size, seed=0, schema=dr5)
    rows = []
    for r in cat.to_dict(orient="records"):
        row = {"id_str": r["id_str"], "base_id": r["id_str"], "source": "synthetic", "mirror": False,
               "file_loc": r["file_loc"]}
        row.update({f"{q.name}-synth_{a}": r[f"{q.name}_{a}"] for q in dr5.questions for a in q.answer_texts})
        rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", default=os.environ.get("ZOOBOT_TF_SHARED_DATA", "../shared/data"))
    p.add_argument("--out", required=True)
    p.add_argument("--stored_size", type=int, default=128)
    p.add_argument("--synthetic", type=int, default=20000, help="synthetic galaxies (0: none)")
    p.add_argument("--exclude", default="", help="comma-separated sources to leave out")
    p.add_argument("--exclude_ids", default=None,
                   help="file of galaxies to leave out, one '<set>-<id>' per line (e.g. the galaxies a benchmark "
                        "scores on: benchmarks/embedded_card.py --write_ids)")
    args = p.parse_args(argv)
    exclude_ids = frozenset(Path(args.exclude_ids).read_text().split()) if args.exclude_ids else frozenset()
    excluded = {s for s in args.exclude.split(",") if s}
    sources = [s for s in SOURCES if s not in excluded and (s != "synthetic" or args.synthetic > 0)]
    out, shared = Path(args.out), Path(args.shared)
    schema = evo_schema(sources)
    rows = []
    if "synthetic" in sources:
        rows += synthetic_rows(args.synthetic, out, args.stored_size)
    for name in sources:
        if name != "synthetic":
            rows += real_rows(shared, name, out, args.stored_size, exclude_ids)
    catalog = pd.DataFrame(rows)
    for col in schema.label_cols:
        catalog[col] = catalog[col].fillna(0).astype(int) if col in catalog else 0
    # a mirror image goes to the split of its original: no galaxy is in two splits
    catalog["split"] = split_by_id(catalog["base_id"].tolist())
    catalog = catalog[["id_str", "file_loc", "split", "source", "base_id", "mirror"] + schema.label_cols]
    catalog.to_csv(out / "catalog.csv", index=False)
    schema.to_yaml(out / "schema.yaml")
    print(catalog.groupby(["source", "split"]).size().unstack(fill_value=0))
    print(f"{len(catalog)} galaxies, {schema.n_questions} questions / {schema.n_answers} answers -> {out}")


if __name__ == "__main__":
    main()
