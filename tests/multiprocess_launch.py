"""One way to launch train.py on several gloo (CPU) processes from a test: torchrun.

Not named multiprocess.py: tests/ is on sys.path, and that would shadow the `multiprocess` package
that `datasets` imports."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def torchrun(script_args: list[str], nproc: int = 2, env: dict | None = None, timeout: float = 300,
             max_restarts: int = 0, wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    """`python -m torch.distributed.run --standalone --nproc_per_node N [--max-restarts K] train.py
    <script_args>` with OMP_NUM_THREADS=1 (N processes on a couple of cores), text output captured.

    wait=True: runs it to the end (or `timeout` seconds) and returns the CompletedProcess.
    wait=False: returns the running Popen (stdout/stderr pipes, own process group so the caller
    can signal the whole launch); the caller waits for, or kills, it.
    `env` entries are added to (and override) this process's environment."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    if max_restarts:
        command += ["--max-restarts", str(max_restarts)]
    command += [str(ROOT / "train.py"), *script_args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=full_env, start_new_session=True)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=full_env)
