"""gz1_sdss: SDSS DR7 galaxies with one Galaxy Zoo 1 class each."""
from pathlib import Path

import pandas as pd
import tensorflow_datasets as tfds

from zoobot_tf.tasks import ClassificationTask
from zoobot_tf.tfds.common import BeamWhenAsked, image_features, require_files, rgb_array, split_of

CLASSES = ["elliptical", "clockwise_spiral", "anticlockwise_spiral", "edge_on", "dont_know", "merger"]
_INSTRUCTIONS = """
Put in the manual directory (the layout of ../shared/data/gz1_sdss):
  labels.csv      columns dr7objid, file (image path relative to this folder), gz1_class (0-5)
  images/         the SDSS gri JPEG cutouts named in labels.csv
Classes: 0 elliptical, 1 clockwise spiral, 2 anticlockwise spiral, 3 edge-on, 4 don't know, 5 merger
(Lintott et al. 2008, 2011; images from SDSS DR7). Splits are made deterministically from dr7objid.
Note: clockwise/anticlockwise are mirror images of each other: do not train with flip augmentation, and
finetune with ``--flip false --mirror_pairs clockwise_spiral:anticlockwise_spiral`` (predictions symmetric
under mirroring).
"""


class Builder(BeamWhenAsked, tfds.core.GeneratorBasedBuilder):
    """Galaxy Zoo 1 six-class morphology on SDSS DR7 cutouts (one class per galaxy)."""

    TASK = ClassificationTask(CLASSES)  # what zoobot-tf trains on (see zoobot_tf.tasks)
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def _info(self):
        return self.dataset_info_from_configs(
            description="Galaxy Zoo 1 classes (elliptical, spiral by winding direction, edge-on, don't know, "
                        "merger) for SDSS DR7 colour cutouts. Galaxies fill the central ~30% of the frame.",
            features=tfds.features.FeaturesDict({
                **image_features(),
                "label": tfds.features.ClassLabel(names=CLASSES),
            }),
            supervised_keys=("image", "label"),
            homepage="https://data.galaxyzoo.org",
        )

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        require_files(root, ["labels.csv", "images"], _INSTRUCTIONS)
        labels = pd.read_csv(root / "labels.csv", dtype={"dr7objid": str})
        missing = [f for f in labels["file"] if not (root / f).exists()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} images named in labels.csv are missing, e.g. {missing[:3]}")
        split = labels["dr7objid"].map(split_of)
        return {s: self._generate_examples(root, labels[split == s]) for s in ("train", "validation", "test")}

    def _generate_examples(self, root, labels):
        return self._examples([(row.dr7objid, str(root / row.file), int(row.gz1_class))
                               for row in labels.itertuples()], _example)


def _example(row):
    dr7objid, path, label = row
    return dr7objid, {"image": rgb_array(path), "id_str": dr7objid, "label": label}
