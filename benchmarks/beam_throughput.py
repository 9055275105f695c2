"""Batch predictions on Apache Beam: throughput of 1 vs 2 local workers, and a projected cost for 10 million
galaxies on Dataflow (issue 17).

    python benchmarks/beam_throughput.py --n_galaxies 2000

Runs, each in a fresh process as a user types it, on the same folder of synthetic galaxies with the embedded
model: ``zoobot-tf predict`` in one process, then ``--runner direct --workers 1`` and ``--workers 2``
(Beam's DirectRunner, worker processes on this machine). Wall time includes each command's start-up (Beam's
worker processes each import TensorFlow and load the model). The projection scales the measured per-worker
throughput to Dataflow workers, with the price list stated in the output (check it before budgeting).
Prints a table and writes benchmarks/results/beam_throughput.json.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from timing import write_json  # noqa: E402

# Dataflow batch list prices, us-central1 (USD; https://cloud.google.com/dataflow/pricing), per worker resource
PRICE = {"vcpu_hour": 0.056, "gb_hour": 0.003557, "worker": "n1-standard-4 (4 vCPU, 15 GB)", "vcpus": 4, "gb": 15}


def timed(cmd, cwd):
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_galaxies", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=250)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "beam_throughput.json"))
    args = parser.parse_args()
    zoobot = [sys.executable, "-m", "zoobot_tf.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(zoobot + ["make-synthetic", "--n_galaxies", str(args.n_galaxies), "--output_dir", "g",
                                 "--progress", "false"], cwd=tmp, check=True, capture_output=True)
        common = ["predict", "--input", "g/images", "--progress", "false", "--chunk", str(args.chunk)]
        runs = {
            "one process": zoobot + common + ["--output", "a.parquet"],
            "beam direct, 1 worker": zoobot + common + ["--output", "b.parquet", "--runner", "direct", "--workers", "1"],
            "beam direct, 2 workers": zoobot + common + ["--output", "c.parquet", "--runner", "direct",
                                                         "--workers", "2"],
        }
        seconds = {name: timed(cmd, tmp) for name, cmd in runs.items()}
    rate = {k: args.n_galaxies / v for k, v in seconds.items()}
    per_core = rate["beam direct, 2 workers"] / min(2, os.cpu_count())
    n = 10_000_000
    core_hours = n / per_core / 3600
    workers_hours = core_hours / PRICE["vcpus"]
    cost = workers_hours * (PRICE["vcpus"] * PRICE["vcpu_hour"] + PRICE["gb"] * PRICE["gb_hour"])
    result = {"n_galaxies": args.n_galaxies, "cpus": os.cpu_count(), "seconds": seconds, "galaxies_per_s": rate,
              "speedup_2_vs_1_worker": rate["beam direct, 2 workers"] / rate["beam direct, 1 worker"],
              "projection": {"galaxies": n, "galaxies_per_s_per_vcpu": per_core, "vcpu_hours": core_hours,
                             "price": PRICE, "usd": cost}}
    print(f"{args.n_galaxies} synthetic galaxies, embedded model (64 px), {os.cpu_count()} CPUs, wall time with start-up")
    print("| run | seconds | galaxies/s |\n|---|---|---|")
    for k in seconds:
        print(f"| {k} | {seconds[k]:.1f} | {rate[k]:.1f} |")
    print(f"2 vs 1 worker: {result['speedup_2_vs_1_worker']:.2f}x")
    print(f"10 million galaxies at {per_core:.1f} galaxies/s per vCPU = {core_hours:.0f} vCPU-hours = "
          f"{workers_hours:.0f} {PRICE['worker']} worker-hours x (4 x ${PRICE['vcpu_hour']} + 15 x "
          f"${PRICE['gb_hour']}) = ${cost:.0f} on Dataflow batch (list prices, us-central1)")
    write_json(result, args.out)


if __name__ == "__main__":
    main()
