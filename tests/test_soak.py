"""Soak: predict over 20,000 small images keeps its resident memory flat and its throughput steady.

The command runs in a subprocess; this test samples its resident memory (psutil) and notes when each
part it writes appears; throughput is compared as the median seconds per part early and late in the run,
so one stall of a shared machine does not fail it. Figures are printed and written to benchmarks/results/soak.json when
ZOOBOT_TF_WRITE_RESULTS=1.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

N_IMAGES = 20_000


@pytest.mark.slow
def test_predict_over_20000_images_keeps_memory_flat_and_throughput_steady(tmp_path):
    import pandas as pd
    import psutil

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    for i in range(N_IMAGES):
        Image.fromarray(np.roll(base, i % 32, axis=i % 2)).save(folder / f"g{i:05d}.png", compress_level=1)
    from zoobot_tf.models import Zoobot

    Zoobot(backbone="resnet_micro", image_size=32).save(tmp_path / "m.keras")
    out = tmp_path / "p.parquet"
    cmd = [sys.executable, "-m", "zoobot_tf.cli", "predict", "--model", tmp_path / "m.keras", "--input", folder,
           "--output", out, "--n_samples", "2", "--batch_size", "64", "--chunk", "1000", "--progress", "false"]
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ps = psutil.Process(proc.pid)
    samples = []  # (seconds, rss MB, parts written)
    start = time.time()
    parts = out.with_name(out.name + ".parts")
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss / 2 ** 20
        except psutil.NoSuchProcess:
            break
        n_parts = len(list(parts.glob("part-*.parquet"))) if parts.exists() else 0
        samples.append((time.time() - start, rss, n_parts))
        time.sleep(0.1)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
    assert len(pd.read_parquet(out)) == N_IMAGES

    # When each part appeared. Parts hold whole batches (1,024 galaxies here), and the last one also holds
    # the tail (a partial batch, the end of the input): only the parts before it measure steady throughput.
    appeared = {}
    for t, _, n in samples:
        appeared.setdefault(n, t)
    counts = sorted(n for n in appeared if n > 0)
    full = counts[:-1]
    warm = [n for n in full if n >= 0.2 * full[-1]]  # after warm-up (20% of the parts)
    assert len(warm) >= 9, samples
    gaps = np.diff([appeared[n] for n in warm])  # seconds per part, part after part
    third = len(gaps) // 3
    early, late = float(np.median(gaps[:third])), float(np.median(gaps[-third:]))
    rss = [r for t, r, n in samples if warm[0] <= n <= warm[-1]]
    rss_start, rss_end = rss[0], max(rss)
    growth = rss_end / rss_start - 1
    figures = {"images": N_IMAGES, "rss_mb_after_warmup": rss_start, "rss_mb_max": rss_end,
               "rss_growth": growth, "seconds_per_part_early": early, "seconds_per_part_late": late,
               "seconds": samples[-1][0]}
    print(json.dumps(figures, indent=2))
    print("parts appeared at (s):", {n: round(appeared[n], 2) for n in counts})
    if os.environ.get("ZOOBOT_TF_WRITE_RESULTS"):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "soak.json"
        path.write_text(json.dumps(figures, indent=2))
    assert growth < 0.10, figures
    # steady: no slow-down as the run goes on (medians, and generous: the machine is shared and noisy)
    assert late < 2 * early, figures
