"""zoobot-tf against Zoobot v2 in PyTorch at its best precision, interleaved in one run, with the hardware's peaks.

    python benchmarks/vs_zoobot.py --peer-python /path/to/torch-venv/bin/python [--repeats 3] [--predict]

The peer venv needs ``pip install torch==2.14.1 torchvision==0.29.1 timm`` (and ``'zoobot[pytorch]==2.9.0'``
for ``--predict``). This machine is shared and its speed drifts by +-20% over minutes, so the two sides are
measured in rounds: per backbone and round, zoobot-tf in float32 and in mixed_bfloat16, then the peer
(``zoobot_peer.py``: timm encoder, Zoobot's head and Dirichlet-multinomial loss, AdamW) in float32 and under
``torch.autocast(bfloat16)``. Every measurement is a fresh process of its own phase: "train" (the first
training step, then the training rate) or "infer" (the inference rate), so each peak RSS is that phase's.
Each of zoobot-tf's numbers is divided by the peer's number at whichever precision was faster for that measure
in the same round, and the median of those ratios is reported against issue 18's targets.

Achieved GFLOP/s (forward FLOPs per image from TensorFlow's profiler, x3 for training, times the rate) are given
as a share of the float32 and bfloat16 matmul peaks measured at the start of the same run.
``--predict``: per round, also a folder of real JPEGs -> table with zoobot-tf's ``predict`` (benchmarks/predict.py)
and Zoobot's ``predict_on_catalog`` (benchmarks/zoobot_predict_peer.py) on the same folder and EfficientNetB0.
Prints a table, writes benchmarks/results/vs_zoobot.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MEASURES = ("train_img_s", "infer_img_s", "first_step_s")
PHASE = {"train_img_s": "train", "first_step_s": "train", "infer_img_s": "infer"}
PEER_PRECISIONS = {"float32": False, "bfloat16": True}  # name -> under torch.autocast(bfloat16)
TARGET = 1.5  # training and inference rates, ours / the peer's faster precision
CONVNEXT_INFER_VS_BF16 = 1.0  # the exception: ConvNeXt inference against the peer's bfloat16
FIRST_STEP = 1.0  # ours / peer's: no slower
PREDICT_TARGET = 3.0


def _result(cmd: list[str], what: str, env: dict | None = None) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                                                                     **(env or {})})
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{what} failed:\n{out.stdout[-1000:]}{out.stderr[-2000:]}")
    return json.loads(line[7:])


def ours(backbone: str, steps: int, precision: str, phase: str, env: dict | None = None) -> dict:
    return _result([sys.executable, str(HERE / "throughput.py"), "--one", f"{backbone}:224:1", "--steps",
                    str(steps), "--precision", precision, "--phase", phase], f"zoobot-tf {backbone} {phase}", env)


def peer(python: str, backbone: str, steps: int, bf16: bool, phase: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out_json = Path(tmp) / "peer.json"
        out = subprocess.run([python, str(HERE / "zoobot_peer.py"), "--backbones", backbone, "--steps", str(steps),
                              "--phase", phase, "--out", str(out_json)] + (["--autocast-bf16"] if bf16 else []),
                             capture_output=True, text=True)
        if not out_json.exists():
            raise RuntimeError(f"zoobot_peer.py failed for {backbone}:\n{out.stdout[-1000:]}{out.stderr[-2000:]}")
        return json.loads(out_json.read_text())[0]


def predict_round(python: str, data: str, n: int) -> dict:
    """One round of folder -> table: zoobot-tf in float32 and mixed_bfloat16, then Zoobot."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(HERE / "predict.py"), "--data", data, "--n", str(n), "--samples", "1",
                        "--models", "efficientnet_b0,efficientnet_b0_bf16", "--no-export", "--out",
                        str(Path(tmp) / "ours.json")], check=True, capture_output=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        ours_rates = {r["model"]: r["folder_to_table_img_s"]["1"] for r in json.loads((Path(tmp) / "ours.json")
                                                                                      .read_text())}
        subprocess.run([python, str(HERE / "zoobot_predict_peer.py"), "--data", data, "--n", str(n), "--out",
                        str(Path(tmp) / "peer.json")], check=True, capture_output=True)
        return {"ours": ours_rates, "peer": json.loads((Path(tmp) / "peer.json").read_text())["folder_to_table_img_s"]}


def best_peer(rnd: dict, measure: str) -> tuple[str, float]:
    """The peer's faster precision for ``measure`` in one round, and its number."""
    values = {p: rnd["peer"][p][PHASE[measure]][measure] for p in rnd["peer"]}
    pick = min if measure == "first_step_s" else max
    name = pick(values, key=values.get)
    return name, values[name]


def target_for(backbone: str, measure: str, peer_precision: str) -> float:
    if measure == "first_step_s":
        return FIRST_STEP
    if measure == "infer_img_s" and backbone.startswith("convnext") and peer_precision == "bfloat16":
        return CONVNEXT_INFER_VS_BF16
    return TARGET


def summarise(backbone: str, rounds: list[dict], peaks: dict) -> list[dict]:
    """One row per measure and zoobot-tf precision: medians, the median ratio to the faster peer, the target,
    achieved GFLOP/s as shares of the matmul peaks, and both sides' peak RSS for that phase."""
    med = statistics.median
    flops = med(r["ours"]["float32"]["infer"]["gflops_per_img"] for r in rounds)
    rows = []
    for measure in MEASURES:
        phase = PHASE[measure]
        picks = [best_peer(r, measure) for r in rounds]
        peer_prec = statistics.mode(p for p, _ in picks)
        for prec in rounds[0]["ours"]:
            ratios = [r["ours"][prec][phase][measure] / v for r, (_, v) in zip(rounds, picks)]
            ours_value = med(r["ours"][prec][phase][measure] for r in rounds)
            ratio, target = med(ratios), target_for(backbone, measure, peer_prec)
            row = {"backbone": backbone, "measure": measure, "precision": prec, "ours": ours_value,
                   **{f"peer_{p}": med(r["peer"][p][phase][measure] for r in rounds) for p in PEER_PRECISIONS},
                   "peer_best": peer_prec, "ratio": ratio, "ratios": ratios, "target": target,
                   "met": ratio <= target if measure == "first_step_s" else ratio >= target,
                   "ours_rss_mb": med(r["ours"][prec][phase]["peak_rss_mb"] for r in rounds),
                   "peer_rss_mb": med(r["peer"][peer_prec][phase]["peak_rss_mb"] for r in rounds),
                   **{f"peer_{p}_rss_mb": med(r["peer"][p][phase]["peak_rss_mb"] for r in rounds)
                      for p in PEER_PRECISIONS}}
            if measure != "first_step_s":
                per_img = (3 if phase == "train" else 1) * flops
                gflops = per_img * ours_value
                row.update(gflops=gflops, peer_gflops=per_img * row[f"peer_{peer_prec}"],
                           **{f"share_of_{d}_peak": gflops / peaks[f"matmul_peak_gflops_{d}"] for d in PEER_PRECISIONS})
            rows.append(row)
    return rows


def table(rows: list[dict], peaks: dict) -> str:
    lines = [f"matmul peaks measured in this run: {peaks['matmul_peak_gflops_float32']:.0f} GFLOP/s float32, "
             f"{peaks['matmul_peak_gflops_bfloat16']:.0f} bfloat16", "",
             "| model | measure | zoobot-tf precision | zoobot-tf | peer float32 | peer bf16 autocast "
             "| ratio to faster peer | target | met | GFLOP/s ours (share of fp32 / bf16 peak) / peer "
             "| peak RSS MB ours / peer |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        unit = "s" if r["measure"] == "first_step_s" else "img/s"
        target = f"<= {r['target']}x time" if r["measure"] == "first_step_s" else f">= {r['target']}x"
        flops = (f"{r['gflops']:.0f} ({100 * r['share_of_float32_peak']:.0f}% / "
                 f"{100 * r['share_of_bfloat16_peak']:.0f}%) / {r['peer_gflops']:.0f}" if "gflops" in r else "")
        lines.append(f"| {r['backbone']} | {r['measure']} | {r['precision']} | {r['ours']:.1f} {unit} | "
                     f"{r['peer_float32']:.1f} | {r['peer_bfloat16']:.1f} | {r['ratio']:.2f}x vs {r['peer_best']} | "
                     f"{target} | {'yes' if r['met'] else 'no'} | {flops} | {r['ours_rss_mb']:.0f} / "
                     f"{r['peer_rss_mb']:.0f} |")
    return "\n".join(lines)


NAMES = {"efficientnet_b0": "EfficientNetB0", "convnext_nano": "ConvNeXt-Nano", "convnext_tiny": "ConvNeXt-Tiny"}
LABELS = {"train_img_s": "training img/s", "infer_img_s": "inference img/s", "first_step_s": "first training step (s)"}


def summary_table(report: dict) -> str:
    """The README's and the performance guide's table: per model and measure, zoobot-tf in float32 and
    mixed_bfloat16, the peer in both precisions, each of ours against the faster peer (bold where issue 18's
    target is met), achieved GFLOP/s with its share of the matmul peak at the same precision (ours in both,
    the faster peer), and the phase's peak RSS on both sides in both precisions; then folder -> table when
    the run has it."""
    peaks = {p: report["peaks"][f"matmul_peak_gflops_{p}"] for p in PEER_PRECISIONS}
    lines = ["| model | measure | zoobot-tf float32 | zoobot-tf mixed_bfloat16 | Zoobot float32 | Zoobot bf16 autocast "
             "| ours / faster Zoobot, float32 / bf16 | GFLOP/s (share of that precision's matmul peak), ours float32 / "
             "bf16, faster Zoobot | peak RSS MB, ours float32 / bf16, Zoobot float32 / bf16 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for backbone, part in report["backbones"].items():
        for measure in MEASURES:
            by_prec = {r["precision"]: r for r in part["rows"] if r["measure"] == measure}
            f32, bf16 = by_prec["float32"], by_prec["mixed_bfloat16"]
            unit = " time" if measure == "first_step_s" else ""
            ratios = " / ".join((f"**{r['ratio']:.2f}x**" if r["met"] else f"{r['ratio']:.2f}x") for r in (f32, bf16))
            rss = "" if measure == "first_step_s" else (
                f"{f32['ours_rss_mb']:.0f} / {bf16['ours_rss_mb']:.0f}, {f32['peer_float32_rss_mb']:.0f} / "
                f"{f32['peer_bfloat16_rss_mb']:.0f}")
            flops = "" if measure == "first_step_s" else (
                f"{f32['gflops']:.0f} ({f32['share_of_float32_peak']:.0%}) / {bf16['gflops']:.0f} "
                f"({bf16['share_of_bfloat16_peak']:.0%}), {f32['peer_gflops']:.0f} "
                f"({f32['peer_gflops'] / peaks[f32['peer_best']]:.0%})")
            lines.append(f"| {NAMES.get(backbone, backbone)} | {LABELS[measure]} | {f32['ours']:.1f} "
                         f"| {bf16['ours']:.1f} | {f32['peer_float32']:.1f} | {f32['peer_bfloat16']:.1f} "
                         f"| {ratios}{unit} | {flops} | {rss} |")
    if "predict" in report:
        rounds = report["predict"]["rounds"]
        models = list(rounds[0]["ours"])  # float32, then mixed_bfloat16 (predict_round's order)
        ours_rate = [statistics.median(r["ours"][m] for r in rounds) for m in models]
        ratios = " / ".join((f"**{report['predict'][m]['ratio']:.2f}x**" if report["predict"][m]["met"]
                             else f"{report['predict'][m]['ratio']:.2f}x") for m in models)
        lines.append(f"| EfficientNetB0 | folder of JPEGs -> table, img/s | {ours_rate[0]:.1f} | {ours_rate[1]:.1f} "
                     f"| {statistics.median(r['peer'] for r in rounds):.1f} (`predict_on_catalog`) | | {ratios} | | |")
    return "\n".join(lines)


def _provenance() -> dict:
    """When and at which commit a part of the run was measured (``--resume`` joins parts of several runs)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", required=True, help="python of a venv with torch and timm")
    p.add_argument("--backbones", default="efficientnet_b0,convnext_nano,convnext_tiny")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--precisions", default="float32,mixed_bfloat16", help="zoobot-tf precisions, comma-separated")
    p.add_argument("--predict", action="store_true", help="also folder -> table against predict_on_catalog")
    shared = Path(os.environ.get("ZOOBOT_TF_SHARED_DATA", HERE.parents[1] / "shared" / "data"))
    p.add_argument("--data", default=str(shared / "gz2_kaggle_spiral" / "images"))
    p.add_argument("--n", type=int, default=512, help="JPEGs for --predict")
    p.add_argument("--out", default=str(HERE / "results" / "vs_zoobot.json"))
    p.add_argument("--resume", action="store_true",
                   help="keep the backbones (and their run's matmul peaks) already in --out, and its folder -> table "
                   "part unless --predict; measure only the rest")
    args = p.parse_args(argv)
    precisions = args.precisions.split(",")
    done = json.loads(Path(args.out).read_text()) if args.resume and Path(args.out).exists() else {}
    peaks = done.get("peaks") or _result([sys.executable, str(HERE / "throughput.py"), "--peaks"], "matmul peaks")
    report = {"repeats": args.repeats, "steps": args.steps, "peaks": peaks, "backbones": {}}
    rows = []
    for backbone in args.backbones.split(","):
        if backbone in done.get("backbones", {}):
            print(f"{backbone}: kept from {args.out}", flush=True)
            report["backbones"][backbone] = done["backbones"][backbone]
            rows += report["backbones"][backbone]["rows"]
            continue
        rounds = []
        for r in range(args.repeats):
            rnd = {"ours": {prec: {ph: ours(backbone, args.steps, prec, ph) for ph in ("train", "infer")}
                            for prec in precisions},
                   "peer": {name: {ph: peer(args.peer_python, backbone, args.steps, bf16, ph)
                                   for ph in ("train", "infer")} for name, bf16 in PEER_PRECISIONS.items()}}
            rounds.append(rnd)
            print(f"{backbone} round {r + 1}: " + "; ".join(
                f"{side} {prec} " + " ".join(f"{m} {rnd[side][prec][PHASE[m]][m]:.1f}" for m in MEASURES)
                for side in ("ours", "peer") for prec in rnd[side]), flush=True)
        report["backbones"][backbone] = {"rounds": rounds, "rows": summarise(backbone, rounds, peaks),
                                         "measured": _provenance()}
        rows += report["backbones"][backbone]["rows"]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({**report, "table": table(rows, peaks)}, indent=2))  # so far
    text = table(rows, peaks)
    if args.predict:
        rounds = [predict_round(args.peer_python, args.data, args.n) for _ in range(args.repeats)]
        report["predict"] = {"rounds": rounds, "measured": _provenance()}
        for model in rounds[0]["ours"]:
            ratio = statistics.median(r["ours"][model] / r["peer"] for r in rounds)
            report["predict"][model] = {"ratio": ratio, "met": ratio >= PREDICT_TARGET}
    elif "predict" in done:
        print(f"folder -> table: kept from {args.out}", flush=True)
        report["predict"] = done["predict"]
    if "predict" in report:
        rounds = report["predict"]["rounds"]
        lines = ["", "| folder of real JPEGs -> table (EfficientNetB0, 224 px) | zoobot-tf img/s | Zoobot "
                 "predict_on_catalog img/s | ratio (median of rounds) | target | met |", "|---|---|---|---|---|---|"]
        for model in rounds[0]["ours"]:
            part = report["predict"][model]
            lines.append(f"| {model} | {statistics.median(r['ours'][model] for r in rounds):.1f} | "
                         f"{statistics.median(r['peer'] for r in rounds):.1f} | {part['ratio']:.2f}x | "
                         f">= {PREDICT_TARGET}x | {'yes' if part['met'] else 'no'} |")
        text += "\n" + "\n".join(lines)
    report["table"] = text
    report["summary"] = summary_table(report)
    print("\n" + text + "\n\n" + report["summary"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
