"""zoobot-tf against Zoobot v2's recipe in PyTorch, interleaved: ours, peer, ours, peer, ... per backbone.

    python benchmarks/vs_zoobot.py --peer-python /path/to/torch-venv/bin/python [--repeats 3]

This machine is shared and its speed drifts by +-20% over minutes, so one run of each side can land
in different weather. Each repeat runs one fresh process of ``throughput.py`` (the full Zoobot model,
224 px, 1 channel, batch 32) immediately followed by one of ``zoobot_peer.py`` (timm + the
Dirichlet-multinomial loss + AdamW) for the same backbone; the ratio of each adjacent pair is
recorded and the median over repeats reported against issue 7's targets. With ``--precisions
float32,mixed_bfloat16`` each repeat runs zoobot-tf once per precision before the peer, and each is
compared with that same peer run. The peer runs as Zoobot does on a CPU, in float32 (``--peer-bf16``:
under ``torch.autocast(bfloat16)`` instead, for a like-for-like view). Prints a table, writes
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


def ours(backbone: str, steps: int, precision: str) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "throughput.py"), "--one", f"{backbone}:224:1",
                          "--steps", str(steps), "--precision", precision], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"throughput.py failed for {backbone}:\n{out.stderr[-2000:]}")
    return json.loads(line[7:])


def peer(python: str, backbone: str, steps: int, bf16: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out_json = Path(tmp) / "peer.json"
        out = subprocess.run([python, str(HERE / "zoobot_peer.py"), "--backbones", backbone, "--steps", str(steps),
                              "--out", str(out_json)] + (["--autocast-bf16"] if bf16 else []),
                             capture_output=True, text=True)
        if not out_json.exists():
            raise RuntimeError(f"zoobot_peer.py failed for {backbone}:\n{out.stdout[-1000:]}{out.stderr[-2000:]}")
        return json.loads(out_json.read_text())[0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", required=True, help="python of a venv with torch and timm")
    p.add_argument("--backbones", default="efficientnet_b0,convnext_tiny")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--precisions", default="float32,mixed_bfloat16", help="zoobot-tf precisions, comma-separated")
    p.add_argument("--peer-bf16", action="store_true", help="run the peer under torch.autocast(bfloat16)")
    p.add_argument("--out", default=str(HERE / "results" / "vs_zoobot.json"))
    args = p.parse_args(argv)
    keys = ("train_img_s", "infer_img_s", "first_step_s")
    precisions = args.precisions.split(",")
    report = {}
    for backbone in args.backbones.split(","):
        pairs = {prec: [] for prec in precisions}
        for r in range(args.repeats):
            a = {prec: ours(backbone, args.steps, prec) for prec in precisions}
            b = peer(args.peer_python, backbone, args.steps, args.peer_bf16)
            for prec in precisions:
                pairs[prec].append({"ours": {k: a[prec][k] for k in keys}, "peer": {k: b[k] for k in keys}})
                print(f"{backbone} {prec} repeat {r + 1}: " + "  ".join(
                    f"{k} {a[prec][k]:.2f} vs {b[k]:.2f}" for k in keys), flush=True)
        report[backbone] = {prec: {
            "pairs": ps, "median_ratio": {k: statistics.median(x["ours"][k] / x["peer"][k] for x in ps) for k in keys},
            "median_ours": {k: statistics.median(x["ours"][k] for x in ps) for k in keys},
            "median_peer": {k: statistics.median(x["peer"][k] for x in ps) for k in keys}}
            for prec, ps in pairs.items()}
    peer_name = "Zoobot recipe (PyTorch" + (", bf16 autocast)" if args.peer_bf16 else ", float32)")
    print(f"\n| model | measure | zoobot-tf precision | zoobot-tf | {peer_name} | ratio (median of pairs) "
          "| target | met |")
    print("|---|---|---|---|---|---|---|---|")
    for backbone, by_prec in report.items():
        for k in keys:
            for prec, r in by_prec.items():
                t = TARGETS.get(backbone, {}).get(k)
                ratio = r["median_ratio"][k]
                met = "" if t is None else ("yes" if (ratio <= t if k == "first_step_s" else ratio >= t) else "no")
                target = "" if t is None else (f"<= {t}x slower" if k == "first_step_s" else f">= {t}x")
                unit = "s" if k == "first_step_s" else "img/s"
                print(f"| {backbone} | {k} | {prec} | {r['median_ours'][k]:.1f} {unit} | {r['median_peer'][k]:.1f} "
                      f"{unit} | {ratio:.2f}x | {target} | {met} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"repeats": args.repeats, "peer_bf16_autocast": args.peer_bf16,
                                          "results": report}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
