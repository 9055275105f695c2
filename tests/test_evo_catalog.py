"""The GZ-Evo-mini pretraining catalog (training/evo_mini/make_catalog.py), on a small stand-in for
../shared/data made here: one vote per real label, mirrors that swap the winding direction, no galaxy in two
splits, and galaxies left out by --exclude_ids (those a benchmark scores on) absent from the catalog."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from zoobot_tf.schemas import Schema

REPO = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("make_catalog", REPO / "training" / "evo_mini" / "make_catalog.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """gz1_sdss (12 galaxies, every class twice) and gz2_kaggle_spiral (6) with labels.csv as in ../shared/data."""
    root = tmp_path_factory.mktemp("shared")
    rng = np.random.default_rng(0)

    def image(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (60, 60, 3), dtype=np.uint8)).save(path)

    gz1 = pd.DataFrame({"dr7objid": [str(1000 + i) for i in range(12)], "gz1_class": [i % 6 for i in range(12)]})
    gz1["file"] = [f"images/{i}.jpeg" for i in gz1["dr7objid"]]
    kaggle = pd.DataFrame({"GalaxyID": [str(200 + i) for i in range(6)], "spiral_flag": [i % 2 for i in range(6)]})
    kaggle["file"] = [f"images/{i}.jpg" for i in kaggle["GalaxyID"]]
    for name, table in (("gz1_sdss", gz1), ("gz2_kaggle_spiral", kaggle)):
        for f in table["file"]:
            image(root / name / f)
        table.to_csv(root / name / "labels.csv", index=False)
    return root


def test_catalog_votes_mirrors_splits_and_exclusions(shared, tmp_path):
    make_catalog = _module()
    excluded = ["gz1_sdss-1003", "gz2_kaggle_spiral-201"]
    (tmp_path / "ids.txt").write_text("\n".join(excluded) + "\n")
    out = tmp_path / "evo"
    make_catalog.main(["--shared", str(shared), "--out", str(out), "--synthetic", "0", "--stored_size", "32",
                       "--exclude", "gz_decals_rings", "--exclude_ids", str(tmp_path / "ids.txt")])
    catalog = pd.read_csv(out / "catalog.csv", dtype={"base_id": str})
    schema = Schema.from_yaml(out / "schema.yaml")

    assert set(catalog["source"]) == {"gz1_sdss", "gz2_kaggle_spiral"}  # rings and synthetic left out
    assert not set(excluded) & set(catalog["base_id"])
    assert len(catalog) == 2 * (12 + 6 - 2)  # every galaxy kept, and its mirror
    # one vote per galaxy, on its own campaign's question only
    gz1_cols = [c for c in catalog if c.startswith("gz1-class_")]
    kaggle_cols = [c for c in catalog if c.startswith("kaggle-spiral-odd_")]
    gz1 = catalog[catalog["source"] == "gz1_sdss"]
    assert (gz1[gz1_cols].sum(axis=1) == 1).all() and (gz1[kaggle_cols].to_numpy() == 0).all()
    # a mirror winds the other way; every other class keeps its answer
    for _, original in gz1[~gz1["mirror"]].iterrows():
        mirror = gz1[(gz1["base_id"] == original["base_id"]) & gz1["mirror"]].iloc[0]
        swap = {"gz1-class_clockwise-spiral": "gz1-class_anticlockwise-spiral",
                "gz1-class_anticlockwise-spiral": "gz1-class_clockwise-spiral"}
        answer = original[gz1_cols].astype(int).idxmax()
        assert mirror[gz1_cols].astype(int).idxmax() == swap.get(answer, answer)
        stored = np.asarray(Image.open(original["file_loc"]))
        np.testing.assert_allclose(np.asarray(Image.open(mirror["file_loc"]))[:, ::-1], stored, atol=40)
    # a galaxy and its mirror share a split
    assert (catalog.groupby("base_id")["split"].nunique() == 1).all()
    assert list(schema.label_cols) == gz1_cols + kaggle_cols  # the tree of the campaigns present, nothing else
