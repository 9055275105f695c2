"""The miniature scaling study: synthetic galaxies, 4 model sizes x 5 data sizes x 2 seeds, on a 2-core CPU.

    python benchmarks/scaling_mini/run.py          # ~46 min on 2 cores; resumable (finished points are skipped)

Renders 8,000 synthetic galaxies at 48 px with simulated GZ DECaLS votes, writes shards (80/10/10
train/val/test: one fixed test set of ~800), runs every point of grid.yaml with zoobot_tf.scaling,
then fits L(D) = a D^-b + c per model size and plots. Results go to benchmarks/scaling_mini/
(results.csv, fits.json, scaling.png/pdf); the working data to benchmarks/scaling_mini/scratch/ (ignored).
"""
import shutil
import time
from pathlib import Path

import yaml

from zoobot_tf import scaling
from zoobot_tf.data import synthetic, tfrecords
from zoobot_tf.tasks import VoteTask

HERE = Path(__file__).parent
REPO = HERE.parents[1]


def main():
    grid = yaml.safe_load((HERE / "grid.yaml").read_text())
    grid["shards"] = str(REPO / grid["shards"])
    grid["output_dir"] = str(REPO / grid["output_dir"])
    shards = Path(grid["shards"])
    if not (shards / tfrecords.MANIFEST).exists():
        catalog = synthetic.make_synthetic_catalog(8000, shards.parent / "synthetic", stored_size=48, seed=0)
        tfrecords.write_shards(catalog, shards, task=VoteTask("gz_decals_dr5"), overwrite=True)
    start = time.time()
    scaling.run(grid)
    print(f"sweep: {(time.time() - start) / 60:.1f} min")
    results = scaling.read_results(grid["output_dir"])
    shutil.copy(Path(grid["output_dir"]) / scaling.RESULTS, HERE / scaling.RESULTS)
    fits = scaling.analyse(results, HERE)
    print(scaling.exponent_table(fits))


if __name__ == "__main__":
    main()
