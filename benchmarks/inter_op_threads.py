"""Peak memory and rate with TensorFlow's default inter-op threads (one per core) against one.

    python benchmarks/inter_op_threads.py [--cases convnext_tiny:infer:float32,... --rounds 2]

Each measurement is ``benchmarks/throughput.py --one`` (224 px greyscale, batch 32) in a fresh process with
``TF_NUM_INTEROP_THREADS`` set, the two settings interleaved per round. Prints a table and writes JSON
(default benchmarks/results/inter_op_threads.json). See the performance guide's "Inference memory".
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from vs_zoobot import _provenance, ours  # noqa: E402

THREADS = ("2", "1")


def make_table(cases: dict) -> str:
    """Markdown: per case ("backbone:phase:precision"), every run's peak RSS and rate under each setting."""
    lines = ["| backbone, phase, precision | peak RSS MB, 2 threads | 1 thread | img/s, 2 threads | 1 thread |",
             "|---|---|---|---|---|"]
    for case, runs in cases.items():
        rss = {t: ", ".join(f"{m['peak_rss_mb']:.0f}" for m in runs[t]) for t in THREADS}
        rate = {t: ", ".join(f"{m['img_s']:.1f}" for m in runs[t]) for t in THREADS}
        lines.append(f"| {case.replace(':', ', ')} | {rss['2']} | {rss['1']} | {rate['2']} | {rate['1']} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="convnext_tiny:infer:float32,convnext_tiny:infer:mixed_bfloat16,"
                   "efficientnet_b0:train:float32",
                   help="backbone:phase:precision, comma-separated")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--out", default=str(HERE / "results" / "inter_op_threads.json"))
    args = p.parse_args(argv)
    cases = [tuple(c.split(":")) for c in args.cases.split(",")]
    runs = {c: {t: [] for t in THREADS} for c in cases}
    for r in range(args.rounds):
        for case in cases:
            backbone, phase, precision = case
            for threads in THREADS:
                out = ours(backbone, args.steps, precision, phase, env={"TF_NUM_INTEROP_THREADS": threads})
                runs[case][threads].append({"img_s": out[f"{phase}_img_s"], "peak_rss_mb": out["peak_rss_mb"]})
                print(f"round {r + 1} {':'.join(case)} threads {threads}: {runs[case][threads][-1]}", flush=True)
    report = {"cases": {":".join(c): runs[c] for c in cases}, "steps": args.steps, "measured": _provenance(),
              "cpu_count": os.cpu_count()}
    table = report["table"] = make_table(report["cases"])
    print("\n" + table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
