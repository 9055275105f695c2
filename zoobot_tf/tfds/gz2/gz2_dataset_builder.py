"""gz2: Galaxy Zoo 2 vote counts over the published 37-answer tree (Willett et al. 2013)."""
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from zoobot_tf.data.catalogs import gz2_willett_to_schema_columns
from zoobot_tf.schemas import get_schema
from zoobot_tf.tasks import VoteTask
from zoobot_tf.tfds.common import BeamWhenAsked, require_files, rgb_array, split_of, vote_features

SCHEMA = get_schema("gz2_willett")
# Kaggle's crowd fractions are weighted and debiased; counts are approximated as fraction x this many
# volunteers (the GZ2 median for the main sample is ~44 classifications per galaxy).
ASSUMED_VOLUNTEERS = 44

_INSTRUCTIONS = """
Config 'kaggle': the Kaggle "Galaxy Zoo - The Galaxy Challenge" training data
(https://www.kaggle.com/c/galaxy-zoo-the-galaxy-challenge, research/non-commercial terms):
  training_solutions_rev1.csv     GalaxyID, Class1.1 .. Class11.6 (cumulative vote fractions)
  images_training_rev1/           <GalaxyID>.jpg, 424x424
Config 'hart16': the GZ2 data-release table with vote counts (Willett et al. 2013 / Hart et al. 2016,
data.galaxyzoo.org) and SDSS cutouts named by object id:
  gz2_hart16.csv                  dr7objid and the t01..t11 '*_count' columns
  images/                         <dr7objid>.jpg
Kaggle fractions are cumulative down the tree (Class2.x sum to Class1.2, ...). They are converted to
per-question fractions, and to approximate counts: round(cumulative fraction x 44).
"""


class Builder(BeamWhenAsked, tfds.core.GeneratorBasedBuilder):
    """GZ2 images with votes for all 11 questions / 37 answers."""

    TASK = VoteTask(SCHEMA)  # what zoobot-tf trains on (see zoobot_tf.tasks)
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="kaggle", description="Kaggle challenge images, approximate counts."),
        tfds.core.BuilderConfig(name="hart16", description="GZ2 data-release counts, images by dr7objid."),
    ]

    def _info(self):
        return self.dataset_info_from_configs(
            description="Galaxy Zoo 2 (Willett et al. 2013): SDSS images with volunteer votes on the "
                        "gz2_willett schema (11 questions, 37 answers, answers in schema order).",
            features=tfds.features.FeaturesDict({
                **vote_features(SCHEMA),
                "fractions": tfds.features.Tensor(shape=(SCHEMA.n_answers,), dtype=np.float32),
            }),
            supervised_keys=("image", "votes"),
            homepage="https://data.galaxyzoo.org",
        )

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        if self.builder_config.name == "kaggle":
            require_files(root, ["training_solutions_rev1.csv", "images_training_rev1"], _INSTRUCTIONS)
            table = pd.read_csv(root / "training_solutions_rev1.csv")
            ids, counts, fractions = kaggle_to_counts(table)
            files = [root / "images_training_rev1" / f"{i}.jpg" for i in ids]
        else:
            require_files(root, ["gz2_hart16.csv", "images"], _INSTRUCTIONS)
            table = gz2_willett_to_schema_columns(pd.read_csv(root / "gz2_hart16.csv"), id_col="dr7objid")
            ids = table["id_str"].tolist()
            counts = table[SCHEMA.label_cols].to_numpy(np.int32)
            fractions = per_question_fractions(counts.astype(np.float64))
            files = [root / "images" / f"{i}.jpg" for i in ids]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} images are missing, e.g. {missing[:3]}")
        split = np.array([split_of(i) for i in ids])
        rows = list(zip(ids, files, counts, fractions))
        return {s: self._generate_examples([r for r, sp in zip(rows, split) if sp == s])
                for s in ("train", "validation", "test")}

    def _generate_examples(self, rows):
        return self._examples(rows, _example)


def _example(row):
    id_str, path, votes, frac = row
    return id_str, {"image": rgb_array(path), "id_str": id_str, "votes": votes.astype(np.int32),
                    "fractions": np.nan_to_num(frac).astype(np.float32)}


def per_question_fractions(values: np.ndarray) -> np.ndarray:
    out = np.full(values.shape, np.nan)
    for s, e in SCHEMA.question_index_groups:
        total = values[:, s:e].sum(1, keepdims=True)
        np.divide(values[:, s:e], total, out=out[:, s:e], where=total > 0)
    return out


def kaggle_to_counts(table: pd.DataFrame):
    """Kaggle ``Class1.1 .. Class11.6`` cumulative fractions -> (ids, approximate counts, fractions)."""
    cols = [c for c in table.columns if c.startswith("Class")]
    if len(cols) != SCHEMA.n_answers:
        raise ValueError(f"Expected {SCHEMA.n_answers} Class columns in the Kaggle table, found {len(cols)}")
    order = sorted(cols, key=lambda c: tuple(int(x) for x in c[5:].split(".")))
    cumulative = table[order].to_numpy(np.float64)
    counts = np.rint(cumulative * ASSUMED_VOLUNTEERS).astype(np.int32)
    return table["GalaxyID"].astype(str).tolist(), counts, per_question_fractions(cumulative)
