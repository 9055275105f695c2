"""What tf.data's autotuning costs at the end of every pass over a pipeline: an epoch's loop, then deleting
its iterator, with the fast path (autotuning off, ``zoobot_tf.data.pipeline.pipeline_options``) and
without (``ZOOBOT_TF_FAST=0``'s pipelines: autotuning on).

    python benchmarks/pipeline_autotune.py [--epochs 5] [--rounds 2] [--work 40]

The pipeline is ``zoobot_tf.data.pipeline.finish`` over 640 in-memory 64-px JPEGs (training: decoded,
cached, shuffled, batches of 32), as ``fit`` reads a catalog; the consumer stands in for the model: ``--work``
chained 1024x1024 matmuls per batch on the same cores (about 0.3 s). Keras deletes the epoch's iterator
(and the validation pass's) before the next epoch; ``predict`` deletes its own at the end. Prints per
setting the loop and teardown seconds per epoch (median of rounds, interleaved) and writes
benchmarks/results/pipeline_autotune.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

REPO = Path(__file__).resolve().parents[1]


def epochs(fast: bool, n_epochs: int, work) -> list[tuple[float, float]]:
    """(loop seconds, teardown seconds) per epoch of a pipeline built with the fast path on or off."""
    from zoobot_tf.data.pipeline import finish
    from zoobot_tf.ops import fast_path

    images = [tf.io.encode_jpeg(tf.cast(tf.random.stateless_uniform([64, 64, 3], (i, 0), 0, 255), tf.uint8)).numpy()
              for i in range(640)]
    with fast_path(fast):
        ds = finish(tf.data.Dataset.from_tensor_slices((images, np.zeros(640, np.int64))), 32, 64, training=True,
                    n_examples=640, seed=0)
    out = []
    for _ in range(n_epochs):
        start = time.perf_counter()
        iterator = iter(ds)
        for _batch in iterator:
            work()
        looped = time.perf_counter()
        del iterator  # as Keras does before the next epoch
        out.append((looped - start, time.perf_counter() - looped))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--work", type=int, default=40, help="chained 1024x1024 matmuls per batch (the model's stand-in)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "pipeline_autotune.json"))
    args = p.parse_args(argv)
    a = tf.random.stateless_uniform([1024, 1024], (1, 2))

    @tf.function
    def work():
        b = a
        for _ in range(args.work):
            b = tf.matmul(b, a) * 1e-3
        return b

    work()
    runs = {"fast path (autotuning off)": [], "stock (autotuning on)": []}
    for r in range(args.rounds):
        for name, fast in (("fast path (autotuning off)", True), ("stock (autotuning on)", False)):
            runs[name] += epochs(fast, args.epochs, work)
            print(f"round {r + 1} {name}: " + " ".join(f"{lp:.2f}+{td:.2f}" for lp, td in runs[name][-args.epochs:]),
                  flush=True)
    rows = []
    for name, values in runs.items():
        loop = statistics.median(v[0] for v in values)
        teardown = [v[1] for v in values]
        rows.append({"setting": name, "epochs": len(values), "loop_s_median": loop,
                     "teardown_s_median": statistics.median(teardown), "teardown_s_max": max(teardown),
                     "total_s": sum(v[0] + v[1] for v in values)})
    print("\n| pipeline | epochs | loop s (median) | teardown s (median / max) | total s |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['setting']} | {row['epochs']} | {row['loop_s_median']:.2f} | {row['teardown_s_median']:.2f} / "
              f"{row['teardown_s_max']:.2f} | {row['total_s']:.1f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"work_matmuls": args.work, "rows": rows,
                                          "epochs": {k: [list(v) for v in vs] for k, vs in runs.items()}}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
