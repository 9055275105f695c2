"""Build the finetuning catalogs that make the packaged ``zoobot_sdss_mini`` encoder
(training/sdss_mini/README.md has the exact commands and the outcome).

* ``spirals.csv``: the face-on spirals of a rendered catalog (``zoobot-tf make-synthetic``), labelled with
  their true winding direction (``clockwise`` / ``anticlockwise``); 80% train, 10% val, 10% test by position.
  Votes cannot teach the direction (a Dirichlet head on one-sided votes has no gradient towards it; see
  benchmarks/gz1_errors.py), a softmax head on the true handedness does.
* ``gz1.csv``: the Galaxy Zoo 1 SDSS galaxies of ``../shared/data/gz1_sdss`` with their class, less the
  galaxies any benchmark scores on (``--exclude_ids``, written by
  ``python benchmarks/embedded_card.py --write_ids``), split 80/10/10 by a hash of the id. Each training
  galaxy is added again mirrored left-right with clockwise and anticlockwise swapped (a mirror image winds
  the other way), so the finetuning itself runs with ``--flip false``.
* ``joint.csv`` (with ``--n_rendered``): the same GZ1 galaxies cut to GZ1's framing (their central 35%), and
  that many rendered galaxies (from ``--rendered``) labelled with the GZ1 class of their true morphology:
  one softmax head over GZ1's classes on real and rendered galaxies, so the encoder learns SDSS galaxies
  and keeps what it knew of rendered ones (version 2 of the packaged model; version 1 used ``gz1.csv``).

    python training/sdss_mini/make_catalogs.py --synthetic data/synthetic128/catalog.csv \
        --rendered data/synthetic64/catalog.csv --n_rendered 8000 --exclude_ids data/scored_ids.txt --out data/sdss_mini
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
from zoobot_tf.data.catalogs import mirrored_rows
from zoobot_tf.data.splits import split_by_id

MIRROR = {"clockwise_spiral": "anticlockwise_spiral", "anticlockwise_spiral": "clockwise_spiral"}
GZ1_CROP = 0.35  # GZ1's framing: the galaxy fills about the central third of a 423-pixel cutout


def rendered_gz1_class(synthetic: pd.DataFrame) -> pd.Series:
    """The Galaxy Zoo 1 class of each rendered galaxy from its true morphology (``true_*`` columns); missing
    for a face-on disk without arms, which GZ1's six classes do not describe."""
    kind, merger = synthetic["true_kind"], synthetic["true_merging"] == 3
    face_on_spiral = (kind == "disk") & synthetic["true_spiral"].astype(bool) & ~synthetic["true_edge_on"].astype(bool)
    label = pd.Series(None, index=synthetic.index, dtype=object)
    label[kind == "smooth"] = "elliptical"
    label[(kind == "disk") & synthetic["true_edge_on"].astype(bool)] = "edge_on"
    label[face_on_spiral] = synthetic.loc[face_on_spiral, "true_handedness"].map(
        {1: "clockwise_spiral", -1: "anticlockwise_spiral"})
    label[kind == "artifact"] = "dont_know"
    label[merger] = "merger"
    return label


def spirals_catalog(synthetic: pd.DataFrame) -> pd.DataFrame:
    """The face-on rendered spirals labelled by winding direction, with a train/val/test ``split``."""
    face_on = synthetic[(synthetic["true_kind"] == "disk") & synthetic["true_spiral"].astype(bool)
                        & ~synthetic["true_edge_on"].astype(bool)].reset_index(drop=True)
    split = [("val", "test")[i % 2] if i % 10 < 2 else "train" for i in range(len(face_on))]
    return pd.DataFrame({"id_str": face_on["id_str"], "file_loc": face_on["file_loc"], "split": split,
                         "label": face_on["true_handedness"].map({1: "clockwise", -1: "anticlockwise"})})


def gz1_catalog(shared: Path, out: Path, exclude_ids: frozenset[str], framed: bool = False) -> pd.DataFrame:
    """GZ1 SDSS galaxies not in ``exclude_ids`` (``gz1_sdss-<dr7objid>``), split by id, training ones also
    mirrored (written under ``out/mirrored``) with the winding classes swapped. ``framed``: each image cut to
    GZ1's framing (its central ``GZ1_CROP``, written under ``out/framed``), to train with crop fraction 1
    beside rendered galaxies."""
    folder = shared / "gz1_sdss"
    labels = pd.read_csv(folder / "labels.csv", dtype={"dr7objid": str})
    labels = labels[~("gz1_sdss-" + labels["dr7objid"]).isin(exclude_ids)].reset_index(drop=True)
    rows = pd.DataFrame({"id_str": labels["dr7objid"], "label": labels["gz1_class_name"],
                         "file_loc": [str((folder / f).resolve()) for f in labels["file"]]})
    # a salt of its own: the benchmarks chose which galaxies they score by the default salt
    rows["split"] = split_by_id(rows["id_str"].tolist(), (0.8, 0.1, 0.1), ("train", "val", "test"), salt="sdss_mini")
    if framed:
        rows["file_loc"] = [_central_crop(f, out / "framed", GZ1_CROP) for f in rows["file_loc"]]
    mirrored = mirrored_rows(rows[rows["split"] == "train"], out / ("mirrored_framed" if framed else "mirrored"),
                             MIRROR)
    return pd.concat([rows, mirrored], ignore_index=True)


def _central_crop(path: str, folder: Path, fraction: float) -> str:
    """The central ``fraction`` of an image, written once into ``folder`` (JPEG quality 95)."""
    from PIL import Image

    target = folder / Path(path).name
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            side = round(min(im.size) * fraction)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            im.crop((left, top, left + side, top + side)).save(target, quality=95)
    return str(target.resolve())


def joint_catalog(synthetic: pd.DataFrame, gz1_framed: pd.DataFrame, n_rendered: int, seed: int = 0) -> pd.DataFrame:
    """GZ1's framed galaxies with ``n_rendered`` rendered galaxies labelled with their GZ1 class
    (:func:`rendered_gz1_class`; 90% train, 5% val, 5% test): one softmax head over GZ1's classes on real and
    rendered galaxies together, so the encoder learns SDSS galaxies without forgetting the rendered ones."""
    label = rendered_gz1_class(synthetic)
    rendered = synthetic.loc[label.notna(), ["id_str", "file_loc"]].assign(label=label[label.notna()])
    rendered = rendered.sample(n=min(n_rendered, len(rendered)), random_state=seed).reset_index(drop=True)
    rendered["split"] = [("val", "test")[i % 2] if i % 20 < 2 else "train" for i in range(len(rendered))]
    rendered["id_str"] = "rendered-" + rendered["id_str"].astype(str)
    return pd.concat([gz1_framed, rendered], ignore_index=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--synthetic", required=True, help="catalog.csv of zoobot-tf make-synthetic")
    p.add_argument("--out", required=True, help="folder for spirals.csv, gz1.csv, joint.csv and their images")
    p.add_argument("--shared", default=os.environ.get("ZOOBOT_TF_SHARED_DATA", "../shared/data"))
    p.add_argument("--exclude_ids", default=None, help="file of galaxy ids to leave out, one per line")
    p.add_argument("--n_rendered", type=int, default=0, help="also write joint.csv: GZ1's galaxies framed as GZ1 "
                   "framed them, with this many rendered galaxies labelled with their GZ1 class")
    p.add_argument("--rendered", default=None, help="the rendered catalog joint.csv draws from (default: --synthetic)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    synthetic = pd.read_csv(args.synthetic, dtype={"id_str": str})
    spirals = spirals_catalog(synthetic)
    spirals.to_csv(out / "spirals.csv", index=False)
    exclude = frozenset(Path(args.exclude_ids).read_text().split()) if args.exclude_ids else frozenset()
    gz1 = gz1_catalog(Path(args.shared), out, exclude)
    gz1.to_csv(out / "gz1.csv", index=False)
    print(f"wrote {out / 'spirals.csv'} ({len(spirals)} face-on spirals) and {out / 'gz1.csv'} "
          f"({len(gz1)} rows: {gz1['split'].value_counts().to_dict()}, {len(exclude)} scored galaxies left out)")
    if args.n_rendered:
        rendered = pd.read_csv(args.rendered, dtype={"id_str": str}) if args.rendered else synthetic
        joint = joint_catalog(rendered, gz1_catalog(Path(args.shared), out, exclude, framed=True), args.n_rendered)
        joint.to_csv(out / "joint.csv", index=False)
        print(f"wrote {out / 'joint.csv'} ({len(joint)} rows: {joint['label'].value_counts().to_dict()})")


if __name__ == "__main__":
    main()
