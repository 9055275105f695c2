"""synthetic_gz: zoobot-tf's rendered galaxies with simulated GZ DECaLS volunteer votes."""
import numpy as np
import tensorflow_datasets as tfds

from zoobot_tf.data import synthetic
from zoobot_tf.schemas import get_schema
from zoobot_tf.tasks import VoteTask
from zoobot_tf.tfds.common import split_of, vote_features

SCHEMA = get_schema("gz_decals_dr5")


class SyntheticConfig(tfds.core.BuilderConfig):
    def __init__(self, *, n_galaxies: int, image_size: int, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.n_galaxies, self.image_size, self.seed = n_galaxies, image_size, seed


class Builder(tfds.core.GeneratorBasedBuilder):
    """Synthetic galaxies (Sersic/disc/bar/spiral/merger/artifact renderings) with ~40 simulated volunteers
    each walking the GZ DECaLS tree. Needs no downloads; deterministic in the seed."""

    TASK = VoteTask(SCHEMA)  # what zoobot-tf trains on (see zoobot_tf.tasks)
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        SyntheticConfig(name="default", description="5,000 galaxies at 64x64.", n_galaxies=5000, image_size=64),
        SyntheticConfig(name="large", description="50,000 galaxies at 128x128.", n_galaxies=50000,
                        image_size=128),
        SyntheticConfig(name="tiny", description="60 galaxies at 32x32 (tests).", n_galaxies=60, image_size=32),
    ]

    def _info(self):
        return self.dataset_info_from_configs(
            description="zoobot-tf synthetic Galaxy Zoo: rendered galaxies and simulated vote counts "
                        "(gz_decals_dr5 schema order), with the true kind of each galaxy.",
            features=tfds.features.FeaturesDict({
                **vote_features(SCHEMA),
                "true_kind": tfds.features.ClassLabel(names=list(synthetic.KINDS)),
            }),
            supervised_keys=("image", "votes"),
        )

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        ids = [f"synth-{cfg.seed}-{i:06d}" for i in range(cfg.n_galaxies)]
        split = [split_of(i) for i in ids]
        return {s: self._generate_examples([n for n in range(cfg.n_galaxies) if split[n] == s])
                for s in ("train", "validation", "test")}

    def _generate_examples(self, indices):
        cfg = self.builder_config
        for i in indices:
            rng = np.random.default_rng([cfg.seed, i])
            g = synthetic.sample_truth(rng)
            pixels = synthetic.render(g, cfg.image_size, rng)
            n_vol = int(np.clip(rng.poisson(40), 24, 56))
            votes = synthetic.simulate_votes(g, SCHEMA, rng, n_volunteers=n_vol)
            id_str = f"synth-{cfg.seed}-{i:06d}"
            yield id_str, {"image": pixels, "id_str": id_str, "votes": votes.astype(np.int32),
                           "true_kind": synthetic.KINDS.index(g.kind)}
