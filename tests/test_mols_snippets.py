"""The Python examples of the README and docs/mols.md run as written (a newcomer copies them):
every ```python block, in a fresh directory, as its own process with the repository on the path
(as after `pip install .` / `pip install ".[hf]"`)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "docs" / "mols.md"]


def python_blocks() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in re.finditer(r"^```python\n(.*?)^```", text, re.M | re.S):
            line = text[:match.start()].count("\n") + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", match.group(1)))
    return found


def test_there_are_examples_to_run():
    where = [w for w, _ in python_blocks()]
    assert any(w.startswith("README.md") for w in where) and any(w.startswith("docs/mols.md") for w in where)


@pytest.mark.parametrize("where, code", python_blocks(), ids=[w for w, _ in python_blocks()])
def test_an_example_runs_as_written(tmp_path, where, code):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"{where}:\n{done.stderr[-3000:]}"
