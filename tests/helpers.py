"""Small builders shared by tests: tiny catalogs of real encoded images with votes."""
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from zoobot_tf.schemas import get_schema


def write_images(folder: Path, n: int, size: int = 40, seed: int = 0, fmt: str = "jpg") -> list[str]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        yy, xx = np.mgrid[0:size, 0:size]
        r = np.hypot(xx - size / 2, yy - size / 2)
        blob = np.exp(-(r / rng.uniform(3, 10)) ** 2)[..., None] * rng.uniform(100, 250, 3)
        pixels = np.clip(blob + rng.normal(0, 5, (size, size, 3)), 0, 255).astype(np.uint8)
        path = folder / f"g{i:04d}.{fmt}"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def vote_catalog(folder: Path, n: int = 20, schema="gz_decals_dr5", seed: int = 0, size: int = 40) -> pd.DataFrame:
    schema = get_schema(schema)
    rng = np.random.default_rng(seed)
    paths = write_images(folder, n, size=size, seed=seed)
    counts = np.zeros((n, schema.n_answers), dtype=np.int64)
    for q in schema.question_order():
        parent = counts[:, schema.answer(q.asked_after).index] if q.asked_after else np.full(n, 30)
        for i in range(n):
            counts[i, q.start:q.end] = rng.multinomial(parent[i], rng.dirichlet(np.ones(q.end - q.start)))
    df = pd.DataFrame(counts, columns=schema.label_cols)
    df.insert(0, "file_loc", paths)
    df.insert(0, "id_str", [f"g{i:04d}" for i in range(n)])
    return df
