"""What the Galaxy Zoo TFDS builders share: features, the split rule, manual-file checks, image reading."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from zoobot_tf.data import splits

# TFDS's split names (zoobot-tf's "val" is TFDS's "validation"; see zoobot_tf.data.splits)
TFDS_SPLITS = tuple(splits.TFDS_SPLIT_NAMES[s] for s in splits.SPLITS)


def split_of(key: str, fractions: Sequence[float] = splits.DEFAULT_FRACTIONS,
             names: Sequence[str] = TFDS_SPLITS) -> str:
    """Deterministic split of one example by a hash of its id (for sources that define no splits): the
    same rule, and so the same split for the same id, as catalogs and shards (:func:`splits.split_by_id`)."""
    return splits.split_of(key, fractions, names)


def require_files(manual_dir, required, instructions: str) -> None:
    """Raise one clear error naming every missing manual file, before anything is generated."""
    manual_dir = Path(manual_dir)
    missing = [r for r in required if not (manual_dir / r).exists()]
    if missing:
        raise FileNotFoundError(
            f"Missing in the manual directory {manual_dir}: {', '.join(missing)}.\n{instructions.strip()}")


def image_features() -> dict:
    """The features every builder shares: the encoded image and the galaxy's id."""
    import tensorflow_datasets as tfds

    return {"image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"), "id_str": tfds.features.Text()}


def vote_features(schema) -> dict:
    """image_features() plus the raw vote counts as an int32 tensor in ``schema``'s answer order."""
    import tensorflow_datasets as tfds

    return {**image_features(), "votes": tfds.features.Tensor(shape=(schema.n_answers,), dtype=np.int32)}


def rgb_array(path) -> np.ndarray:
    """An image file as uint8 (H, W, 3) RGB (alpha dropped, greyscale replicated), for TFDS to encode."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
