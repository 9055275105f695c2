"""Soak: predict over 20,000 small images keeps its resident memory flat and its throughput steady.

The command runs in a subprocess; this test samples its resident memory (psutil) and counts the rows of
the parts it writes as it goes. Figures are printed and written to benchmarks/results/soak.json when
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
    samples = []  # (seconds, rss MB, rows written)
    start = time.time()
    parts = out.with_name(out.name + ".parts")
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss / 2 ** 20
        except psutil.NoSuchProcess:
            break
        rows = 1000 * len(list(parts.glob("part-*.parquet"))) if parts.exists() else 0
        samples.append((time.time() - start, rss, rows))
        time.sleep(0.5)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
    assert len(pd.read_parquet(out)) == N_IMAGES

    running = [s for s in samples if 0 < s[2] < N_IMAGES]  # while parts are being written
    warm = [s for s in running if s[2] >= 0.2 * N_IMAGES]  # after warm-up (20% of the images)
    assert len(warm) >= 10, samples
    rss_start, rss_end = warm[0][1], max(s[1] for s in warm)
    growth = rss_end / rss_start - 1
    # throughput of the first and last thirds of the warm phase
    third = len(warm) // 3
    def rate(ss):
        return (ss[-1][2] - ss[0][2]) / max(ss[-1][0] - ss[0][0], 1e-9)
    early, late = rate(warm[:third]), rate(warm[-third:])
    figures = {"images": N_IMAGES, "rss_mb_after_warmup": rss_start, "rss_mb_max": rss_end,
               "rss_growth": growth, "img_per_s_early": early, "img_per_s_late": late,
               "seconds": samples[-1][0]}
    print(json.dumps(figures, indent=2))
    if os.environ.get("ZOOBOT_TF_WRITE_RESULTS"):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "soak.json"
        path.write_text(json.dumps(figures, indent=2))
    assert growth < 0.10, figures
    assert late > 0.5 * early, figures  # steady: no slow-down as the run goes on (a noisy machine: generous)
