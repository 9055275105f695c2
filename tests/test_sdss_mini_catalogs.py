"""The catalogs that make the packaged zoobot_sdss_mini encoder (training/sdss_mini/make_catalogs.py), on a
small stand-in for ../shared/data and a rendered catalog made here: the face-on spirals labelled by their
true handedness, GZ1 galaxies split by id with only training galaxies mirrored (winding swapped), the
galaxies a benchmark scores on absent, and the joint catalog: those GZ1 galaxies cut to GZ1's framing beside
rendered galaxies labelled with the GZ1 class of their true morphology."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["elliptical", "clockwise_spiral", "anticlockwise_spiral", "edge_on", "dont_know", "merger"]


def _module():
    spec = importlib.util.spec_from_file_location("make_catalogs", REPO / "training" / "sdss_mini" / "make_catalogs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_catalogs(tmp_path):
    rng = np.random.default_rng(0)
    shared = tmp_path / "shared"
    (shared / "gz1_sdss" / "images").mkdir(parents=True)
    gz1 = pd.DataFrame({"dr7objid": [str(5000 + i) for i in range(60)], "gz1_class_name": [CLASSES[i % 6] for i in range(60)]})
    gz1["file"] = [f"images/{i}.jpeg" for i in gz1["dr7objid"]]
    for f in gz1["file"]:
        pixels = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
        pixels[:, :10] = 0  # dark left half: a mirror puts it on the right
        Image.fromarray(pixels).save(shared / "gz1_sdss" / f)
    gz1.to_csv(shared / "gz1_sdss" / "labels.csv", index=False)
    synthetic = pd.DataFrame({"id_str": [f"s{i}" for i in range(10)], "file_loc": [f"/x/s{i}.png" for i in range(10)],
                              "true_kind": ["disk"] * 6 + ["smooth"] * 2 + ["artifact", "smooth"],
                              "true_spiral": [True, True, True, False, True, False, False, False, False, False],
                              "true_edge_on": [False, False, True, False, False, False, False, False, False, False],
                              "true_handedness": [1, -1, 1, 1, -1, 1, 1, 1, 1, 1],
                              "true_merging": [0, 0, 0, 0, 0, 3, 0, 0, 0, 3]})
    synthetic.to_csv(tmp_path / "synthetic.csv", index=False)
    (tmp_path / "scored.txt").write_text("gz1_sdss-5000\ngz1_sdss-5001\ngz2_kaggle_spiral-5002\n")

    _module().main(["--synthetic", str(tmp_path / "synthetic.csv"), "--out", str(tmp_path / "out"),
                    "--shared", str(shared), "--exclude_ids", str(tmp_path / "scored.txt"), "--n_rendered", "100"])

    spirals = pd.read_csv(tmp_path / "out" / "spirals.csv", dtype=str)
    assert spirals["id_str"].tolist() == ["s0", "s1", "s4"]  # face-on spiral disks only
    assert spirals["label"].tolist() == ["clockwise", "anticlockwise", "anticlockwise"]

    catalog = pd.read_csv(tmp_path / "out" / "gz1.csv", dtype=str)
    originals = catalog[~catalog["id_str"].str.endswith("_mirrored")].set_index("id_str")
    assert set(originals.index) == set(gz1["dr7objid"]) - {"5000", "5001"}  # the scored GZ1 ones left out
    assert set(originals["split"]) == {"train", "val", "test"}
    mirrors = catalog[catalog["id_str"].str.endswith("_mirrored")]
    assert (mirrors["split"] == "train").all()
    assert len(mirrors) == (originals["split"] == "train").sum()
    swap = {"clockwise_spiral": "anticlockwise_spiral", "anticlockwise_spiral": "clockwise_spiral"}
    for row in mirrors.itertuples():
        original = originals.loc[row.id_str.removesuffix("_mirrored")]
        assert row.label == swap.get(original["label"], original["label"])
        before, after = (np.asarray(Image.open(f)) for f in (original["file_loc"], row.file_loc))
        assert after[:, 10:].mean() < 10  # the dark half moved to the right (up to JPEG ringing)
        assert before[:, 10:].mean() > 50

    # joint.csv: the same GZ1 galaxies framed as GZ1 framed them, and every rendered galaxy GZ1 has a class for
    joint = pd.read_csv(tmp_path / "out" / "joint.csv", dtype=str)
    rendered = joint[joint["id_str"].str.startswith("rendered-")].set_index("id_str")["label"].to_dict()
    assert rendered == {"rendered-s0": "clockwise_spiral", "rendered-s1": "anticlockwise_spiral",
                        "rendered-s2": "edge_on", "rendered-s4": "anticlockwise_spiral", "rendered-s5": "merger",
                        "rendered-s6": "elliptical", "rendered-s7": "elliptical", "rendered-s8": "dont_know",
                        "rendered-s9": "merger"}  # s3, a face-on disk without arms, has no GZ1 class
    real = joint[~joint["id_str"].str.startswith("rendered-")].set_index("id_str")
    assert sorted(real.index) == sorted(catalog["id_str"]) and (real["label"] == catalog.set_index("id_str")["label"]).all()
    for row in real.itertuples():
        framed = np.asarray(Image.open(row.file_loc))
        assert framed.shape[:2] == (7, 7)  # the central 0.35 of a 20-pixel cutout
        if not row.Index.endswith("_mirrored"):
            assert np.abs(framed.astype(int) - np.asarray(Image.open(originals.loc[row.Index, "file_loc"]))[6:13, 6:13]).mean() < 20
