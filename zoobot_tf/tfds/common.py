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


class BeamWhenAsked:
    """Mixin for the builders of large sources: with Beam options (``tfds build ... --beam_pipeline_options=...``,
    ``zoobot-tf tfds-build ... --beam_options ...`` or ``download_config=tfds.download.DownloadConfig(
    beam_options=...)``) the examples are made on Apache Beam, each worker reading its share of the images;
    without, in this process, with no Beam needed. ``make_example(row) -> (key, example)`` must be a
    module-level function (Beam ships it to the workers)."""

    def _download_and_prepare(self, dl_manager, download_config):
        self._on_beam = bool(download_config.beam_options or download_config.beam_runner)
        return super()._download_and_prepare(dl_manager, download_config)

    def _examples(self, rows, make_example):
        if getattr(self, "_on_beam", False):
            import tensorflow_datasets as tfds

            beam = tfds.core.lazy_imports.apache_beam
            return beam.Create(list(rows)) | beam.Reshuffle() | beam.Map(make_example)
        return (make_example(r) for r in rows)
