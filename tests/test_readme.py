"""The README's commands and examples, run as written."""
import contextlib
import io
import json
import os
import re
import subprocess

import pytest
from conftest import REPO

README = (REPO / "README.md").read_text()


def _block(marker: str) -> str:
    m = re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```\s*<!-- /{marker} -->", README, re.S)
    assert m, f"README has no {marker} block"
    return m.group(1)


def test_readme_quick_start_commands_are_the_tested_ones():
    quick = re.search(r"## Quick start.*?```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert quick == ["pip install -r requirements.txt && pip install -e .", "zoobot-tf train --output_dir runs/demo",
                     "python -m pytest"]
    assert "python -m pytest" in (REPO / ".ci" / "run").read_text()


def test_finetune_example_runs_as_written(tmp_path, monkeypatch):
    (tmp_path / "saved_models").symlink_to(REPO / "saved_models")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_block("finetune-example"), "README-finetune-example", "exec"), {"__name__": "__readme__"})
    printed = out.getvalue().strip().splitlines()[-1]
    metrics = eval(printed, {"np": __import__("numpy")})  # the example prints the evaluate() dict
    assert metrics["accuracy"] > 0.8, printed


@pytest.mark.slow
def test_main_job_beats_the_baseline(tmp_path):
    """`zoobot-tf train --output_dir runs/demo`, exactly as in the README, on the embedded default."""
    result = subprocess.run(["zoobot-tf", "train", "--output_dir", "runs/demo"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=1800, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Test loss" in result.stdout
    metrics = {r["question"]: r for r in json.loads((tmp_path / "runs/demo/metrics.json").read_text())["metrics"]}
    total, first = metrics["total"], metrics["smooth-or-featured"]
    assert total["loss"] < 0.97 * total["baseline_loss"]
    assert first["accuracy"] > first["baseline_accuracy"] + 0.2
    assert (tmp_path / "runs/demo/export/zoobot/1/saved_model.pb").exists()
