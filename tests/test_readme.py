"""The README's commands and examples, run as written."""
import contextlib
import io
import re

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
    # the main job runs exactly as written, from the wheel, in CI (tests/test_wheel.py)
    assert f'MAIN_JOB = "{quick[1]}"' in (REPO / "tests" / "test_wheel.py").read_text()


def test_finetune_example_runs_as_written(tmp_path, monkeypatch):
    (tmp_path / "saved_models").symlink_to(REPO / "saved_models")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_block("finetune-example"), "README-finetune-example", "exec"), {"__name__": "__readme__"})
    printed = out.getvalue().strip().splitlines()[-1]
    metrics = eval(printed, {"np": __import__("numpy")})  # the example prints the evaluate() dict
    assert metrics["accuracy"] > 0.8, printed
