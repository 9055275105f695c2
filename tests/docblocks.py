"""Run the fenced code blocks of the README and the docs exactly as written (used by tests/test_docs.py).

Each page runs in a fresh folder, its blocks in order: ``bash`` blocks with ``bash -euo pipefail``,
``python`` blocks as scripts. Markers in the Markdown, on the line before a block:

* ``<!-- skip: reason -->``: not run (e.g. it needs Docker or a cluster); the reason is required.
* ``<!-- continue -->``: a python block that continues the page's previous python block (run together).

The folder sits next to a ``shared`` link to the real data (``$ZOOBOT_TF_SHARED_DATA``'s parent, when
present), so ``../shared/data/...`` in a page means the same as in the repository. The commands run with
the ``zoobot-tf`` and ``python`` first on ``PATH`` (in CI: a venv with the wheel installed, outside the
checkout).
"""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from pathlib import Path

BLOCK = re.compile(r"(?:<!--\s*(skip|continue)(?::\s*(.*?))?\s*-->\s*\n)?^```(bash|python)[^\n]*\n(.*?)^```", re.M | re.S)


@dataclasses.dataclass
class Block:
    page: Path
    line: int
    language: str
    code: str
    skip: str | None = None  # the reason
    continues: bool = False


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    out = []
    for m in BLOCK.finditer(text):
        marker, reason, language, code = m.groups()
        if marker == "skip" and not (reason or "").strip():
            raise ValueError(f"{page}:{text[:m.start()].count(chr(10)) + 1}: a skipped block needs a reason")
        out.append(Block(page, text[:m.start(3)].count("\n") + 1, language, code,
                         skip=reason.strip() if marker == "skip" else None, continues=marker == "continue"))
    return out


def run_page(page: Path, workdir: Path, env: dict | None = None, timeout: float = 1800) -> list[str]:
    """Run every block of ``page`` in ``workdir``; return a log line per block; raise on the first failure."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    log, script = [], None
    pending = [b for b in blocks(page) if not b.skip]
    for i, b in enumerate(pending):
        if b.language == "python":
            script = (script + "\n" + b.code) if (b.continues and script) else b.code
            nxt = pending[i + 1] if i + 1 < len(pending) else None
            if nxt is not None and nxt.continues and nxt.language == "python":
                continue  # run together with the block that continues it
            path = workdir / f"_block_{b.line}.py"
            path.write_text(script)
            cmd = ["python", str(path)]
        else:
            cmd = ["bash", "-euo", "pipefail", "-c", b.code]
        r = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise AssertionError(f"{page.name}:{b.line} ({b.language}) failed with {r.returncode}:\n{b.code}\n"
                                 f"--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-5000:]}")
        log.append(f"{page.name}:{b.line} ok")
    return log
