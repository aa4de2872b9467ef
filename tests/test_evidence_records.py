"""docs/evidence.md's pure-bf16 results are what `reproduce results` makes of the run records shipped
beside it (docs/evidence_runs/: each run's config, metrics, MoLS measurement and summary; no
checkpoints). Anyone can re-derive them from a clone, and a change to the statistics that moves one
of the page's numbers fails here instead of leaving the page wrong."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from reproduce.cli import main

ROOT = Path(__file__).resolve().parents[1]
# <!-- output of: COMMAND --> ... <!-- end of output -->, COMMAND run from the repository root
GENERATED = re.compile(r"<!-- output of: (.+?) -->\n(.*?)<!-- end of output -->", re.S)


def test_the_evidence_page_quotes_the_shipped_runs_as_reproduce_results_reads_them(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    blocks = GENERATED.findall((ROOT / "docs" / "evidence.md").read_text(encoding="utf-8"))
    assert blocks, "docs/evidence.md marks no generated output"
    for command, quoted in blocks:
        args = shlex.split(command)
        assert args[:3] == [".venv/bin/python", "-m", "reproduce"], command
        assert main(args[3:]) == 0
        assert capsys.readouterr().out.strip() == quoted.strip(), f"docs/evidence.md is out of date: rerun {command}"
