"""Two nodes on one machine: two torchrun agents (--nnodes 2, one process each, c10d rendezvous on
127.0.0.1, gloo on CPU) train exactly what one node with two processes trains, and a run that
loses a node (SIGKILL to the agent and its worker) resumes with --set run.resume=auto to the same
bits as the run that never lost one."""
import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from multiprocess_launch import TAG_VARIABLE, Agent, torchrun, torchrun_agents
from test_faults import arguments, assert_same_model, final_model

STEPS = ["train.steps=24", "train.checkpoint_every=4", "data.packing=false"]
ENV = {"WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "GLOO_SOCKET_IFNAME": "lo"}
TIMEOUT = 240  # seconds for one launch to finish on a busy machine


def run_two_agents(tmp_path: Path, name: str, *overrides: str, logs: str = "") -> list:
    agents = torchrun_agents(arguments(tmp_path, name, *STEPS, *overrides), tmp_path / (logs or f"{name}.logs"),
                             env=ENV)
    try:
        deadline = time.time() + TIMEOUT
        for agent in agents:
            code = agent.process.wait(timeout=max(1.0, deadline - time.time()))
            assert code == 0, agent.output()[-3000:]
    finally:
        for agent in agents:
            agent.kill()
    return agents


def global_ranks(pids: list[int]) -> set[int]:
    ranks = set()
    for pid in pids:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ranks |= {int(e[5:]) for e in environ if e.startswith(b"RANK=")}
    return ranks


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").glob("step_*.pt"))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run as one node of two processes, and as two nodes of one process each."""
    tmp_path = tmp_path_factory.mktemp("two_nodes")
    tag = uuid.uuid4().hex  # torchrun's workers leave its process group: found again through this tag
    process = torchrun(arguments(tmp_path, "one_node", *STEPS), nproc=2, env={**ENV, TAG_VARIABLE: tag}, wait=False)
    try:
        _, err = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, err[-3000:]
    finally:
        Agent(process, tag, tmp_path / "unused.log").kill()
    run_two_agents(tmp_path, "two_nodes")
    return tmp_path


def test_two_agents_train_what_one_node_of_two_processes_trains(straight):
    assert_same_model(final_model(straight / "one_node"), final_model(straight / "two_nodes"))
    a, b = summary(straight / "one_node"), summary(straight / "two_nodes")
    assert a["final_val_loss"] == b["final_val_loss"] and a["tokens_seen"] == b["tokens_seen"]


def test_a_dead_node_and_a_resume_of_both_agents_end_where_the_uninterrupted_run_ends(straight, tmp_path):
    run_dir = tmp_path / "killed"
    agents = torchrun_agents(arguments(tmp_path, "killed", *STEPS), tmp_path / "killed.logs", env=ENV)
    try:
        deadline = time.time() + TIMEOUT
        workers = {}
        while not (run_dir / "checkpoints" / "step_0000004.pt").exists():  # the first checkpoint
            assert time.time() < deadline, "no checkpoint appeared"
            for agent in agents:
                assert agent.process.poll() is None, agent.output()[-3000:]
                if agent.tag not in workers and (pids := agent.worker_pids()):
                    workers[agent.tag] = pids  # found ahead, so that the kill itself is immediate
            time.sleep(0.02)
        # The dead node: the one whose worker is global rank 1 (rank 0's node hosts the workers' store).
        (dead,) = [a for a in agents if global_ranks(workers.get(a.tag) or a.worker_pids()) == {1}]
        dead.kill()
        killed_at = time.time()
        (survivor,) = [a for a in agents if a is not dead]
        try:  # with max_restarts 0 the survivor's worker loses its peer and the agent fails out
            code = survivor.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            raise AssertionError("the surviving agent hung after its peer died:\n" + survivor.output()[-3000:])
        print(f"surviving agent (agent {agents.index(survivor)}) exited {code} "
              f"{time.time() - killed_at:.1f} s after the kill; its output ends:\n{survivor.output()[-4000:]}")
        assert code != 0, survivor.output()[-3000:]
    finally:
        for agent in agents:
            agent.kill()
    assert not (run_dir / "summary.json").exists(), "the run ended before the node was killed"
    assert checkpoint_steps(run_dir) and checkpoint_steps(run_dir)[-1] < 24

    resumed = run_two_agents(tmp_path, "killed", "run.resume=auto", logs="resumed.logs")
    assert "resuming from step_00000" in "".join(agent.output() for agent in resumed)
    assert_same_model(final_model(straight / "two_nodes"), final_model(run_dir))
    a, b = summary(straight / "two_nodes"), summary(run_dir)
    assert a["final_val_loss"] == b["final_val_loss"] and a["tokens_seen"] == b["tokens_seen"]
