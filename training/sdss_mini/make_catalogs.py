"""Build the two finetuning catalogs that make the packaged ``zoobot_sdss_mini`` encoder
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

    python training/sdss_mini/make_catalogs.py --synthetic data/synthetic128/catalog.csv \
        --exclude_ids data/scored_ids.txt --out data/sdss_mini
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
from zoobot_tf.data.catalogs import mirrored_rows
from zoobot_tf.data.splits import split_by_id

MIRROR = {"clockwise_spiral": "anticlockwise_spiral", "anticlockwise_spiral": "clockwise_spiral"}


def spirals_catalog(synthetic: pd.DataFrame) -> pd.DataFrame:
    """The face-on rendered spirals labelled by winding direction, with a train/val/test ``split``."""
    face_on = synthetic[(synthetic["true_kind"] == "disk") & synthetic["true_spiral"].astype(bool)
                        & ~synthetic["true_edge_on"].astype(bool)].reset_index(drop=True)
    split = [("val", "test")[i % 2] if i % 10 < 2 else "train" for i in range(len(face_on))]
    return pd.DataFrame({"id_str": face_on["id_str"], "file_loc": face_on["file_loc"], "split": split,
                         "label": face_on["true_handedness"].map({1: "clockwise", -1: "anticlockwise"})})


def gz1_catalog(shared: Path, out: Path, exclude_ids: frozenset[str]) -> pd.DataFrame:
    """GZ1 SDSS galaxies not in ``exclude_ids`` (``gz1_sdss-<dr7objid>``), split by id, training ones also
    mirrored (written under ``out/mirrored``) with the winding classes swapped."""
    folder = shared / "gz1_sdss"
    labels = pd.read_csv(folder / "labels.csv", dtype={"dr7objid": str})
    labels = labels[~("gz1_sdss-" + labels["dr7objid"]).isin(exclude_ids)].reset_index(drop=True)
    rows = pd.DataFrame({"id_str": labels["dr7objid"], "label": labels["gz1_class_name"],
                         "file_loc": [str((folder / f).resolve()) for f in labels["file"]]})
    # a salt of its own: the benchmarks chose which galaxies they score by the default salt
    rows["split"] = split_by_id(rows["id_str"].tolist(), (0.8, 0.1, 0.1), ("train", "val", "test"), salt="sdss_mini")
    mirrored = mirrored_rows(rows[rows["split"] == "train"], out / "mirrored", MIRROR)
    return pd.concat([rows, mirrored], ignore_index=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--synthetic", required=True, help="catalog.csv of zoobot-tf make-synthetic")
    p.add_argument("--out", required=True, help="folder for spirals.csv, gz1.csv and the mirrored images")
    p.add_argument("--shared", default=os.environ.get("ZOOBOT_TF_SHARED_DATA", "../shared/data"))
    p.add_argument("--exclude_ids", default=None, help="file of galaxy ids to leave out, one per line")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spirals = spirals_catalog(pd.read_csv(args.synthetic, dtype={"id_str": str}))
    spirals.to_csv(out / "spirals.csv", index=False)
    exclude = frozenset(Path(args.exclude_ids).read_text().split()) if args.exclude_ids else frozenset()
    gz1 = gz1_catalog(Path(args.shared), out, exclude)
    gz1.to_csv(out / "gz1.csv", index=False)
    print(f"wrote {out / 'spirals.csv'} ({len(spirals)} face-on spirals) and {out / 'gz1.csv'} "
          f"({len(gz1)} rows: {gz1['split'].value_counts().to_dict()}, {len(exclude)} scored galaxies left out)")


if __name__ == "__main__":
    main()
