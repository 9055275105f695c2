"""Similarity search and anomaly scores at survey scale: exact (numpy) vs FAISS HNSW (issue 17).

    python benchmarks/similarity.py --n 1000000 --dim 128

Embeddings are synthetic but structured (galaxies around a few hundred types, as an encoder's are). Measured:
index build, 1,000 top-10 queries, recall@10 of the approximate search against the exact one on those queries,
and anomaly scores (k=10) for every galaxy: timed with FAISS, and for the exact path timed on a sample of rows
and scaled to N (it is O(N^2); computing it whole at a million galaxies would take the better part of an hour
here). Prints a table and writes benchmarks/results/similarity.json.
"""
import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
from timing import write_json  # noqa: E402
from zoobot_tf.representations import EmbeddingIndex  # noqa: E402


def clustered(n, d, centres=300, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d)).astype(np.float32)
    x = c[rng.integers(0, centres, n)]
    x += rng.normal(scale=0.6, size=(n, d)).astype(np.float32)
    return x


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--exact_sample", type=int, default=2000, help="rows whose exact anomaly score is timed")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "similarity.json"))
    args = parser.parse_args()

    x = clustered(args.n, args.dim)
    ids = np.arange(args.n).astype(str)
    rows = {}

    def done(key, value):
        rows[key] = value
        print(f"  {key}: {value:.4g}", flush=True)

    t = time.perf_counter()
    exact = EmbeddingIndex(ids, x, method="exact")
    done("exact_build_s", time.perf_counter() - t)
    t = time.perf_counter()
    approx = EmbeddingIndex(ids, x, method="faiss")
    done("faiss_build_s", time.perf_counter() - t)
    q = exact.unit[np.random.default_rng(1).choice(args.n, args.queries, replace=False)]
    t = time.perf_counter()
    _, truth = exact.search(q, 10)
    done("exact_query_ms", (time.perf_counter() - t) / args.queries * 1e3)
    t = time.perf_counter()
    _, found = approx.search(q, 10)
    done("faiss_query_ms", (time.perf_counter() - t) / args.queries * 1e3)
    done("recall_at_10", float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)])))
    sample = exact.unit[: args.exact_sample]
    t = time.perf_counter()
    exact.search(sample, 11)
    done("exact_anomaly_all_s_projected", (time.perf_counter() - t) * args.n / args.exact_sample)
    t = time.perf_counter()
    approx.anomaly_scores(k=10)
    done("faiss_anomaly_all_s", time.perf_counter() - t)

    result = {"n": args.n, "dim": args.dim, "queries": args.queries, "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), **rows}
    print(f"{args.n:,} embeddings x {args.dim} dims, {args.queries} queries, {os.cpu_count()} CPUs")
    print("| measure | exact (numpy) | FAISS HNSW |\n|---|---|---|")
    print(f"| build | {rows['exact_build_s']:.1f} s | {rows['faiss_build_s']:.1f} s |")
    print(f"| one top-10 query | {rows['exact_query_ms']:.1f} ms | {rows['faiss_query_ms']:.2f} ms |")
    print(f"| recall@10 vs exact | 1 | {rows['recall_at_10']:.3f} |")
    print(f"| anomaly scores, every galaxy | {rows['exact_anomaly_all_s_projected'] / 60:.0f} min (projected from "
          f"{args.exact_sample} rows) | {rows['faiss_anomaly_all_s'] / 60:.1f} min |")
    write_json(result, args.out)


if __name__ == "__main__":
    main()
