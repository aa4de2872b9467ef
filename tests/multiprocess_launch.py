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
             max_restarts: int = 0, wait: bool = True,
             script: Path = ROOT / "train.py") -> subprocess.CompletedProcess | subprocess.Popen:
    """`python -m torch.distributed.run --standalone --nproc_per_node N [--max-restarts K] train.py
    <script_args>` with OMP_NUM_THREADS=1 (N processes on a couple of cores), text output captured.
    `script` runs in place of train.py (tests/fault_injection.py's, for one).

    wait=True: runs it to the end (or `timeout` seconds) and returns the CompletedProcess.
    wait=False: returns the running Popen (stdout/stderr pipes, own process group so the caller
    can signal the whole launch); the caller waits for, or kills, it.
    `env` entries are added to (and override) this process's environment."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    if max_restarts:
        command += ["--max-restarts", str(max_restarts)]
    command += [str(script), *script_args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=full_env, start_new_session=True)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=full_env)


# ------------------------------------------------------------------------------------------------
# Several torchrun agents ("nodes") on this machine, meeting through a c10d rendezvous on loopback
# ------------------------------------------------------------------------------------------------

import signal  # noqa: E402
import socket  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass  # noqa: E402

TAG_VARIABLE = "MOLS_TEST_LAUNCH_TAG"  # every process of one agent (workers included) inherits it


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tagged_pids(tag: str) -> list[int]:
    """PIDs of live processes whose environment holds TAG_VARIABLE=tag: an agent and everything it
    started. (torchrun starts each worker in a session of its own, so the agent's process group
    does not hold its workers.)"""
    return [int(entry.name) for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and has_tag(int(entry.name), tag)]


def has_tag(pid: int, tag: str) -> bool:
    try:
        return f"{TAG_VARIABLE}={tag}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


@dataclass
class Agent:
    """One torchrun agent started by `torchrun_agents`: a node of a multi-node launch."""
    process: subprocess.Popen
    tag: str
    log: Path  # the agent's and its workers' stdout and stderr
    seen: tuple = ()  # worker PIDs found by earlier worker_pids() calls

    def worker_pids(self) -> list[int]:
        pids = [pid for pid in tagged_pids(self.tag) if pid != self.process.pid]
        self.seen = tuple(sorted({*self.seen, *pids}))
        return pids

    def kill(self) -> None:
        """The node dies: SIGKILL to its workers' process groups (each worker leads a session of its
        own; those already found by worker_pids() first, without a scan of /proc) and to the
        agent's. Harmless when everything already ended."""
        def kill_group(pid: int) -> None:
            try:
                os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

        for pid in self.seen:
            if has_tag(pid, self.tag):  # still ours, not a reused PID
                kill_group(pid)
        if self.process.poll() is None:  # once reaped, its PID may belong to someone else
            kill_group(self.process.pid)
        for pid in self.worker_pids():
            kill_group(pid)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def torchrun_agents(script_args: list[str], log_dir: Path, nnodes: int = 2, nproc_per_node: int = 1,
                    env: dict | None = None, max_restarts: int = 0) -> list[Agent]:
    """Starts `nnodes` torchrun agents of train.py (`--nnodes N --nproc_per_node M`), each a separate
    process in a session of its own, meeting through a c10d rendezvous on 127.0.0.1 at a fresh port
    and run id. Agent 0 hosts the rendezvous store; group ranks are torchrun's to assign (in
    practice by PID, so agent 0 is usually node rank 0). Agents and workers bind loopback only
    (--local-addr 127.0.0.1, GLOO_SOCKET_IFNAME=lo) and run with OMP_NUM_THREADS=1; output goes to
    `log_dir`/agent_<i>.log. The caller waits for the agents, and kills them (Agent.kill) in a
    `finally`."""
    port, run_id = free_port(), uuid.uuid4().hex[:12]
    log_dir.mkdir(parents=True, exist_ok=True)
    agents = []
    try:
        for index in range(nnodes):
            tag = f"{run_id}-{index}"
            command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes),
                       "--nproc_per_node", str(nproc_per_node), "--rdzv_backend", "c10d",
                       "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", run_id,
                       "--rdzv_conf", f"is_host={int(index == 0)}", "--local-addr", "127.0.0.1",
                       "--max-restarts", str(max_restarts), str(ROOT / "train.py"), *script_args]
            full_env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", **(env or {}),
                        TAG_VARIABLE: tag}
            log = log_dir / f"agent_{index}.log"
            with open(log, "w") as sink:
                process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, text=True, env=full_env,
                                           start_new_session=True)
            agents.append(Agent(process, tag, log))
    except BaseException:
        for agent in agents:
            agent.kill()
        raise
    return agents
