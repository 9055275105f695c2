"""zoobot-tf against Zoobot v2's recipe in PyTorch, interleaved: ours, peer, ours, peer, ... per backbone.

    python benchmarks/vs_zoobot.py --peer-python /path/to/torch-venv/bin/python [--repeats 2]

This machine is shared and its speed drifts by +-20% over minutes, so one run of each side can land
in different weather. Each repeat runs one fresh process of ``throughput.py`` (the full Zoobot model,
224 px, 1 channel, batch 32) immediately followed by one of ``zoobot_peer.py`` (timm + the
Dirichlet-multinomial loss + AdamW) for the same backbone; the ratio of each adjacent pair is
recorded and the median over repeats reported against issue 7's targets. Prints a table, writes
benchmarks/results/vs_zoobot.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# target ratios: training and inference >= target (higher is better); first step: ours / peer <= target
TARGETS = {"efficientnet_b0": {"train_img_s": 1.5, "infer_img_s": 1.5, "first_step_s": 2.0},
           "convnext_tiny": {"train_img_s": 1.2, "infer_img_s": 1.0, "first_step_s": 2.0}}


def ours(backbone: str, steps: int) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "throughput.py"), "--one", f"{backbone}:224:1",
                          "--steps", str(steps)], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"throughput.py failed for {backbone}:\n{out.stderr[-2000:]}")
    return json.loads(line[7:])


def peer(python: str, backbone: str, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out_json = Path(tmp) / "peer.json"
        out = subprocess.run([python, str(HERE / "zoobot_peer.py"), "--backbones", backbone, "--steps", str(steps),
                              "--out", str(out_json)], capture_output=True, text=True)
        if not out_json.exists():
            raise RuntimeError(f"zoobot_peer.py failed for {backbone}:\n{out.stdout[-1000:]}{out.stderr[-2000:]}")
        return json.loads(out_json.read_text())[0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", required=True, help="python of a venv with torch and timm")
    p.add_argument("--backbones", default="efficientnet_b0,convnext_tiny")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", default=str(HERE / "results" / "vs_zoobot.json"))
    args = p.parse_args(argv)
    keys = ("train_img_s", "infer_img_s", "first_step_s")
    report = {}
    for backbone in args.backbones.split(","):
        pairs = []
        for r in range(args.repeats):
            a, b = ours(backbone, args.steps), peer(args.peer_python, backbone, args.steps)
            pairs.append({"ours": {k: a[k] for k in keys}, "peer": {k: b[k] for k in keys}})
            print(f"{backbone} repeat {r + 1}: " + "  ".join(
                f"{k} {a[k]:.2f} vs {b[k]:.2f}" for k in keys), flush=True)
        ratios = {k: statistics.median(x["ours"][k] / x["peer"][k] for x in pairs) for k in keys}
        report[backbone] = {"pairs": pairs, "median_ratio": ratios,
                            "median_ours": {k: statistics.median(x["ours"][k] for x in pairs) for k in keys},
                            "median_peer": {k: statistics.median(x["peer"][k] for x in pairs) for k in keys}}
    print("\n| model | measure | zoobot-tf | Zoobot recipe (PyTorch) | ratio (median of pairs) | target | met |")
    print("|---|---|---|---|---|---|---|")
    for backbone, r in report.items():
        for k in keys:
            t = TARGETS.get(backbone, {}).get(k)
            ratio = r["median_ratio"][k]
            met = "" if t is None else ("yes" if (ratio <= t if k == "first_step_s" else ratio >= t) else "no")
            target = "" if t is None else (f"<= {t}x slower" if k == "first_step_s" else f">= {t}x")
            unit = "s" if k == "first_step_s" else "img/s"
            print(f"| {backbone} | {k} | {r['median_ours'][k]:.1f} {unit} | {r['median_peer'][k]:.1f} {unit} | "
                  f"{ratio:.2f}x | {target} | {met} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"repeats": args.repeats, "results": report}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
