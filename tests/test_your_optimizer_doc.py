"""docs/your_optimizer.md works as written, at a smaller size: its optimizer file (the page's Python
block) and its commands (the page's `.venv/bin/python ...` lines), run with a few `--set` flags
more (llama_micro, 4 steps) and the runs in a temporary folder. The sweep's jobs are the ones
`reproduce run --mode local` would start, run here in-process (a process each would cost more than
the runs); everything else is the page's own command line."""
import re
import shlex
import sys
from pathlib import Path

import pytest

import train
from reproduce.cli import main as reproduce

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "your_optimizer.md"
SMALLER = ["model.size=llama_micro", "train.steps=4", "train.warmup_steps=2", "train.eval_every=4", "train.global_batch=8",
           "train.micro_batch=4", "data.val_tokens=1024", "mols.samples=16"]


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)


def commands() -> list[list[str]]:
    """The page's shell commands, continued lines joined, `.venv/bin/python` dropped."""
    found = []
    for block in code_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                assert words[0] == ".venv/bin/python", f"{DOC.name}: {line}"  # one convention
                found.append(words[1:])
    return found


@pytest.fixture
def my_optimizer(tmp_path, monkeypatch):
    """The page's my_optimizer.py, importable as it would be from the checkout."""
    (folder := tmp_path / "mine").mkdir()
    (python,) = code_blocks("python")
    (folder / "my_optimizer.py").write_text(python)
    monkeypatch.syspath_prepend(str(folder))
    yield
    sys.modules.pop("my_optimizer", None)


@pytest.mark.corpus
def test_the_walk_through_runs_as_written(tmp_path, my_optimizer, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    check, mistake, sweep, *readings = commands()
    smaller = [a for item in SMALLER for a in ("--set", item)]

    assert check[0] == "train.py" and "--dry-run" in check and train.main(check[1:] + smaller) == 0
    assert "(measured after one step on a stand-in)" in capsys.readouterr().out
    assert mistake[0] == "train.py" and train.main(mistake[1:] + smaller) == 2
    err = capsys.readouterr().err
    assert "configuration error (2 problems)" in err and err.strip() in DOC.read_text()

    assert sweep[:3] == ["-m", "reproduce", "run"] and "--mode" in sweep
    out_dir = sweep[sweep.index("--out-dir") + 1]
    sweep[sweep.index("--out-dir") + 1] = str(tmp_path / out_dir)
    assert reproduce(sweep[2:] + smaller + ["--dry-run"]) == 0
    jobs = [shlex.split(line) for line in capsys.readouterr().out.splitlines() if " train.py " in line]
    assert len(jobs) == 16  # 2 methods x MoLS or not x 2 learning rates x 2 seeds
    for job in jobs:
        assert train.main(job[job.index("train.py") + 1:]) == 0
    capsys.readouterr()

    reports = []
    for reading in readings:
        assert reading[:3] == ["-m", "reproduce", "results"]
        roots = [str(tmp_path / word) if word.startswith(out_dir + "/") else word for word in reading[2:]]
        assert reproduce(roots) == 0
        reports.append(capsys.readouterr().out)
    every_arm, with_and_without = reports
    for arm in ("adamw (baseline)", "my_optimizer.AtanAdam", "my_optimizer.AtanAdam+mols", "adamw+mols"):
        assert re.search(rf"^{re.escape(arm)} +", every_arm, re.M), (arm, every_arm)
    assert "Against the baseline" in every_arm and "2 seeds" in every_arm
    assert re.search(r"^my_optimizer.AtanAdam\+mols +my_optimizer.AtanAdam +", with_and_without, re.M)
