"""Where jobs run: Slurm job arrays (the sbatch script and the jobs file of each) or one after another here.

Slurm mode puts the jobs that ask for the same resources (nodes, GPUs, CPUs, memory, time limit,
partition) into one array (`job_arrays`), so that no job asks for another's: one array keeps the
sweep's name, several are <name>-1, <name>-2, ... in the grid's order. It writes
<out-dir>/<name>/slurm/{<array>.sbatch, <array>.jobs, logs/} and submits each with sbatch; array
task i runs line i+1 of its jobs file through srun + the launcher (tools/launch.py: torchrun that
gives its workers time to save after a signal) on every node of its allocation. Local mode runs
the jobs one after another on this machine.

Preemption and time limits (render_sbatch; docs/slurm.md has a run on a real Slurm): the job asks
for USR1 to its batch shell 300 s before the time limit (--signal=B:USR1@300). The shell passes a
SIGTERM on to the training step (`scancel --signal=TERM $SLURM_JOB_ID`: torchrun and its workers
on every node); every rank finishes its step, saves a checkpoint at that step and exits 75 (and so
does the launcher); once srun has returned, the shell runs `scontrol requeue` and the job, same
id and jobs-file line, resumes from that checkpoint (run.resume=auto). A TERM to the batch shell
(scancel, preemption) is passed on the same way, but the job is not requeued by the script: a
cancelled job ends with that checkpoint on disk (in KillWait seconds, or Slurm kills it), a
preempted one is requeued by Slurm where the partition's PreemptMode says so. The batch shell exits
with srun's status. Allow the save time in the lead: --sbatch-arg=--signal=B:USR1@600. Without a
time limit of its own (--time) a job gets the partition's default, and the USR1 counts from that
(`reproduce run` warns: NO_TIME_LIMIT).
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from reproduce.paper import REPO

# ------------------------------------------------------------------------------------------------
# Slurm
# ------------------------------------------------------------------------------------------------

@dataclass
class SlurmSettings:
    nodes: int = 1
    gpus_per_node: int = 8          # 0: CPU-only nodes (no --gpus-per-node request)
    nproc_per_node: int | None = None  # processes per node; default: gpus_per_node (1 without GPUs)
    cpus_per_task: int | None = None
    mem: str | None = None          # e.g. 64G; None: the partition's default
    time: str | None = None         # e.g. 48:00:00; None: the partition's default
    partition: str | None = None
    max_parallel: int | None = None  # array throttle: at most this many jobs at once
    requeue_signal_seconds: int = 300  # USR1 this long before the time limit -> save, requeue (also
                                       # the launcher's wait for its workers to save and exit)
    extra: list[str] = field(default_factory=list)  # more sbatch options, e.g. --account=abc

    @property
    def processes_per_node(self) -> int:
        return self.nproc_per_node or max(self.gpus_per_node, 1)

    @property
    def has_time_limit(self) -> bool:
        return self.time is not None or any(arg.split("=")[0] in ("--time", "-t") for arg in self.extra)

    def resource_directives(self) -> list[str]:
        """What a job of these settings asks Slurm for (the sbatch options; jobs with the same
        share an array)."""
        directives = [f"--nodes={self.nodes}"]
        if self.gpus_per_node:
            directives.append(f"--gpus-per-node={self.gpus_per_node}")
        for option, value in [("cpus-per-task", self.cpus_per_task), ("mem", self.mem),
                              ("time", self.time), ("partition", self.partition)]:
            if value is not None:
                directives.append(f"--{option}={value}")
        return directives


NO_TIME_LIMIT = ("warning: no --time: the jobs get the partition's default time limit (sinfo -o '%P %L'), "
                 "which may be shorter than they need (each then stops, saves and requeues every time it runs "
                 "out) or none, and the save and requeue before the limit (--signal=B:USR1@{lead}) counts from "
                 "it; give --time, e.g. --time 48:00:00")


@dataclass
class JobArray:
    """Jobs that ask for the same resources, submitted as one array under `name`."""
    name: str
    jobs: list
    slurm: SlurmSettings

    def request(self) -> str:
        """The array's resource request in one line."""
        return " ".join(self.slurm.resource_directives())


def job_arrays(name: str, jobs: list, requests: list[SlurmSettings]) -> list[JobArray]:
    """One array per distinct resource request, `requests[i]` the settings job i asks with; the
    arrays and their jobs in the grid's order. One array keeps the sweep's name, several are
    numbered <name>-1, <name>-2, ..."""
    groups: dict[tuple, JobArray] = {}
    for job, slurm in zip(jobs, requests, strict=True):
        key = tuple(slurm.resource_directives()) + (slurm.processes_per_node,)
        groups.setdefault(key, JobArray(name, [], slurm)).jobs.append(job)
    arrays = list(groups.values())
    if len(arrays) > 1:
        arrays = [replace(array, name=f"{name}-{i}") for i, array in enumerate(arrays, 1)]
    return arrays


def render_sbatch(*, name: str, jobs_file: Path, log_dir: Path, job_count: int, slurm: SlurmSettings,
                  python: str = sys.executable, repo: Path = REPO) -> str:
    array = f"0-{job_count - 1}" + (f"%{slurm.max_parallel}" if slurm.max_parallel else "")
    directives = [f"--job-name=mols-{name}", f"--array={array}",
                  "--ntasks-per-node=1",  # one torchrun per node; it starts the per-GPU processes
                  f"--output={log_dir}/%x_%A_%a.out",
                  "--open-mode=append",     # a requeued job appends to the same log
                  "--requeue", f"--signal=B:USR1@{slurm.requeue_signal_seconds}"]
    directives += slurm.resource_directives() + slurm.extra
    header = "\n".join(f"#SBATCH {d}" for d in directives)
    return f"""#!/bin/bash
# Written by `python -m reproduce run` (reproduce/launch.py): {job_count} jobs, array {name!r};
# array task i runs line i+1 of
# {jobs_file}
{header}

cd {shlex.quote(str(repo))}
JOBS_FILE={shlex.quote(str(jobs_file))}
JOB_ARGS=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$JOBS_FILE")
if [[ -z $JOB_ARGS ]]; then
    echo "no line $((SLURM_ARRAY_TASK_ID + 1)) in $JOBS_FILE" >&2
    exit 1
fi

# Rendezvous on the first node of the allocation; the port is derived from the job id so that
# jobs sharing a node do not collide.
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))
echo "[sweep] $(date -Is) job $SLURM_JOB_ID (array $SLURM_ARRAY_JOB_ID task $SLURM_ARRAY_TASK_ID)," \\
     "restart ${{SLURM_RESTART_COUNT:-0}}, nodes $SLURM_JOB_NODELIST, rendezvous $MASTER_ADDR:$MASTER_PORT"
echo "[sweep] train.py $JOB_ARGS"

# Preemption and time limits. Slurm sends USR1 to this shell {slurm.requeue_signal_seconds} s before the time limit
# (--signal=B:USR1@{slurm.requeue_signal_seconds}); scancel, preemption and `scontrol requeue` send it TERM. Either way the
# shell passes one SIGTERM on to the training step with `scancel --signal=TERM $SLURM_JOB_ID`, which
# signals every process of the job's steps on every node (torchrun and its workers), not this shell.
# (Not `kill $TRAIN_PID`: srun answers TERM with SIGKILL to its tasks, "forcing job termination",
# and passes USR1 on as USR1, which kills torchrun: it handles only TERM, INT, HUP and QUIT.)
# The workers finish their step, all save a checkpoint at the same step and exit 75; the launcher
# (tools/launch.py: torchrun that waits --stop-grace s for them on every torch version, where
# torchrun 2.11 alone SIGKILLs them after 30 s) then exits 75 too.
# After USR1 the job requeues itself once srun has returned (same job id, same jobs-file line) and
# resumes from that checkpoint (run.resume=auto), unless training had finished (status 0).
# After TERM it does not: a cancelled job ends there (Slurm kills what is left after KillWait s);
# a preempted one is requeued by Slurm when the partition's PreemptMode is REQUEUE.
STOP_SIGNAL=""
stop_training() {{
    [[ -n $STOP_SIGNAL ]] && return  # once: a third TERM would cut torchrun's wait for its workers short
    STOP_SIGNAL=$1
    echo "[sweep] $(date -Is) caught $1: SIGTERM to the training step (it saves a checkpoint and exits 75)"
    scancel --signal=TERM "$SLURM_JOB_ID"
}}
trap 'stop_training USR1' USR1
trap 'stop_training TERM' TERM

eval "JOB_ARGV=($JOB_ARGS)"  # the line is shell-quoted (reproduce/jobs.py)
srun --kill-on-bad-exit=1 {shlex.quote(python)} -m tools.launch --stop-grace {slurm.requeue_signal_seconds} \\
    --nnodes "$SLURM_NNODES" --nproc_per_node {slurm.processes_per_node} \\
    --rdzv_backend c10d --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv_id "$SLURM_JOB_ID" \\
    train.py "${{JOB_ARGV[@]}}" &
TRAIN_PID=$!
# `wait` returns early when a trapped signal arrives: keep waiting until training has ended.
while kill -0 "$TRAIN_PID" 2>/dev/null; do
    wait "$TRAIN_PID"
done
wait "$TRAIN_PID"
STATUS=$?
echo "[sweep] $(date -Is) training exited with status $STATUS"
if [[ $STOP_SIGNAL == USR1 && $STATUS -ne 0 ]]; then  # only now: the checkpoint is on disk
    echo "[sweep] $(date -Is) requeueing job $SLURM_JOB_ID: it resumes from its checkpoint"
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$STATUS"
"""


def write_slurm_files(jobs: list, name: str, sweep_dir: Path, slurm: SlurmSettings,
                      python: str = sys.executable) -> tuple[Path, Path]:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "logs").mkdir(exist_ok=True)
    jobs_file, script = sweep_dir / f"{name}.jobs", sweep_dir / f"{name}.sbatch"
    jobs_file.write_text("".join(job.command_line() + "\n" for job in jobs))
    script.write_text(render_sbatch(name=name, jobs_file=jobs_file.resolve(), log_dir=(sweep_dir / "logs").resolve(),
                                    job_count=len(jobs), slurm=slurm, python=python))
    script.chmod(0o755)
    return script, jobs_file


# ------------------------------------------------------------------------------------------------
# Local
# ------------------------------------------------------------------------------------------------

def local_command(job, nproc_per_node: int, python: str = sys.executable) -> list[str]:
    if nproc_per_node > 1:
        launcher = [python, "-m", "tools.launch", "--standalone", f"--nproc_per_node={nproc_per_node}"]
    else:
        launcher = [python]
    return launcher + ["train.py"] + job.train_args()


def run_local(jobs: list, nproc_per_node: int, python: str = sys.executable) -> int:
    failed = []
    for index, job in enumerate(jobs, 1):
        command = local_command(job, nproc_per_node, python)
        print(f"[sweep] job {index}/{len(jobs)}: {shlex.join(command)}", flush=True)
        status = subprocess.run(command, cwd=REPO).returncode
        if status:
            print(f"[sweep] job {job.run_name} exited with status {status}", flush=True)
            failed.append(job.run_name)
    print(f"[sweep] {len(jobs) - len(failed)}/{len(jobs)} jobs finished"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


SBATCH_MISSING = ("sbatch not found on PATH: submit from a Slurm login node, or run the jobs on this machine "
                  "with --mode local (--dry-run prints the sbatch script without submitting)")


def sbatch_missing() -> bool:
    return shutil.which("sbatch") is None


def submit(script: Path) -> tuple[int, str]:
    """sbatch the script: (0, job id) or (sbatch's status, its error). Ask sbatch_missing() first."""
    submitted = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if submitted.returncode:
        return submitted.returncode, submitted.stderr.strip()
    return 0, submitted.stdout.strip().split(";")[0]
