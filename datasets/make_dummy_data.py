"""Make the small dummy_data/ folders the builder tests run on (synthetic renders; no real images copied).

    python datasets/make_dummy_data.py
"""
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from PIL import Image

from zoobot_tf.data import synthetic
from zoobot_tf.schemas import get_schema
from zoobot_tf.tfds.common import split_of

HERE = Path(__file__).parent


def galaxy(i: int, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng([99, i])
    return synthetic.render(synthetic.sample_truth(rng), size, rng)


def pick(make_id, per_split=(("train", 4), ("validation", 2), ("test", 2))) -> list[str]:
    """Ids whose deterministic split fills every split (so each split of the dummy data is non-empty)."""
    want, out, i = dict(per_split), [], 0
    while any(want.values()):
        key = make_id(i)
        s = split_of(key)
        if want.get(s, 0) > 0:
            want[s] -= 1
            out.append(key)
        i += 1
    return out


def save(path: Path, pixels: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=80)


def gz_rings():
    root = HERE / "gz_rings" / "dummy_data"
    rows = []
    for i in range(8):
        name = f"J{i:03d}000.00+000000.0"
        save(root / "images" / f"{name}.jpg", galaxy(i))
        rows.append({"iauname": name, "file": f"images/{name}.jpg", "ring": i % 2, "split": "dev" if i < 5 else "holdout"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)


def gz1_sdss():
    root = HERE / "gz1_sdss" / "dummy_data"
    names = ["elliptical", "clockwise_spiral", "anticlockwise_spiral", "edge_on", "dont_know", "merger"]
    rows = []
    for i, objid in enumerate(pick(lambda n: str(587722981700000000 + n))):
        save(root / "images" / f"{objid}.jpeg", galaxy(100 + i))
        rows.append({"dr7objid": objid, "file": f"images/{objid}.jpeg", "gz1_class": i % 6,
                     "gz1_class_name": names[i % 6]})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)


def gz2():
    root = HERE / "gz2" / "dummy_data"
    schema = get_schema("gz2_willett")
    rng = np.random.default_rng(0)
    kaggle, hart = [], []
    gids = pick(lambda n: str(100000 + n))
    objids = pick(lambda n: str(587722981800000000 + n))
    for i, (gid, objid) in enumerate(zip(gids, objids)):
        counts = np.zeros(schema.n_answers)
        for q in schema.question_order():
            n = 44 if q.asked_after is None else counts[schema.answer(q.asked_after).index]
            counts[q.start:q.end] = rng.multinomial(int(n), rng.dirichlet(np.ones(q.end - q.start)))
        save(root / "images_training_rev1" / f"{gid}.jpg", galaxy(200 + i))
        kaggle.append({"GalaxyID": gid, **{f"Class{qi + 1}.{ai + 1}": counts[a.index] / 44
                                           for qi, q in enumerate(schema.questions) for ai, a in enumerate(q.answers)}})
        save(root / "images" / f"{objid}.jpg", galaxy(300 + i))
        hart.append({"dr7objid": objid, **{f"t{qi + 1:02d}_q_a{a.index + 1:02d}_{a.text}_count": int(counts[a.index])
                                           for qi, q in enumerate(schema.questions) for a in q.answers}})
    pd.DataFrame(kaggle).to_csv(root / "training_solutions_rev1.csv", index=False)
    pd.DataFrame(hart).to_csv(root / "gz2_hart16.csv", index=False)


def gz_decals():
    root = HERE / "gz_decals" / "dummy_data"
    schema = get_schema("gz_decals_dr5")
    for campaign in ("5", "8"):
        rows = []
        names = pick(lambda n: f"J{campaign}{n:02d}000.00+000000.0")
        for i, name in enumerate(names):
            rng = np.random.default_rng([int(campaign), i])
            g = synthetic.sample_truth(rng)
            pixels = synthetic.render(g, 32, rng)
            votes = synthetic.simulate_votes(g, schema, rng)
            save(root / "images" / name[:4] / f"{name}.png", pixels)
            row = {"iauname": name, **dict(zip(schema.label_cols, votes.astype(float)))}
            row = {k: (np.nan if isinstance(v, float) and v == 0 and rng.random() < 0.3 else v) for k, v in row.items()}
            rows.append(row)
        pd.DataFrame(rows).to_csv(root / f"gz_decals_volunteers_{campaign}.csv", index=False)


def galaxy10():
    root = HERE / "galaxy10_decals" / "dummy_data"
    root.mkdir(parents=True, exist_ok=True)
    n = max(int(k) for k in pick(str)) + 1  # the first n indices fill every split
    with h5py.File(root / "Galaxy10_DECals.h5", "w") as f:
        f["images"] = np.stack([galaxy(400 + i) for i in range(n)])
        f["ans"] = np.arange(n, dtype=np.uint8) % 10
        f["ra"] = np.linspace(0, 10, n)
        f["dec"] = np.linspace(-5, 5, n)
        f["redshift"] = np.linspace(0.01, 0.1, n)


def synthetic_gz():
    root = HERE / "synthetic_gz" / "dummy_data"
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text("synthetic_gz renders its own galaxies and needs no input files.\n")


if __name__ == "__main__":
    for fn in (gz_rings, gz1_sdss, gz2, gz_decals, galaxy10, synthetic_gz):
        fn()
        print("made", fn.__name__)
