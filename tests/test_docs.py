"""The README and every docs page, run as written (issue 14): every bash and python block executes, in a
fresh folder per page, or says why it cannot here (<!-- skip: reason -->).

The runs are marked ``docs`` (CI runs them with a wheel installed in a venv outside the checkout, see
.ci/run); the default suite checks that every block is accounted for.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, SHARED_DATA
from docblocks import blocks, run_page

PAGES = [REPO / "README.md"] + sorted((REPO / "docs").rglob("*.md"))
RUNNABLE = [p for p in PAGES if any(not b.skip for b in blocks(p))]


def test_every_block_runs_or_says_why_not():
    counted = {"run": 0, "skipped": 0}
    for page in PAGES:
        for b in blocks(page):  # raises for a skip without a reason
            counted["skipped" if b.skip else "run"] += 1
    assert counted["run"] >= 20, counted


@pytest.mark.docs
@pytest.mark.parametrize("page", RUNNABLE, ids=[str(p.relative_to(REPO)) for p in RUNNABLE])
def test_page_runs_as_written(page, tmp_path):
    if os.environ.get("ZOOBOT_TF_REQUIRE_WHEEL"):  # CI: the package must come from the installed wheel
        where = subprocess.run(["python", "-c", "import zoobot_tf; print(zoobot_tf.__file__)"], cwd=tmp_path,
                               capture_output=True, text=True, check=True).stdout.strip()
        assert "site-packages" in where and str(REPO) not in where, where
    if SHARED_DATA.exists():
        (tmp_path / "shared").symlink_to(SHARED_DATA.parent if SHARED_DATA.name == "data" else SHARED_DATA)
    work = tmp_path / "work"
    log = run_page(page, work, env={"ZOOBOT_TF_SHARED_DATA": str(tmp_path / "shared" / "data")})
    print("\n".join(log))
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def benchmark_script(monkeypatch):
    """Import a script of benchmarks/ by name (the folder is on sys.path for this test only)."""
    import importlib

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module


def test_the_transfer_tables_in_the_docs_are_the_committed_rows(benchmark_script):
    """The finetuning guide's leave-one-survey-out table and the README's are what benchmarks/transfer.py
    makes from the committed rows (benchmarks/results/transfer_rows.csv), not numbers typed by hand."""
    import pandas as pd

    transfer = benchmark_script("transfer")
    markdown, summarise = transfer.markdown, transfer.summarise

    summary = summarise(pd.read_csv(REPO / "benchmarks" / "results" / "transfer_rows.csv"))
    assert (summary["seeds"] == 3).all(), summary
    guide = (REPO / "docs" / "guides" / "finetuning.md").read_text()
    for line in markdown(summary).splitlines():
        assert line in guide, line
    readme = (REPO / "README.md").read_text()
    for name, part in summary.groupby("dataset"):  # the README: each set at its largest label count
        row = markdown(part[part["labels"] == part["labels"].max()]).splitlines()[-1]
        cells = row.split(" | ", 2)[2]  # after the set's name and label count
        assert cells in readme, (name, cells)


def test_the_zoobot_comparison_in_the_docs_is_the_committed_run(benchmark_script):
    """The README's and the performance guide's table against Zoobot is what benchmarks/vs_zoobot.py makes from
    the committed run, and the run's rows (medians, ratios to the faster peer, targets) are its own rounds'."""
    import json

    vs_zoobot = benchmark_script("vs_zoobot")
    summarise, summary_table = vs_zoobot.summarise, vs_zoobot.summary_table

    report = json.loads((REPO / "benchmarks" / "results" / "vs_zoobot.json").read_text())
    assert set(report["backbones"]) == {"efficientnet_b0", "convnext_nano", "convnext_tiny"}
    for backbone, part in report["backbones"].items():
        assert summarise(backbone, part["rounds"], report["peaks"]) == part["rows"], backbone
    table = summary_table(report)
    assert table == report["summary"]
    assert len(table.splitlines()) == 2 + 3 * 3 + 1  # header, 3 measures x 3 models, folder -> table
    for doc in ("README.md", "docs/guides/performance.md"):
        text = (REPO / doc).read_text()
        for line in table.splitlines():
            assert line in text, (doc, line)


def test_the_inter_op_thread_table_in_the_guide_is_the_committed_run(benchmark_script):
    import json

    make_table = benchmark_script("inter_op_threads").make_table

    report = json.loads((REPO / "benchmarks" / "results" / "inter_op_threads.json").read_text())
    assert make_table(report["cases"]) == report["table"]
    guide = (REPO / "docs" / "guides" / "performance.md").read_text()
    for line in report["table"].splitlines():
        assert line in guide, line


def test_the_gz1_errors_in_the_guide_are_the_committed_ones():
    import json

    import numpy as np

    result = json.loads((REPO / "benchmarks" / "results" / "gz1_errors.json").read_text())
    guide = " ".join((REPO / "docs" / "guides" / "finetuning.md").read_text().split())  # lines joined
    classes = list(result["confusion"])
    for true in classes:
        counts = [result["confusion"][true][c] for c in classes]
        cells = " | ".join(f"**{n}**" if c == true else str(n) for c, n in zip(classes, counts))
        assert f" | {cells} |" in guide, (true, cells)
    scores = [result["balanced_accuracy"], *result["winding_only"].values()]
    for encoder in result["synthetic_winding"]["encoders"].values():
        scores += [encoder["winding_only"], encoder["six_classes"]]
        assert f"{encoder['synthetic_score']:.3f}" in guide
    for seeds in scores:
        quoted = f"{np.mean(seeds):.3f} +- {np.std(seeds, ddof=1):.3f}"
        assert quoted in guide, quoted


def test_the_vote_head_start_in_the_guide_is_the_committed_one(benchmark_script):
    """The finetuning guide's table of vote-head starts is what benchmarks/vote_head_start.py makes from its
    committed run."""
    import json

    markdown_table = benchmark_script("vote_head_start").markdown_table

    result = json.loads((REPO / "benchmarks" / "results" / "vote_head_start.json").read_text())
    guide = (REPO / "docs" / "guides" / "finetuning.md").read_text()
    table = markdown_table(result["rows"])
    assert len(table.splitlines()) == 2 + len({r["labels"] for r in result["rows"]})
    for line in table.splitlines():
        assert line in guide, line
