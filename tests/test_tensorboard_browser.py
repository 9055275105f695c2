"""TensorBoard as a user sees it: a real server on 127.0.0.1 over a small training run and a small embedding,
opened in headless Chromium (Debian's package, driven by Playwright), with screenshots of the scalars, images
and projector dashboards and checks that they show this project's data, not an empty dashboard.

Screenshots go to $ZOOBOT_TF_ARTIFACTS (default: the test's temporary folder); docs/assets holds one of each.
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args, cwd):
    r = subprocess.run([sys.executable, "-m", "zoobot_tf.cli", *map(str, args)], cwd=cwd, capture_output=True,
                       text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)")
def test_tensorboard_shows_the_runs_galaxy_grids_and_the_projector(tmp_path):
    pytest.importorskip("playwright", reason="needs the playwright package (pip install playwright)")
    from playwright.sync_api import sync_playwright

    board = tmp_path / "board"
    _cli("train", "--output_dir", tmp_path / "run", "--synthetic_galaxies", "240", "--image_size", "48",
         "--epochs", "2", "--batch_size", "32", "--export", "false", "--progress", "false", cwd=tmp_path)
    board.mkdir()
    (board / "training").symlink_to(tmp_path / "run" / "logs")
    _cli("make-synthetic", "--n_galaxies", "60", "--output_dir", tmp_path / "field", "--progress", "false",
         cwd=tmp_path)
    _cli("embed", "--input", tmp_path / "field" / "catalog.csv", "--output", tmp_path / "e.parquet", "--anomaly_k",
         "5", "--tensorboard", board / "embeddings", "--tensorboard_columns", "true_kind", cwd=tmp_path)

    artifacts = Path(os.environ.get("ZOOBOT_TF_ARTIFACTS", tmp_path / "screenshots"))
    artifacts.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(board), "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "TensorBoard did not start"
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1500, "height": 1000})

            page.goto(f"{url}/#scalars")
            page.get_by_text("epoch_loss").first.wait_for(timeout=90_000)
            page.get_by_text("training/train").first.wait_for(timeout=30_000)  # the run names
            page.wait_for_timeout(3000)
            page.screenshot(path=str(artifacts / "tensorboard_scalars.png"))
            page.get_by_text("epoch_loss_bulge-size").first.wait_for(timeout=10_000)  # a per-question loss group

            page.goto(f"{url}/#images")
            page.get_by_text("galaxies/validation").first.wait_for(timeout=90_000)
            page.get_by_text("galaxies/worst_predicted").first.wait_for(timeout=30_000)
            page.wait_for_timeout(4000)
            page.screenshot(path=str(artifacts / "tensorboard_images.png"))
            shown = page.locator("img").evaluate_all("els => els.map(e => e.naturalWidth).filter(w => w >= 300)")
            assert shown, "no galaxy grid image was displayed"

            page.goto(f"{url}/#projector")
            # the plugin's entry page is an iframe holding the projector's own iframe
            projector = page.frame_locator("iframe").first.frame_locator("iframe").first
            projector.get_by_text("Points: 60", exact=False).first.wait_for(timeout=120_000)
            projector.get_by_text("Dimension: 128", exact=False).first.wait_for(timeout=10_000)
            page.wait_for_timeout(5000)
            page.screenshot(path=str(artifacts / "tensorboard_projector.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    for name in ("tensorboard_scalars.png", "tensorboard_images.png", "tensorboard_projector.png"):
        assert (artifacts / name).stat().st_size > 20_000, name
