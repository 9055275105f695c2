"""gz_decals: GZ DECaLS volunteer vote counts with DECaLS images (Walmsley et al. 2022)."""
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds

from zoobot_tf.schemas import get_schema
from zoobot_tf.tasks import VoteTask
from zoobot_tf.tfds.common import BeamWhenAsked, require_files, rgb_array, split_of, vote_features

SCHEMA = get_schema("gz_decals_dr5")  # DR5 and DR8 campaigns share this tree

_INSTRUCTIONS = """
Put in the manual directory, from the GZ DECaLS data release (Zenodo, doi:10.5281/zenodo.4196266, CC-BY-4.0):
  gz_decals_volunteers_5.csv (config dr5) or gz_decals_volunteers_8.csv (config dr8), or votes.csv:
                   iauname and the vote-count columns of the gz_decals_dr5 schema
                   (smooth-or-featured_smooth, ..., merging_merger); empty counts are read as 0
  images/          the PNG/JPEG images, as images/<iauname[:4]>/<iauname>.png (the Zenodo zips'
                   layout), images/<iauname>.png, or paths given in a 'file_loc' column
"""


class Builder(BeamWhenAsked, tfds.core.GeneratorBasedBuilder):
    """GZ DECaLS images with raw volunteer votes on the DR5/DR8 decision tree (10 questions, 34 answers)."""

    TASK = VoteTask(SCHEMA)  # what zoobot-tf trains on (see zoobot_tf.tasks)
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="dr5", description="GZ DECaLS DR5 campaign (GZD-5)."),
        tfds.core.BuilderConfig(name="dr8", description="GZ DECaLS DR8 campaign (GZD-8)."),
    ]

    def _info(self):
        return self.dataset_info_from_configs(
            description="Galaxy Zoo DECaLS: DECaLS colour images with volunteer vote counts, answers in the "
                        "order of zoobot_tf's gz_decals_dr5 schema.",
            features=tfds.features.FeaturesDict({
                **vote_features(SCHEMA),
            }),
            supervised_keys=("image", "votes"),
            homepage="https://zenodo.org/record/4196266",
        )

    def _catalog(self, root: Path) -> Path:
        campaign = self.builder_config.name[2:]
        for name in (f"gz_decals_volunteers_{campaign}.csv", "votes.csv"):
            if (root / name).exists():
                return root / name
        require_files(root, [f"gz_decals_volunteers_{campaign}.csv (or votes.csv)"], _INSTRUCTIONS)

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        require_files(root, ["images"], _INSTRUCTIONS)
        table = pd.read_csv(self._catalog(root))
        missing_cols = [c for c in SCHEMA.label_cols if c not in table.columns]
        if "iauname" not in table.columns or missing_cols:
            raise ValueError(f"The vote table lacks columns: {(['iauname'] if 'iauname' not in table else [])}"
                             f" {missing_cols[:8]}\n{_INSTRUCTIONS}")
        files = [self._image(root, row) for row in table.itertuples()]
        missing = [i for i, f in zip(table["iauname"], files) if f is None]
        if missing:
            raise FileNotFoundError(f"No image found for {len(missing)} galaxies, e.g. {missing[:3]}\n{_INSTRUCTIONS}")
        counts = table[SCHEMA.label_cols].fillna(0).to_numpy(np.float64)
        if (counts < 0).any() or (counts != np.round(counts)).any():
            raise ValueError("Vote columns must hold non-negative integer counts (not fractions).")
        split = table["iauname"].map(split_of).to_numpy()
        rows = list(zip(table["iauname"], files, counts.astype(np.int32)))
        return {s: self._generate_examples([r for r, sp in zip(rows, split) if sp == s])
                for s in ("train", "validation", "test")}

    @staticmethod
    def _image(root: Path, row):
        if hasattr(row, "file_loc") and isinstance(row.file_loc, str) and (root / row.file_loc).exists():
            return root / row.file_loc
        for rel in (f"{row.iauname[:4]}/{row.iauname}", row.iauname):
            for suffix in (".png", ".jpg", ".jpeg"):
                if (root / "images" / (rel + suffix)).exists():
                    return root / "images" / (rel + suffix)
        return None

    def _generate_examples(self, rows):
        return self._examples(rows, _example)


def _example(row):
    iauname, path, votes = row
    return iauname, {"image": rgb_array(path), "id_str": iauname, "votes": votes}
