"""Optional: the PyTorch peer (Zoobot v2's recipe: timm encoder, Dirichlet-multinomial loss, AdamW)
timed exactly as benchmarks/throughput.py times zoobot-tf, so ratios come from one session.

    /path/to/torch-venv/bin/python benchmarks/zoobot_peer.py [--backbones efficientnet_b0,convnext_tiny]

Needs torch and timm (e.g. ``pip install torch==2.14.1 torchvision==0.29.1 timm``), not zoobot-tf or
TensorFlow; skips with a message when they are missing. Zoobot v2's model is a timm encoder, a
linear head with ``1 + 100 * sigmoid`` concentrations and the Dirichlet-multinomial loss summed over
questions; that is what is built here (1 channel, 224x224, batch 32, GZ DECaLS DR5's 34 answers
grouped into its 10 questions), so the numbers are comparable with ``throughput.py``'s full model.
Writes benchmarks/results/zoobot_peer.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from timing import images_per_second

REPO = Path(__file__).resolve().parents[1]
# GZ DECaLS DR5: answers per question, in schema order (34 answers, 10 questions)
DR5_ANSWERS_PER_QUESTION = [3, 2, 2, 3, 5, 3, 3, 3, 6, 4]


def dirichlet_multinomial_nll(counts, alpha):
    import torch

    total = counts.sum(-1)
    a0 = alpha.sum(-1)
    log_prob = (torch.lgamma(total + 1) + torch.lgamma(a0) - torch.lgamma(total + a0)
                + (torch.lgamma(counts + alpha) - torch.lgamma(alpha) - torch.lgamma(counts + 1)).sum(-1))
    return -log_prob


def run(backbone: str, size: int, channels: int, batch: int, steps: int, bf16: bool = False,
        phase: str = "both") -> dict:
    """``phase``: "train" (first step, then the training rate), "infer" (the inference rate) or "both"; one
    phase per process makes the peak memory that phase's own."""
    import contextlib
    import resource

    import timm
    import torch

    torch.manual_seed(0)
    encoder = timm.create_model(backbone, pretrained=False, in_chans=channels, num_classes=0)
    n_answers = sum(DR5_ANSWERS_PER_QUESTION)
    head = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(encoder.num_features, n_answers))
    model = torch.nn.Sequential(encoder, head)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    x = torch.rand(batch, channels, size, size)
    y = torch.randint(0, 10, (batch, n_answers)).float()
    splits = torch.tensor(DR5_ANSWERS_PER_QUESTION).cumsum(0)[:-1].tolist()
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def train_step():
        model.train()
        with cast():
            logits = model(x)
        alpha = 1 + 100 * torch.sigmoid(logits.float())  # the loss in float32
        loss = sum(dirichlet_multinomial_nll(c, a) for c, a in
                   zip(torch.tensor_split(y, splits, -1), torch.tensor_split(alpha, splits, -1))).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def infer():
        model.eval()
        with cast():
            return 1 + 100 * torch.sigmoid(model(x).float())

    out = {"backbone": backbone, "image_size": size, "channels": channels, "batch": batch, "phase": phase,
           "torch": torch.__version__, "timm": timm.__version__, "threads": torch.get_num_threads(),
           "autocast_bf16": bf16}
    if phase in ("train", "both"):
        t = time.perf_counter()
        train_step()
        out["first_step_s"] = time.perf_counter() - t
        out["train_img_s"] = images_per_second(train_step, batch, steps)
    if phase in ("infer", "both"):
        out["infer_img_s"] = images_per_second(infer, batch, steps)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default="efficientnet_b0,convnext_tiny")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--autocast-bf16", action="store_true", help="forward passes under torch.autocast(bfloat16)")
    p.add_argument("--phase", default="both", choices=["train", "infer", "both"])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "zoobot_peer.json"))
    args = p.parse_args(argv)
    try:
        import timm  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        print(f"skipped: the PyTorch peer needs torch and timm ({e})")
        return 0
    results = []
    for backbone in args.backbones.split(","):
        r = run(backbone, args.size, args.channels, args.batch, args.steps, args.autocast_bf16, args.phase)
        results.append(r)
        print(f"peer {backbone:18s} {args.size:4d}px {args.channels}ch  " + "  ".join(
            f"{k} {r[k]:.1f}" for k in ("train_img_s", "infer_img_s", "first_step_s", "peak_rss_mb") if k in r),
            flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
