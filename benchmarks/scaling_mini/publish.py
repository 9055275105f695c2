"""Publish the miniature scaling study: analyse the committed results and put the new tables and figures
where the docs and the README show them.

    python benchmarks/scaling_mini/publish.py [--from DIR]   # DIR: e.g. a sweep of the same grid under another rule

``--from``: first take grid.yaml, results.csv and curves.csv of a finished sweep kept in another folder
(a re-run under another rule) as the study's own. Then ``zoobot-tf scaling analyse`` remakes fits.json,
table.md, labels.md and the figures here; the figures are copied to docs/assets/, and the tables that
docs/guides/scaling.md and the README show are replaced by the new ones (the README shows table.md's first
table). The prose around them quotes numbers too: read it again after publishing.
``tests/test_scaling.py`` checks that what is committed is what the committed results produce.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FIGURES = ("scaling.png", "convergence.png", "labels.png")


def _replace(path: Path, old: str, new: str) -> bool:
    text = path.read_text()
    if old == new:
        return False
    if old not in text:
        sys.exit(f"{path.relative_to(REPO)} does not show the study's previous table; put the new one in by hand:\n{new}")
    path.write_text(text.replace(old, new))
    return True


def main(argv=None) -> int:
    from zoobot_tf.cli import main as cli

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, default=None,
                        help="a finished sweep's folder (grid.yaml, results.csv, curves.csv) to publish as the study")
    args = parser.parse_args(argv)
    tables = {name: (HERE / name).read_text().strip() for name in ("table.md", "labels.md") if (HERE / name).exists()}
    if args.source is not None:
        for name in ("grid.yaml", "results.csv", "curves.csv"):
            if not (args.source / name).exists():
                sys.exit(f"{args.source} has no {name}: is that sweep finished?")
            shutil.copy(args.source / name, HERE / name)
    if cli(["scaling", "analyse", "--results", str(HERE), "--out", str(HERE)]) != 0:
        return 1
    for figure in FIGURES:
        if (HERE / figure).exists():
            shutil.copy(HERE / figure, REPO / "docs" / "assets" / figure)
    guide, readme = REPO / "docs" / "guides" / "scaling.md", REPO / "README.md"
    changed = []
    for name, old in tables.items():
        new = (HERE / name).read_text().strip()
        if _replace(guide, old, new):
            changed.append(f"{guide.relative_to(REPO)}: {name}")
        if name == "table.md" and _replace(readme, old.split("\n\n")[0], new.split("\n\n")[0]):
            changed.append(f"README.md: {name}'s first table")
    print("tables replaced: " + (", ".join(changed) if changed else "none (the results did not change them)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
