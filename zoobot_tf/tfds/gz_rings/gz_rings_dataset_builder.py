"""gz_rings: GZ DECaLS DR5 galaxies with a ring / no-ring label (Zoobot's example data)."""
from pathlib import Path

import pandas as pd
import tensorflow_datasets as tfds

from zoobot_tf.tasks import ClassificationTask
from zoobot_tf.tfds.common import image_features, require_files, rgb_array

_INSTRUCTIONS = """
Put in the manual directory (the layout of Zoobot's ring example, as in ../shared/data/gz_decals_rings):
  labels.csv      columns iauname, file (image path relative to this folder), ring (0/1),
                  optional split (dev/holdout)
  images/         the JPEG/PNG images named in labels.csv
The images and ring catalogue are in the history of github.com/mwalmsley/zoobot
(data/example_images/basic, data/example_ring_catalog_basic.csv; GPL-3.0; images from DECaLS DR5).
"""


class Builder(tfds.core.GeneratorBasedBuilder):
    """GZ DECaLS ring classification (470 galaxies, balanced, weak Talk-tag labels)."""

    TASK = ClassificationTask(["no_ring", "ring"])  # what zoobot-tf trains on (see zoobot_tf.tasks)
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def _info(self):
        return self.dataset_info_from_configs(
            description="Galaxy Zoo DECaLS DR5 colour images with a binary ring label (Walmsley et al. 2022).",
            features=tfds.features.FeaturesDict({
                **image_features(),
                "label": tfds.features.ClassLabel(names=["no_ring", "ring"]),
            }),
            supervised_keys=("image", "label"),
            homepage="https://github.com/mwalmsley/zoobot",
        )

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        require_files(root, ["labels.csv", "images"], _INSTRUCTIONS)
        labels = pd.read_csv(root / "labels.csv")
        for col in ("iauname", "file", "ring"):
            if col not in labels.columns:
                raise ValueError(f"{root / 'labels.csv'} has no column {col!r}.\n{_INSTRUCTIONS}")
        missing = [f for f in labels["file"] if not (root / f).exists()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} images named in labels.csv are missing, e.g. {missing[:3]}")
        if "split" in labels.columns:  # the source's dev/holdout split
            split = labels["split"].map({"dev": "train", "holdout": "test"})
        else:
            from zoobot_tf.tfds.common import split_of

            split = labels["iauname"].map(lambda i: split_of(i, (0.6, 0.4), ("train", "test")))
        return {s: self._generate_examples(root, labels[split == s]) for s in ("train", "test")}

    def _generate_examples(self, root, labels):
        for row in labels.itertuples():
            yield row.iauname, {"image": rgb_array(root / row.file), "id_str": row.iauname, "label": int(row.ring)}
