"""galaxy10_decals: the Galaxy10 DECaLS set (17,736 galaxies, 10 classes, 256x256 colour)."""
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from zoobot_tf.tasks import ClassificationTask
from zoobot_tf.tfds.common import image_features, require_files, split_of

CLASSES = ["disturbed", "merging", "round_smooth", "in_between_round_smooth", "cigar_shaped_smooth",
           "barred_spiral", "unbarred_tight_spiral", "unbarred_loose_spiral", "edge_on_without_bulge",
           "edge_on_with_bulge"]
_INSTRUCTIONS = """
Put in the manual directory the public file Galaxy10_DECals.h5 (Leung & Bovy, astroNN;
https://astronn.readthedocs.io/en/latest/galaxy10.html): datasets 'images' (N, 256, 256, 3) uint8,
'ans' (N,) class 0-9, and optionally 'ra', 'dec', 'redshift'. Splits are made deterministically by index.
"""


class Builder(tfds.core.GeneratorBasedBuilder):
    """Galaxy10 DECaLS: GZ DECaLS images with 10 morphology classes derived from volunteer votes."""

    TASK = ClassificationTask(CLASSES)  # what zoobot-tf trains on (see zoobot_tf.tasks)
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def _info(self):
        return self.dataset_info_from_configs(
            description="Galaxy10 DECaLS (Leung & Bovy 2019; images from GZ DECaLS, Walmsley et al. 2022).",
            features=tfds.features.FeaturesDict({
                **image_features(),
                "label": tfds.features.ClassLabel(names=CLASSES),
                "ra": np.float32, "dec": np.float32, "redshift": np.float32,
            }),
            supervised_keys=("image", "label"),
            homepage="https://astronn.readthedocs.io/en/latest/galaxy10.html",
        )

    def _split_generators(self, dl_manager):
        import h5py

        path = Path(dl_manager.manual_dir) / "Galaxy10_DECals.h5"
        require_files(path.parent, [path.name], _INSTRUCTIONS)
        with h5py.File(path, "r") as f:
            for key in ("images", "ans"):
                if key not in f:
                    raise ValueError(f"{path} has no dataset {key!r}.\n{_INSTRUCTIONS}")
            n = len(f["ans"])
        split = [split_of(str(i)) for i in range(n)]
        return {s: self._generate_examples(path, [i for i in range(n) if split[i] == s])
                for s in ("train", "validation", "test")}

    def _generate_examples(self, path, indices):
        import h5py

        with h5py.File(path, "r") as f:
            extra = {k: f[k] for k in ("ra", "dec", "redshift") if k in f}
            for i in indices:
                yield i, {"image": f["images"][i], "id_str": str(i), "label": int(f["ans"][i]),
                          **{k: np.float32(extra[k][i]) if k in extra else np.float32(np.nan)
                             for k in ("ra", "dec", "redshift")}}
