"""The miniature scaling study: synthetic galaxies, 4 model sizes x 6 data sizes x 3 seeds, on a 2-core CPU.

    python benchmarks/scaling_mini/run.py [--parallel 2] [--grid G]   # resumable: finished points are skipped
    zoobot-tf scaling analyse --results benchmarks/scaling_mini --out benchmarks/scaling_mini

Renders 32,000 synthetic galaxies at 32 px with simulated GZ DECaLS votes and writes shards (80/10/10
train/val/test by a hash of the id: ~25,600 / 3,200 / 3,200; one fixed test set), then runs every point of
grid.yaml as its own process (``zoobot-tf scaling run --grid grid.yaml --index I``), ``--parallel`` at a time
with one TensorFlow thread each (on 2 cores two single-threaded small models train faster in total than one
model on two threads). Points run seed by seed, so a partial sweep already holds whole curves. Every finished
point is appended to the grid's output_dir (results.csv, its validation curve to curves.csv), both copied
next to the grid file; the analysis (fits, prediction test, plots, tables) is ``zoobot-tf scaling analyse``
over the committed results. The copies next to the grid are the sweep's memory across machines: on a
fresh machine (empty scratch) the points they hold count as done and are not run again, so a sweep longer
than one sitting goes on where its committed results end.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from zoobot_tf import scaling
from zoobot_tf.data import synthetic, tfrecords
from zoobot_tf.tasks import VoteTask

HERE = Path(__file__).parent
REPO = HERE.parents[1]
N_GALAXIES, STORED_SIZE = 32_000, 32


def make_shards(shards: Path) -> None:
    if (shards / tfrecords.MANIFEST).exists():
        return
    catalog = synthetic.make_synthetic_catalog(N_GALAXIES, shards.parent / "synthetic", stored_size=STORED_SIZE, seed=0)
    tfrecords.write_shards(catalog, shards, task=VoteTask("gz_decals_dr5"), overwrite=True)


def merge_committed(kept: Path, out: Path) -> None:
    """Points committed beside the grid (finished on another machine) that this machine's output_dir lacks
    are added to it, so that they are not run again and the copies written back keep them."""
    for name in (scaling.RESULTS, scaling.CURVES):
        if not (kept / name).exists():
            continue
        here = pd.read_csv(out / name) if (out / name).exists() else pd.DataFrame(columns=["architecture"])
        have = {scaling._key(r) for _, r in here.iterrows()}
        committed = pd.read_csv(kept / name)
        missing = committed[[scaling._key(r) not in have for _, r in committed.iterrows()]]
        if len(missing):
            scaling.append_rows(out, missing, name)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallel", type=int, default=2, help="grid points trained at once")
    parser.add_argument("--grid", type=Path, default=HERE / "grid.yaml",
                        help="the sweep's grid; its results are kept next to it (default: the committed study)")
    parser.add_argument("--status", action="store_true", help="print how many points are done and the first ones "
                        "not done (or running), then stop")
    args = parser.parse_args()
    grid_file, kept = args.grid.resolve(), args.grid.resolve().parent
    os.chdir(REPO)  # the grid's paths are relative to the repository
    grid = scaling.load_grid(grid_file)
    out = Path(grid["output_dir"])
    if not args.status:
        make_shards(Path(grid["shards"]))
        merge_committed(kept, out)
    points = scaling.grid_points(grid)
    order = sorted(range(len(points)), key=lambda i: (points[i]["seed"], points[i]["architecture"], points[i]["fraction"]))
    done = {scaling._key(r) for d in (out, kept) for _, r in scaling.read_results(d).iterrows()}
    todo = [i for i in order if scaling._key(points[i]) not in done]
    print(f"{len(points) - len(todo)} of {len(points)} points done; {len(todo)} to run, {args.parallel} at a time", flush=True)
    if args.status:
        for i in todo[:args.parallel]:
            print(f"not done (or running): point {i} {points[i]['architecture']} fraction {points[i]['fraction']} seed {points[i]['seed']}")
        return
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    start, running = time.time(), []
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    while todo or running:
        while todo and len(running) < args.parallel:
            i = todo.pop(0)
            log = open(logs / f"point_{i:03d}.log", "w")
            cmd = [sys.executable, "-m", "zoobot_tf.cli", "scaling", "run", "--grid", str(grid_file),
                   "--index", str(i), "--progress", "false"]
            running.append((i, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        time.sleep(2)
        for job in [j for j in running if j[1].poll() is not None]:
            running.remove(job)
            job[2].close()
            p = points[job[0]]
            status = "ok" if job[1].returncode == 0 else f"FAILED ({job[1].returncode}; see {job[2].name})"
            print(f"[{(time.time() - start) / 60:6.1f} min] point {job[0]:3d} {p['architecture']} "
                  f"fraction {p['fraction']:.4f} seed {p['seed']}: {status}", flush=True)
            for name in (scaling.RESULTS, scaling.CURVES):
                if (out / name).exists():
                    shutil.copy(out / name, kept / name)


if __name__ == "__main__":
    main()
