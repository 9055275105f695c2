"""Training and inference throughput of the backbones, first-step time, memory and achieved GFLOP/s.

    python benchmarks/throughput.py                       # default set, 224 px greyscale and colour, and 96 px
    python benchmarks/throughput.py --backbones efficientnet_b0,convnext_tiny --sizes 224 --channels 1

Each configuration runs in a fresh process (so tracing time and peak memory are its own): the full
Zoobot model (view layer, backbone, Dirichlet-multinomial head and per-question metrics) built and
compiled as ``zoobot-tf train`` does, fed a constant batch of 32 images already at the model's size and channel count:
* first_step_s: the first ``train_on_batch`` (tracing + graph optimisation + one step);
* train_img_s / infer_img_s: median over 3 timings of ``--steps`` steps (inference: dropout off);
* peak_rss_mb: the process's peak resident memory;
* gflops_train / gflops_infer: forward FLOPs per image from TensorFlow's profiler (x3 for training)
  times the measured rate, against the machine's fp32 matmul peak measured in the same run.
Prints a table and writes JSON (default benchmarks/results/throughput.json).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from timing import images_per_second

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BACKBONES = ["efficientnet_b0", "convnext_tiny", "convnext_nano", "resnet18", "resnet50", "efficientnetv2_s"]


def matmul_peak_gflops(n: int = 4096, dtype: str = "float32") -> float:
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=dtype)
    b = tf.random.normal((n, n), dtype=dtype)
    f = tf.function(lambda: tf.matmul(a, b))
    f().numpy()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        f().numpy()
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(times) / 1e9


def forward_flops(model, batch) -> float:
    """Forward FLOPs per image (TF profiler on the inference graph)."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    fn = tf.function(lambda x: model(x, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec(batch.shape, batch.dtype)).graph
    opts = option_builder.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    info = model_analyzer.profile(graph, options=opts)
    return info.total_float_ops / batch.shape[0]


def run_config(backbone: str, size: int, channels: int, steps: int, batch: int, precision: str,
               phase: str = "both") -> dict:
    """One configuration, in this process. ``phase``: "train" (first step and training rate), "infer"
    (inference rate and FLOPs) or "both"; one phase per process makes the peak memory that phase's own."""
    import resource

    import numpy as np
    import tensorflow as tf

    from zoobot_tf.models import Zoobot

    model = Zoobot(backbone=backbone, image_size=size, channels=channels,
                   precision=None if precision == "float32" else precision)
    rng = np.random.default_rng(0)
    # images with the model's own channel count, as the PyTorch peer gets them (no colour -> grey mean)
    x = tf.constant(rng.uniform(0, 255, (batch, size, size, channels)).astype("float32"))
    out = {"backbone": backbone, "image_size": size, "channels": channels, "batch": batch, "phase": phase,
           "precision": precision, "params_m": model.count_params() / 1e6}
    if phase in ("train", "both"):
        model.compile()
        y = tf.constant(rng.integers(0, 10, (batch, model.schema.n_answers)).astype("float32"))
        t = time.perf_counter()
        model.train_on_batch(x, y)
        out["first_step_s"] = time.perf_counter() - t
        out["train_img_s"] = images_per_second(lambda: model.train_on_batch(x, y), batch, steps)
    if phase in ("infer", "both"):
        out["infer_img_s"] = images_per_second(lambda: model.predict_on_batch(x), batch, steps)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    flops = forward_flops(model, x)  # after the peak was read: profiling builds a graph of its own
    out["gflops_per_img"] = flops / 1e9
    if "train_img_s" in out:
        out["gflops_train"] = 3 * flops * out["train_img_s"] / 1e9
    if "infer_img_s" in out:
        out["gflops_infer"] = flops * out["infer_img_s"] / 1e9
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=",".join(DEFAULT_BACKBONES))
    parser.add_argument("--sizes", default="224,96")
    parser.add_argument("--channels", default="1,3")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "throughput.json"))
    parser.add_argument("--phase", default="both", choices=["train", "infer", "both"], help=argparse.SUPPRESS)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one config, print JSON
    parser.add_argument("--peaks", action="store_true", help=argparse.SUPPRESS)  # internal: matmul peaks as JSON
    args = parser.parse_args(argv)
    if args.peaks:
        print("RESULT " + json.dumps({f"matmul_peak_gflops_{d}": matmul_peak_gflops(dtype=d)
                                      for d in ("float32", "bfloat16")}))
        return
    if args.one:
        backbone, size, channels = args.one.split(":")
        print("RESULT " + json.dumps(run_config(backbone, int(size), int(channels), args.steps, args.batch,
                                                args.precision, args.phase)))
        return
    peak = matmul_peak_gflops()
    results = []
    for backbone in args.backbones.split(","):
        for size in map(int, args.sizes.split(",")):
            for channels in map(int, args.channels.split(",")):
                if size != 224 and channels != 1:
                    continue  # small sizes: greyscale only
                cmd = [sys.executable, __file__, "--one", f"{backbone}:{size}:{channels}", "--steps", str(args.steps),
                       "--batch", str(args.batch), "--precision", args.precision]
                out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
                line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
                if line is None:
                    print(f"{backbone} {size} {channels}: failed\n{out.stderr[-2000:]}")
                    continue
                r = json.loads(line[7:])
                r["train_fraction_of_peak"] = r["gflops_train"] / peak
                results.append(r)
                print(f"{backbone:18s} {size:4d}px {channels}ch  train {r['train_img_s']:7.1f} img/s  "
                      f"infer {r['infer_img_s']:7.1f} img/s  first step {r['first_step_s']:5.1f} s  "
                      f"{r['gflops_train']:6.1f} GFLOP/s train ({100 * r['train_fraction_of_peak']:.0f}% of peak)  "
                      f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"matmul_peak_gflops_fp32": peak, "results": results}, indent=2))
    print(f"\nfp32 matmul peak {peak:.0f} GFLOP/s; wrote {args.out}")


if __name__ == "__main__":
    main()
