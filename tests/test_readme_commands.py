"""The README's (and docs/*.md's) own commands work as written.

Every command that calls a script of the repository (`scripts/foo.py ...`, `python scripts/foo.py`,
`.venv/bin/python train.py`, `torchrun ... train.py`, `bash scripts/x.sh`, `.ci/run`, `make target`)
names a file that exists; a script called directly (not through python/bash/torchrun) has a `#!`
line and the executable bit; every Python entry point answers `--help` with exit 0, from another
directory, with the project NOT installed (its scripts put the repository root on sys.path
themselves), writing nothing; every `--flag` a command passes is one its script's --help lists;
every make target exists. A `python -m reproduce SUBCOMMAND ...` command (run from the repository
root) names a subcommand whose --help answers, lists every flag the command passes, and, for
`run EXPERIMENT`, names an experiment of configs/paper/experiments.yaml.

And no file is executable without a `#!` line: the shell runs such a file as a shell script, and
the backticks of a Python docstring run the script again, endlessly (a fork bomb).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROJECT_PACKAGES = ("configs", "data", "models", "mols", "optimizers", "training", "tools")
PROJECT_MODULES = ("reproduce",)  # run as `python -m NAME` from the repository root
NOT_ENTRY_POINTS = {"__init__.py", "_repo_root.py"}  # library modules of scripts/: must not be executable
SEPARATORS = {";", "&&", "||", "|", "&"}
HELP_TIMEOUT = 300  # all the --help runs together (one process; 60 s each at most)


@dataclass(frozen=True)
class Call:
    where: str          # README.md:123
    script: str         # repo-relative path, e.g. scripts/pretokenize.py
    direct: bool        # run as a program (needs `#!` and the x bit), not through python/bash/torchrun
    args: tuple[str, ...]
    written: str = ""   # the script as the command spells it (train.py, ./train.py, scripts/x.py)
    inline: bool = False  # an inline `code span` in prose, not a line of a code block
    module: str = ""    # `python -m MODULE ...` of a project module (script: its folder)


def _code_lines(path: Path):
    """(line number, text, is_inline) of every code line (fenced or indented) and inline code span."""
    lines = path.read_text().splitlines()
    fenced, indented, previous_blank, pending, start = False, False, True, "", 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fenced, indented, previous_blank = not fenced, False, False
            continue
        # an indented code block: 4+ spaces after a blank line, until a line that is not indented
        indented = not fenced and line.startswith("    ") and (previous_blank or indented)
        if fenced or indented:
            if not pending:
                start = number
            if stripped.endswith("\\"):  # a continued command
                pending += stripped[:-1] + " "
                continue
            yield start, pending + stripped, False
            pending = ""
        else:
            for span in re.findall(r"`([^`]+)`", line):
                yield number, span.replace("\\|", "|"), True
        previous_blank = not stripped


def _tokens(text: str) -> list[str] | None:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # Python code or prose with an unbalanced quote: not a command
        return None


def _is_python(token: str) -> bool:
    return re.fullmatch(r"python(3(\.\d+)?)?", Path(token).name) is not None


def _repo_script(token: str) -> str | None:
    """The repo-relative path a command token names as a script, or None (not a script of ours)."""
    token = token.removeprefix("./")
    if token.startswith(("scripts/", ".ci/")) or token == "train.py":
        return token
    if "/" not in token and token.endswith((".py", ".sh")) and (ROOT / "scripts" / token).is_file():
        return f"scripts/{token}"  # a docs table's shorthand: `pretokenize.py --workers 8`
    return None


def _calls_in(tokens: list[str], where: str, inline: bool):
    commands, current = [], []
    for token in tokens:
        if token in SEPARATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    mention = inline and len(tokens) == 1  # `scripts/pretokenize.py` named in prose: exists, not a call
    for words in commands:
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0]):  # VAR=value prefixes
            words = words[1:]
        if not words:
            continue
        head, rest = words[0], words[1:]
        if head == "make":
            yield "make", where, tuple(w for w in rest if not w.startswith("-") and "=" not in w)
        elif _is_python(head) or head in ("torchrun", "bash", "sh"):
            if _is_python(head) and rest[:1] == ["-m"] and len(rest) > 1 and rest[1] in PROJECT_MODULES:
                yield "call", Call(where, rest[1], False, tuple(rest[2:]), f"{head} -m {rest[1]}", inline, rest[1])
                continue
            if head != "torchrun" and rest[:1] and rest[0] in ("-m", "-c"):
                continue  # python -m pytest, python -c ...: no script of ours
            for i, word in enumerate(rest):
                if word.endswith((".py", ".sh")) and not word.startswith("-"):
                    script = _repo_script(word)
                    if script:
                        yield "call", Call(where, script, False, tuple(rest[i + 1:]), word, inline)
                    break
        else:
            script = _repo_script(head)
            if script and not script.endswith("/"):
                yield "call", Call(where, script, not mention, tuple(rest), head, inline)


def readme_commands() -> tuple[list[Call], list[tuple[str, tuple[str, ...]]]]:
    """The script calls, and the make targets (where, targets), of every command in the docs."""
    calls, make_targets = [], []
    for doc in DOCS:
        for number, text, inline in _code_lines(doc):
            tokens = _tokens(text)
            if not tokens:
                continue
            for kind, *item in _calls_in(tokens, f"{doc.relative_to(ROOT)}:{number}", inline):
                if kind == "make":
                    make_targets.append(tuple(item))  # (where, targets)
                else:
                    calls.append(item[0])
    return calls, make_targets


CALLS, MAKE_TARGETS = readme_commands()


def _has_shebang(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"#!"


def _executable(path: Path) -> bool:
    return bool(path.stat().st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))


def _is_entry_point(path: Path) -> bool:
    return path.name not in NOT_ENTRY_POINTS and "__name__ == \"__main__\"" in path.read_text()


ENTRY_POINTS = sorted({p.relative_to(ROOT).as_posix() for p in (ROOT / "scripts").glob("*.py") if _is_entry_point(p)}
                      | {"train.py"} | {c.script for c in CALLS if c.script.endswith(".py") and (ROOT / c.script).is_file()})


def test_the_readme_commands_are_found():
    scripts = {c.script for c in CALLS}
    assert {"train.py", "reproduce", "scripts/evaluate.py", "scripts/pretokenize.py",
            "scripts/slurm/local_cluster.sh"} <= scripts, sorted(scripts)
    assert any(c.module == "reproduce" and c.args == ("run", "1", "--dry-run") and not c.inline for c in CALLS)
    assert {"run", "results", "list", "plot snr", "plot alphas"} <= set(MODULE_COMMANDS), sorted(MODULE_COMMANDS)
    assert any(c.script == "train.py" and not c.direct for c in CALLS)  # .venv/bin/python train.py, torchrun
    assert {"quickstart", "test"} <= {target for _, targets in MAKE_TARGETS for target in targets}


def test_every_called_script_exists():
    missing = [f"{c.where}: {c.script}" for c in CALLS
               if not (ROOT / c.script / "__main__.py" if c.module else ROOT / c.script).is_file()]
    assert not missing, "commands in the docs call scripts that do not exist:\n" + "\n".join(missing)


def test_scripts_called_directly_have_a_shebang_and_the_executable_bit():
    bad = []
    for call in CALLS:
        path = ROOT / call.script
        if call.direct and path.is_file() and not (_has_shebang(path) and _executable(path)):
            bad.append(f"{call.where}: {call.script} (shebang: {_has_shebang(path)}, executable: {_executable(path)})")
    assert not bad, "called as programs but not runnable as programs:\n" + "\n".join(bad)


def test_programs_in_code_blocks_are_called_by_a_path():
    """`train.py --config ...` pasted into a shell is `command not found` (the working directory is
    not on PATH): a code block calls it `./train.py`, or through python."""
    bare = [f"{c.where}: {c.written}" for c in CALLS if c.direct and not c.inline and "/" not in c.written]
    assert not bare, "called as a program without a path (write ./NAME or scripts/NAME):\n" + "\n".join(bare)


def test_make_targets_exist():
    defined = set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.M))
    missing = [f"{where}: make {target}" for where, targets in MAKE_TARGETS for target in targets
               if target not in defined]
    assert not missing, f"make targets named in the docs but not in the Makefile: {missing}"


def _git_files() -> list[tuple[str, str]]:
    try:
        out = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [(line.split(None, 1)[0], line.split("\t", 1)[1]) for line in out.stdout.splitlines()]


def test_no_file_is_executable_without_a_shebang():
    """Tracked files (their mode in git, which a fresh clone gets, and in this working tree) and
    every file under scripts/ (new ones are untracked until committed)."""
    candidates = {}
    for mode, name in _git_files():
        candidates[name] = mode == "100755"
    for path in (ROOT / "scripts").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            candidates.setdefault(path.relative_to(ROOT).as_posix(), False)
    assert "scripts/quickstart.py" in candidates
    bad = []
    for name, executable_in_git in sorted(candidates.items()):
        path = ROOT / name
        if not path.is_file() or path.is_symlink():
            continue
        if (executable_in_git or _executable(path)) and not _has_shebang(path):
            bad.append(name)
    assert not bad, ("executable without a #! line (the shell would run them as shell scripts): "
                     f"{bad}; add `#!/usr/bin/env python3` or chmod -x")


def test_entry_points_are_executable_and_library_modules_are_not():
    bad = []
    for path in sorted((ROOT / "scripts").glob("*.py")):
        if _is_entry_point(path) and not (_has_shebang(path) and _executable(path)):
            bad.append(f"{path.name}: an entry point needs `#!/usr/bin/env python3` and chmod +x")
        if not _is_entry_point(path) and _executable(path):
            bad.append(f"{path.name}: not an entry point, must not be executable")
    train = ROOT / "train.py"
    if not (_has_shebang(train) and _executable(train)):
        bad.append("train.py: called as `train.py --config ...` in the README")
    assert not bad, "\n".join(bad)


def test_scripts_that_import_the_project_put_the_repo_root_on_sys_path_first():
    """Scripts run as files find the project's packages in this checkout even where only `mols`
    (or nothing) is installed: `import _repo_root` before the first import of a project package,
    lazy ones inside functions included (those --help does not reach)."""
    project_import = re.compile(r"^\s*(from|import) (%s)\b" % "|".join(PROJECT_PACKAGES), re.M)
    bad = []
    for path in sorted((ROOT / "scripts").glob("*.py")):
        text = path.read_text()
        first = project_import.search(text)
        if first and not (0 <= text.find("import _repo_root") < first.start()):
            bad.append(f"{path.name}: line {text.count(chr(10), 0, first.start()) + 1} imports the project before "
                       f"`import _repo_root` (see scripts/_repo_root.py)")
    assert not bad, "\n".join(bad)


# Runs each script as `python SCRIPT --help` does (its folder is sys.path[0], __name__ is
# "__main__", __file__ its path), one after another in ONE process (torch, transformers and
# matplotlib are imported once: the whole list takes seconds, not a minute), forgetting the
# project's modules and the scripts' own between scripts; with the project hidden from the import
# system (setuptools' editable finder, the repo root on sys.path), so every script must put the
# repo root on sys.path itself; and checks that each project module a script imported came from this
# checkout. At most 60 s per script (SIGALRM). Writes {script: result} as JSON to the given file.
RUN_UNINSTALLED = r"""
import contextlib, importlib.util, io, json, os, runpy, signal, sys, traceback
root, out_file, packages, scripts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in str(getattr(f, "__module__", ""))]
sys.path[:] = [p for p in sys.path if p and "__editable__" not in p and os.path.realpath(p) != root]
sys.path_importer_cache.clear()
for name in ("configs", "training"):
    spec = importlib.util.find_spec(name)
    if spec and spec.origin and os.path.realpath(spec.origin).startswith(root + os.sep):
        sys.exit(f"test set-up: {name} is still importable from the checkout ({spec.origin})")
base_path = list(sys.path)
siblings = {f[:-3] for f in os.listdir(os.path.join(root, "scripts")) if f.endswith(".py")}


def timeout(signum, frame):
    raise TimeoutError("--help took more than 60 s")


signal.signal(signal.SIGALRM, timeout)
results = {}
for script in scripts:
    for name in list(sys.modules):
        if name.split(".")[0] in packages or name in siblings:
            del sys.modules[name]
    path = os.path.join(root, script)
    sys.path[:] = [os.path.dirname(path), *base_path]
    sys.argv = [path, "--help"]
    before = set(os.listdir("."))
    stdout, stderr = io.StringIO(), io.StringIO()
    signal.alarm(60)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            runpy.run_path(path, run_name="__main__")
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) or exit.code is None else str(exit.code)
    except BaseException:
        code = traceback.format_exc()
    finally:
        signal.alarm(0)
    outside = sorted(name for name, module in list(sys.modules.items())
                     if name.split(".")[0] in packages and getattr(module, "__file__", None)
                     and not os.path.realpath(module.__file__).startswith(root + os.sep))
    results[script] = {"code": code or 0, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()[-3000:],
                       "outside": outside, "written": sorted(set(os.listdir(".")) - before)}
with open(out_file, "w") as f:
    json.dump(results, f)
"""


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1", MOLS_CACHE=str(tmp_path / "mols-cache"),
               MPLCONFIGDIR=str(tmp_path / "mplconfig"))
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module")
def help_outputs(tmp_path_factory):
    """{script: {code, stdout, stderr, outside, written}} of `--help` of every entry point, run
    from an empty directory elsewhere with the project not importable from site-packages."""
    tmp = tmp_path_factory.mktemp("help")
    cwd = tmp / "cwd"
    cwd.mkdir()
    out = tmp / "results.json"
    result = subprocess.run([sys.executable, "-c", RUN_UNINSTALLED, os.path.realpath(ROOT), str(out),
                             json.dumps(PROJECT_PACKAGES), json.dumps(ENTRY_POINTS)],
                            cwd=cwd, env=_env(tmp), capture_output=True, text=True, timeout=HELP_TIMEOUT)
    assert result.returncode == 0 and out.is_file(), result.stderr[-3000:]
    assert not (tmp / "mols-cache").exists(), "--help created the MoLS cache"
    return json.loads(out.read_text())


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_script_answers_help_from_anywhere_uninstalled(script, help_outputs):
    result = help_outputs[script]
    assert result["code"] == 0, f"{script} --help: exit {result['code']}\n{result['stderr']}"
    assert "usage:" in result["stdout"], result["stdout"][-2000:]
    assert not result["outside"], f"{script} imported the project from outside the checkout: {result['outside']}"
    assert not result["written"], f"{script} --help wrote {result['written']}"
    # every flag the docs pass to this script is one it knows (a sweep wrapper's are sweep.py's)
    unknown = []
    for call in CALLS:
        if call.script != script:
            continue
        for arg in call.args:
            flag = arg.strip("[]").split("=", 1)[0]
            if flag.startswith("--") and len(flag) > 2 and not re.search(re.escape(flag) + r"(?![\w-])",
                                                                          result["stdout"]):
                unknown.append(f"{call.where}: {flag}")
    assert not unknown, f"{script} --help does not list flags the docs use:\n" + "\n".join(unknown)


def test_a_script_runs_as_a_program_and_with_python_from_anywhere(tmp_path):
    """`scripts/quickstart.py --help` from the repo root (through its #! line, the venv's python first
    on PATH as in an activated venv) and `python /abs/scripts/quickstart.py --help` from elsewhere."""
    path = ROOT / "scripts" / "quickstart.py"
    assert _has_shebang(path) and _executable(path)  # never exec a file without one: it forks endlessly
    env = _env(tmp_path)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for command, cwd in ((["./scripts/quickstart.py", "--help"], ROOT),
                         ([sys.executable, str(path), "--help"], tmp_path)):
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "--set" in result.stdout, (command, result.stderr[-2000:])


# ------------------------------------------------------------------ python -m reproduce ...

def _module_command(call: Call) -> str:
    """The subcommand a `python -m reproduce ...` call runs: "run", "plot snr", "" (the top level)."""
    words = []
    for arg in call.args[:2]:
        if arg.startswith("-") or (words and words[0] != "plot"):
            break
        words.append(arg)
    return " ".join(words)


MODULE_COMMANDS = sorted({_module_command(c) for c in CALLS if c.module})

# `python -m MODULE [SUBCOMMAND...] --help` as `python -m` runs it from the repository root (the root
# first on sys.path, the module run as __main__), for each subcommand in turn in ONE process, from
# an empty directory elsewhere (nothing may be written; no path may depend on the working
# directory), the project otherwise not importable (no editable finder). Writes {command: result}.
RUN_MODULE_HELP = r"""
import contextlib, io, json, os, runpy, sys, traceback
root, out_file, module = sys.argv[1:4]
packages, commands = json.loads(sys.argv[4]), json.loads(sys.argv[5])
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in str(getattr(f, "__module__", ""))]
sys.path[:] = [root] + [p for p in sys.path if p and "__editable__" not in p and os.path.realpath(p) != root]
sys.path_importer_cache.clear()
results = {}
for command in commands:
    sys.argv = [module, *command.split(), "--help"]
    before = set(os.listdir("."))
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) or exit.code is None else str(exit.code)
    except BaseException:
        code = traceback.format_exc()
    outside = sorted(name for name, m in list(sys.modules.items())
                     if name.split(".")[0] in packages and getattr(m, "__file__", None)
                     and not os.path.realpath(m.__file__).startswith(root + os.sep))
    results[command] = {"code": code or 0, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()[-3000:],
                        "outside": outside, "written": sorted(set(os.listdir(".")) - before)}
with open(out_file, "w") as f:
    json.dump(results, f)
"""


@pytest.fixture(scope="module")
def module_help_outputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("module-help")
    cwd = tmp / "cwd"
    cwd.mkdir()
    out = tmp / "results.json"
    result = subprocess.run([sys.executable, "-c", RUN_MODULE_HELP, os.path.realpath(ROOT), str(out), "reproduce",
                             json.dumps(PROJECT_PACKAGES + PROJECT_MODULES), json.dumps(["", *MODULE_COMMANDS])],
                            cwd=cwd, env=_env(tmp), capture_output=True, text=True, timeout=HELP_TIMEOUT)
    assert result.returncode == 0 and out.is_file(), result.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("command", ["", *MODULE_COMMANDS])
def test_module_command_answers_help_and_knows_the_flags_the_docs_use(command, module_help_outputs):
    result = module_help_outputs[command]
    assert result["code"] == 0, f"python -m reproduce {command} --help: exit {result['code']}\n{result['stderr']}"
    assert "usage: python -m reproduce" in result["stdout"], result["stdout"][-2000:]
    assert not result["outside"], f"imported the project from outside the checkout: {result['outside']}"
    assert not result["written"], f"python -m reproduce {command} --help wrote {result['written']}"
    problems = []
    for call in CALLS:
        if not call.module or _module_command(call) != command:
            continue
        rest = call.args[len(command.split()):]
        for arg in rest:
            flag = arg.strip("[]").split("=", 1)[0]
            if flag.startswith("--") and len(flag) > 2 and not re.search(re.escape(flag) + r"(?![\w-])",
                                                                          result["stdout"]):
                problems.append(f"{call.where}: {flag}")
        # `run EXPERIMENT`: an experiment the help lists (placeholders such as TABLE aside)
        if command == "run" and rest and re.fullmatch(r"[a-z0-9_]+", rest[0]) and not re.search(
                rf"^\s+{re.escape(rest[0])}\s", result["stdout"], re.M):
            problems.append(f"{call.where}: no experiment {rest[0]!r}")
    assert not problems, (f"python -m reproduce {command}: the docs use what --help does not list:\n"
                          + "\n".join(problems))


def test_python_m_reproduce_runs_from_the_repository_root(tmp_path):
    """As the docs run it: `python -m reproduce ...` from the root of the checkout, not installed."""
    result = subprocess.run([sys.executable, "-m", "reproduce", "run", "--help"], cwd=ROOT, env=_env(tmp_path),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--dry-run" in result.stdout, result.stderr[-2000:]
