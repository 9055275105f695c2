"""Where the first training step's time goes: tracing, graph optimisation, the first run, and the graph's ops.

    python benchmarks/first_step.py                                   # EfficientNetB0, ConvNeXt-Nano, -Tiny
    python benchmarks/first_step.py --backbones efficientnet_b0 --repeats 3 --paths fast,stock

Each backbone runs in a fresh process, as ``throughput.py`` and ``vs_zoobot.py`` measure the first step
(224 px greyscale, batch 32, the full Zoobot model compiled with its defaults). The process traces the
same step ``fit`` runs (``model.train_step`` under the strategy ``zoobot-tf train`` uses, in a ``tf.function``)
and times, separately:

* build_s: what ``fit`` does before its first step under a distribution strategy: build the compiled loss,
  metrics and optimizer (Keras 3 traces the whole model symbolically for it; the fast path does not);
* trace_s: building the step's graph in Python (the forward pass, the gradient, the optimizer update,
  the loss and the metrics), with the graph's op count by part;
* first_run_s: the first call of the traced graph: Grappler's passes (each pass's time, from TensorFlow's
  own ``meta_optimizer`` log; on the fast path one round without the memory optimizer, as the model's own
  train function runs), creating the executor and its kernels, and one step;
* step_s: a later step (the steady cost, for comparison).

``--paths fast,stock`` also measures each backbone with the speed-ups off (``ZOOBOT_TF_FAST=0``), which is
how much of the graph and its first step they remove.

Prints a table and writes JSON (default benchmarks/results/first_step.json).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = {"zoobot": "forward", "gradient_tape": "gradient", "zoobot_adam_w": "optimizer",
         "compile_loss": "loss", "DirichletMultinomial": "metrics"}
GRAPPLER_LINE = re.compile(r"meta_optimizer\.cc:\d+\] ([\w\-]+)(?:\{.*\})?: Graph size after: .* time = ([\d.]+)ms")


def part_of(op_name: str) -> str:
    top = re.sub(r"_\d+$", "", op_name.split("/")[0])
    return PARTS.get(top, "other")


def one(backbone: str, size: int, channels: int, batch: int) -> dict:
    """In this process: time the build, the trace, the first run and a later step of one training step."""
    import numpy as np
    import tensorflow as tf

    from zoobot_tf.models import Zoobot
    from zoobot_tf.ops.startup import lean_grappler

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")  # as `zoobot-tf train` builds and fits
    with strategy.scope():
        model = Zoobot(backbone=backbone, image_size=size, channels=channels)
        model.compile()
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (batch, size, size, channels)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, (batch, model.schema.n_answers)).astype("float32"))
    t = time.perf_counter()
    model._maybe_symbolic_build(data_batch=(x, y))  # what fit does first: the loss, metrics and optimizer
    build = time.perf_counter() - t
    # the step fit runs (Keras' own is not autograph-converted either)
    step = tf.function(tf.autograph.experimental.do_not_convert(
        lambda a, b: strategy.run(model.train_step, args=((a, b),))))
    t = time.perf_counter()
    concrete = step.get_concrete_function(x, y)
    trace = time.perf_counter() - t
    ops = concrete.graph.get_operations()
    with lean_grappler():  # the model's own train function runs under it (a no-op on the stock path)
        t = time.perf_counter()
        tf.nest.map_structure(lambda v: v.numpy(), concrete(x, y))
        first = time.perf_counter() - t
        t = time.perf_counter()
        tf.nest.map_structure(lambda v: v.numpy(), concrete(x, y))
        later = time.perf_counter() - t
    return {"backbone": backbone, "build_s": build, "trace_s": trace, "first_run_s": first, "step_s": later,
            "ops": len(ops),
            "ops_by_part": dict(collections.Counter(part_of(op.name) for op in ops).most_common()),
            "ops_by_type": dict(collections.Counter(op.type for op in ops).most_common(8)),
            "variables": len(model.trainable_variables)}


def measure(backbone: str, size: int, channels: int, batch: int, path: str = "fast") -> dict:
    """:func:`one` in a fresh process, with Grappler's per-pass times from its log."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0", "TF_CPP_VMODULE": "meta_optimizer=1",
           "ZOOBOT_TF_FAST": "1" if path == "fast" else "0"}
    out = subprocess.run([sys.executable, __file__, "--one", f"{backbone}:{size}:{channels}:{batch}"],
                         capture_output=True, text=True, env=env)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{backbone} failed:\n{out.stdout[-1000:]}{out.stderr[-3000:]}")
    result = {"path": path, **json.loads(line[7:])}
    passes: dict[str, float] = collections.defaultdict(float)
    for name, ms in GRAPPLER_LINE.findall(out.stderr):
        passes[name] += float(ms) / 1000
    result["grappler_s"] = sum(passes.values())
    result["grappler_passes_s"] = dict(sorted(passes.items(), key=lambda kv: -kv[1]))
    return result


def table(rows: list[dict]) -> str:
    lines = ["| backbone | path | build (s) | trace (s) | first run (s) | of which Grappler (s) | later step (s) | graph ops "
             "(forward / gradient / optimizer / loss + metrics / other) | slowest Grappler passes (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["ops_by_part"]
        slow = ", ".join(f"{k} {v:.1f}" for k, v in list(r["grappler_passes_s"].items())[:3])
        lines.append(f"| {r['backbone']} | {r['path']} | {r['build_s']:.1f} | {r['trace_s']:.1f} | {r['first_run_s']:.1f} | "
                     f"{r['grappler_s']:.1f} | {r['step_s']:.1f} | {r['ops']:,} ({p.get('forward', 0):,} / {p.get('gradient', 0):,} / "
                     f"{p.get('optimizer', 0):,} / {p.get('loss', 0) + p.get('metrics', 0):,} / "
                     f"{p.get('other', 0):,}) | {slow} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default="efficientnet_b0,convnext_nano,convnext_tiny")
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=1, help="fresh processes per backbone; medians are reported")
    p.add_argument("--paths", default="fast", help="fast, stock or fast,stock (ZOOBOT_TF_FAST=1 / 0)")
    p.add_argument("--out", default=str(HERE / "results" / "first_step.json"))
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        backbone, size, channels, batch = args.one.split(":")
        print("RESULT " + json.dumps(one(backbone, int(size), int(channels), int(batch))), flush=True)
        return
    rows = []
    paths = args.paths.split(",")
    for backbone in args.backbones.split(","):
        runs = {path: [] for path in paths}
        for _ in range(args.repeats):
            for path in paths:  # interleaved: the machine's speed drifts
                runs[path].append(measure(backbone, args.image_size, args.channels, args.batch, path))
        for path in paths:
            row = dict(runs[path][0])
            for key in ("build_s", "trace_s", "first_run_s", "step_s", "grappler_s"):
                row[key] = statistics.median(r[key] for r in runs[path])
            row["runs"] = runs[path]
            rows.append(row)
            print(f"{backbone} {path}: build {row['build_s']:.1f} s, trace {row['trace_s']:.1f} s, first run {row['first_run_s']:.1f} s "
                  f"(Grappler {row['grappler_s']:.1f} s), later step {row['step_s']:.1f} s", flush=True)
    text = table(rows)
    print("\n" + text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"image_size": args.image_size, "channels": args.channels,
                                          "batch": args.batch, "rows": rows, "table": text}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
