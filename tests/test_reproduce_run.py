"""`python -m reproduce run` (reproduce/jobs.py, launch.py, cost.py): grids, the jobs file, the
sbatch script (checked with bash and fake Slurm commands, no cluster needed), dry runs and local
mode."""
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from reproduce import paper
from reproduce.cli import main as reproduce
from reproduce.cost import BASE_MEM_PER_RANK_GIB
from reproduce.jobs import Variant, build_jobs
from reproduce.launch import SlurmSettings, render_sbatch, write_slurm_files

ROOT = Path(__file__).resolve().parents[1]

TABLE_1_JOBS = 4 * 9 * 3  # sizes x rows x seeds


def table_jobs(table: str, **overrides):
    spec = paper.tables()[table]
    settings = dict(name=f"table{table}", models=spec["models"],
                    variants=[Variant(r["method"], r["mols"]) for r in spec["rows"]],
                    lrs="paper", seeds=[0, 1, 2], out_dir="runs/paper")
    settings.update(overrides)
    return build_jobs(**settings)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch, srun and scontrol stand-ins on PATH that append their arguments to calls.log."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    scripts = {
        "sbatch": 'echo "sbatch $*" >> {log}; echo 4242',
        # srun: record what it would launch, then run a while so signals can arrive meanwhile
        "srun": 'echo "srun $*" >> {log}; sleep "${{FAKE_SRUN_SECONDS:-0}}"',
        "scontrol": 'echo "scontrol $*" >> {log}; if [ "$1 $2" = "show hostnames" ]; then printf "node1\\nnode2\\n"; fi',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/bash\n" + body.format(log=log) + "\n")
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return log


def slurm_env(task_id: int) -> dict:
    return {**os.environ, "SLURM_ARRAY_TASK_ID": str(task_id), "SLURM_ARRAY_JOB_ID": "4242", "SLURM_JOB_ID": "4250",
            "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "node[1-2]"}


def test_table_grids_have_one_job_per_cell():
    assert len(table_jobs("1")) == TABLE_1_JOBS
    assert len(table_jobs("3", seeds=[0])) == 5 * 2
    assert len(table_jobs("6", seeds=[0])) == 5 * 3
    names = [job.run_name for job in table_jobs("1")]
    assert len(set(names)) == len(names)
    assert "llama_60m-adam-mols-lr2.5e-03-s2" in names


def test_learning_rate_search_uses_the_paper_grid():
    jobs = table_jobs("1", lrs="grid", seeds=[0])
    assert len(jobs) == 4 * 9 * 7
    assert sorted({job.lr for job in jobs}) == [1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2]


def test_job_overrides_make_the_cell_resumable_and_tagged():
    (job,) = build_jobs(name="table1", models=["llama_130m"], variants=[Variant("adam", True)],
                              lrs="paper", seeds=[1], out_dir="runs/paper")
    assert job.configs == ["configs/paper/base.yaml", "configs/paper/models/llama_130m.yaml",
                           "configs/paper/methods/adam.yaml", "configs/paper/mols.yaml"]
    assert {"optimizer.lr=0.0025", "run.seed=1", "run.resume=auto", "run.out_dir=runs/paper/table1",
            "run.name=llama_130m-adam-mols-lr2.5e-03-s1", "run.wandb.group=table1",
            "run.wandb.tags=[llama_130m, adam, mols, table1]"} <= set(job.overrides)


def test_grid_errors_are_reported():
    with pytest.raises(ValueError, match="no learning rate for nadam at llama_7b"):
        build_jobs(name="x", models=["llama_7b"], variants=[Variant("nadam", False)],
                         lrs="paper", seeds=[0], out_dir="runs")
    with pytest.raises(ValueError, match="no method overlay"):
        build_jobs(name="x", models=["llama_60m"], variants=[Variant("sgd", False)],
                         lrs=[1e-3], seeds=[0], out_dir="runs")


def test_size_without_a_model_overlay_is_set_by_name():
    (job,) = build_jobs(name="tiny", models=["llama_tiny"], variants=[Variant("adam", False)],
                              lrs=[1e-3], seeds=[0], out_dir="/tmp/x", base=ROOT / "configs" / "quickstart.yaml")
    assert job.configs == ["configs/quickstart.yaml", "configs/paper/methods/adam.yaml"]
    assert "model.size=llama_tiny" in job.overrides


def test_jobs_file_and_sbatch_script(tmp_path):
    jobs = table_jobs("1")
    slurm = SlurmSettings(nodes=1, gpus_per_node=8, time="48:00:00", partition="gpu", max_parallel=16)
    script, jobs_file = write_slurm_files(jobs, "table1", tmp_path, slurm)

    lines = jobs_file.read_text().splitlines()
    assert len(lines) == TABLE_1_JOBS
    names = [next(a for a in shlex.split(line) if a.startswith("run.name=")) for line in lines]
    assert len(set(names)) == len(lines)
    assert all("run.resume=auto" in shlex.split(line) for line in lines)

    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for expected in ["#SBATCH --array=0-107%16", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@300",
                     "#SBATCH --gpus-per-node=8", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1",
                     "#SBATCH --time=48:00:00", "#SBATCH --partition=gpu", "#SBATCH --open-mode=append",
                     'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)',
                     'SLURM_ARRAY_TASK_ID + 1', "srun --kill-on-bad-exit=1", "-m tools.launch --stop-grace 300",
                     '--nnodes "$SLURM_NNODES" --nproc_per_node 8', "--rdzv_backend c10d",
                     '--rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT"', '--rdzv_id "$SLURM_JOB_ID"',
                     "trap 'stop_training USR1' USR1", "trap 'stop_training TERM' TERM",
                     'scancel --signal=TERM "$SLURM_JOB_ID"', 'scontrol requeue "$SLURM_JOB_ID"']:
        assert expected in text, expected


def test_array_task_launches_its_line_with_rendezvous(tmp_path, fake_slurm):
    jobs = table_jobs("3", seeds=[0])
    script, jobs_file = write_slurm_files(jobs, "table3", tmp_path, SlurmSettings(nodes=2))
    done = subprocess.run(["bash", str(script)], env=slurm_env(3), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    (srun,) = [line for line in fake_slurm.read_text().splitlines() if line.startswith("srun")]
    launched = srun.split()
    torchrun_at = launched.index("tools.launch") + 2  # -m tools.launch --stop-grace 300
    assert launched[torchrun_at + 1:torchrun_at + 11] == [
        "--nnodes", "2", "--nproc_per_node", "8", "--rdzv_backend", "c10d",
        "--rdzv_endpoint", f"node1:{20000 + 4250 % 20000}", "--rdzv_id", "4250"]
    train_at = launched.index("train.py")
    # the fourth line of the jobs file, its quoting intact (tags hold spaces)
    assert " ".join(launched[train_at + 1:]) == " ".join(shlex.split(jobs_file.read_text().splitlines()[3]))
    assert "restart 0, nodes node[1-2], rendezvous node1:" in done.stdout


def test_signals_reach_training_and_the_requeue_waits_for_it():
    """The script's structure: traps set before srun starts; the trap only passes the signal on
    (scancel --signal=TERM to the job's steps); the requeue comes after srun has returned."""
    text = render_sbatch(name="t", jobs_file=Path("/x/t.jobs"), log_dir=Path("/x/logs"), job_count=2,
                               slurm=SlurmSettings(requeue_signal_seconds=600))
    assert "#SBATCH --signal=B:USR1@600" in text
    assert "-m tools.launch --stop-grace 600" in text
    srun_at = text.index("srun --kill-on-bad-exit=1")
    assert text.index("trap 'stop_training USR1' USR1") < srun_at and text.index("trap 'stop_training TERM' TERM") < srun_at
    handler = text[text.index("stop_training() {"):text.index("\n}\n", text.index("stop_training() {"))]
    assert 'scancel --signal=TERM "$SLURM_JOB_ID"' in handler and "requeue" not in handler
    waited = text.index('wait "$TRAIN_PID"\nSTATUS=$?')
    assert srun_at < text.index('while kill -0 "$TRAIN_PID"') < waited < text.index('scontrol requeue "$SLURM_JOB_ID"')
    assert 'if [[ $STOP_SIGNAL == USR1 && $STATUS -ne 0 ]]' in text[waited:]


@pytest.fixture
def fake_training(fake_slurm):
    """srun that runs like training: on SIGTERM it 'saves' and exits 75; scancel --signal=TERM
    delivers SIGTERM to it (as Slurm does to a job's steps). Both log to calls.log."""
    bin_dir, pid_file = fake_slurm.parent / "bin", fake_slurm.parent / "srun.pid"
    scripts = {
        "srun": f"""echo "srun $*" >> {fake_slurm}; echo $$ > {pid_file}
stop=0; trap 'echo "srun got TERM" >> {fake_slurm}; stop=1' TERM
while [ $stop = 0 ]; do sleep 0.05; done
sleep 0.3; echo "srun saved, exits 75" >> {fake_slurm}; exit 75""",
        "scancel": f"""echo "scancel $*" >> {fake_slurm}
if [ "$1" = "--signal=TERM" ]; then kill -TERM "$(cat {pid_file})"; fi""",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body + "\n")
        (bin_dir / name).chmod(0o755)
    return fake_slurm


def run_signalled(tmp_path, calls: Path, sig: signal.Signals) -> tuple[int, str, list[str]]:
    """Run array task 0 of a generated script, send the batch shell `sig` once srun runs."""
    script, _ = write_slurm_files(table_jobs("6", seeds=[0]), "table6", tmp_path, SlurmSettings())
    job = subprocess.Popen(["bash", str(script)], env={**slurm_env(0), "PATH": os.environ["PATH"]},
                           stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 10
    while not (calls.exists() and "srun" in calls.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # srun's trap is set
    job.send_signal(sig)
    out, _ = job.communicate(timeout=20)
    return job.returncode, out, ["srun" if line.startswith("srun --") else line
                                 for line in calls.read_text().splitlines() if not line.startswith("scontrol show")]


def test_usr1_before_the_time_limit_stops_training_then_requeues(tmp_path, fake_training):
    status, out, calls = run_signalled(tmp_path, fake_training, signal.SIGUSR1)
    # srun gets TERM from scancel, 'saves', exits; only then the requeue
    assert calls == ["srun", "scancel --signal=TERM 4250", "srun got TERM", "srun saved, exits 75",
                     "scontrol requeue 4250"]
    assert "caught USR1: SIGTERM to the training step" in out
    assert "training exited with status 75" in out and "requeueing job 4250" in out
    assert status == 75


def test_term_stops_training_without_requeueing(tmp_path, fake_training):
    status, out, calls = run_signalled(tmp_path, fake_training, signal.SIGTERM)
    assert calls == ["srun", "scancel --signal=TERM 4250", "srun got TERM", "srun saved, exits 75"]
    assert "caught TERM" in out and "training exited with status 75" in out and "requeueing" not in out
    assert status == 75


def test_dry_run_prints_and_submits_nothing(tmp_path, fake_slurm, capsys):
    assert reproduce(["run", "1", "--out-dir", str(tmp_path / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    arrays = [line.split("=0-")[1] for line in out.splitlines() if line.startswith("#SBATCH --array=0-")]
    assert sum(int(last) + 1 for last in arrays) == TABLE_1_JOBS and "torchrun" in out
    assert out.count("--set run.resume=auto") == TABLE_1_JOBS
    assert not fake_slurm.exists()          # sbatch never called
    assert not (tmp_path / "runs").exists()  # nothing written


def test_slurm_mode_writes_files_and_submits_once(tmp_path, fake_slurm, capsys):
    out_dir = tmp_path / "runs"
    args = ["run", "6", "--models", "gpt2_125m", "--methods", "adam,nadam,lamb", "--out-dir", str(out_dir),
            "--partition", "gpu"]
    assert reproduce(args) == 0
    calls = fake_slurm.read_text().splitlines()
    script = out_dir / "table6" / "slurm" / "table6.sbatch"
    assert calls == [f"sbatch --parsable {script}"]  # one resource request: one array, the sweep's name
    assert len((out_dir / "table6" / "slurm" / "table6.jobs").read_text().splitlines()) == 3
    assert "submitted job array 4242 (3 tasks)" in capsys.readouterr().out


def test_one_array_per_resource_request_each_sized_for_its_jobs(tmp_path, fake_slurm, capsys):
    """A grid whose jobs ask for different host memory (MoLS's statistics grow with the model) is
    submitted as one array per request, each asking for what its own jobs need."""
    from reproduce.cost import job_cost, slurm_resources
    from reproduce.jobs import load_job_config

    out_dir = tmp_path / "runs"
    args = ["run", "--models", "llama_60m,llama_1b", "--methods", "adam,adam+mols", "--lrs", "1e-3", "--seeds", "0",
            "--time", "01:00:00", "--out-dir", str(out_dir)]
    assert reproduce(args) == 0
    out = capsys.readouterr().out
    slurm_dir = out_dir / "sweep" / "slurm"
    # Adam at both sizes asks for the base memory; each MoLS job for its own model's statistics
    expected = {"sweep-1": ["llama_60m-adam-lr1.0e-03-s0", "llama_1b-adam-lr1.0e-03-s0"],
                "sweep-2": ["llama_60m-adam-mols-lr1.0e-03-s0"], "sweep-3": ["llama_1b-adam-mols-lr1.0e-03-s0"]}
    assert fake_slurm.read_text().splitlines() == [f"sbatch --parsable {slurm_dir / name}.sbatch" for name in expected]
    mems = {}
    for name, run_names in expected.items():
        lines = (slurm_dir / f"{name}.jobs").read_text().splitlines()
        assert [next(a for a in shlex.split(line) if a.startswith("run.name=")) for line in lines] == \
            [f"run.name={r}" for r in run_names]
        directives = sbatch_directives((slurm_dir / f"{name}.sbatch").read_text())
        job = load_job_config(next(j for j in build_jobs(name="sweep", models=["llama_60m", "llama_1b"],
                                                         variants=[Variant("adam", False), Variant("adam", True)],
                                                         lrs=[1e-3], seeds=[0], out_dir=str(out_dir))
                                   if j.run_name == run_names[0]))
        cpus, mem = slurm_resources(job_cost(job, 8), 8)
        assert (directives["cpus-per-task"], directives["mem"]) == (str(cpus), mem)
        assert directives["array"] == f"0-{len(run_names) - 1}" and directives["time"] == "01:00:00"
        assert f"[sweep]   {name}: {len(run_names)} job{'s' if len(run_names) > 1 else ''}, --nodes=1 " \
               f"--gpus-per-node=8 --cpus-per-task={cpus} --mem={mem} --time=01:00:00" in out
        mems[name] = int(mem.removesuffix("G"))
    assert mems["sweep-1"] == 8 * BASE_MEM_PER_RANK_GIB < mems["sweep-2"] < mems["sweep-3"]
    assert out.count("submitted job array 4242") == 3 and "squeue -j 4242,4242,4242" in out

    # flags given for every job make one request again
    assert reproduce(args + ["--mem", "200G", "--out-dir", str(tmp_path / "fixed"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[sweep] 1 job array(s)" in out and "[sweep]   sweep: 4 jobs," in out and "--mem=200G" in out


def test_a_missing_time_limit_is_warned_about(capsys):
    args = ["run", "--models", "llama_60m", "--methods", "adam", "--lrs", "1e-3", "--seeds", "0", "--dry-run"]
    assert reproduce(args) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: no --time: the jobs get the partition's default time limit") and \
        "(--signal=B:USR1@300)" in err and err.count("\n") == 1
    for given in (["--time", "48:00:00"], ["--sbatch-arg=--time=48:00:00"], ["--mode", "local"]):
        assert reproduce(args + given) == 0
        assert "warning" not in capsys.readouterr().err, given


def test_the_slurm_doc_shows_table_1s_arrays_and_the_time_warning_as_printed(capsys):
    doc = (ROOT / "docs" / "slurm.md").read_text()
    assert reproduce(["run", "1", "--dry-run", "--partition", "gpu", "--time", "48:00:00"]) == 0
    listing = [line for line in capsys.readouterr().out.splitlines()
               if line.startswith(("[sweep] 5 job array(s)", "[sweep]   table1-"))]
    assert len(listing) == 6 and "\n".join(listing) in doc
    assert reproduce(["run", "1", "--dry-run"]) == 0
    (warning,) = capsys.readouterr().err.splitlines()
    assert warning in doc


def test_a_custom_grid_writes_under_runs_sweeps_and_an_experiment_under_runs_paper(capsys):
    custom = ["run", "--models", "llama_60m", "--methods", "adam", "--lrs", "1e-3", "--seeds", "0", "--mode", "local",
              "--dry-run"]
    assert reproduce(custom) == 0
    out = capsys.readouterr().out
    assert "runs in runs/sweeps/sweep/" in out and "--set run.out_dir=runs/sweeps/sweep" in out
    assert reproduce(["run", "6", "--models", "gpt2_125m", "--methods", "adam", "--mode", "local", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "runs in runs/paper/table6/" in out and "--set run.out_dir=runs/paper/table6" in out
    assert reproduce(custom + ["--out-dir", "elsewhere"]) == 0
    assert "--set run.out_dir=elsewhere/sweep" in capsys.readouterr().out


def test_slurm_mode_without_sbatch_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no sbatch anywhere
    out_dir = tmp_path / "runs"
    assert reproduce(["run", "6", "--out-dir", str(out_dir)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("error: sbatch not found on PATH: submit from a Slurm login node, or run the jobs on this machine "
                   "with --mode local (--dry-run prints the sbatch script without submitting)\n")
    assert not out_dir.exists()  # nothing written for a submission that cannot happen


def test_incompatible_batch_split_is_refused_before_submitting(tmp_path, fake_slurm, capsys):
    # 2 nodes x 8 GPUs x micro_batch 64 = 1024 sequences > the global batch of 512
    status = reproduce(["run", "1", "--models", "llama_60m", "--nodes", "2", "--out-dir", str(tmp_path)])
    assert status == 2
    err = capsys.readouterr().err
    assert "multiple of world size x train.micro_batch (16 x 64 = 1024); use train.micro_batch=32 (accumulation 1)" in err
    # the grid's nine methods share the problem: said once, with the jobs, and the hint once
    assert err.count("16 x 64 = 1024") == 1 and err.count("change --nodes") == 1, err
    assert not fake_slurm.exists()


def test_local_dry_run_prints_commands(capsys):
    args = ["run", "--models", "llama_60m", "--methods", "adam", "--mols", "both", "--lrs", "1e-3,2.5e-3",
            "--seeds", "0", "--mode", "local", "--dry-run"]
    assert reproduce(args) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if "train.py" in line]
    assert len(commands) == 4  # MoLS off/on x 2 learning rates
    assert all(shlex.split(c)[1] == "train.py" for c in commands)
    assert reproduce(args + ["--nproc-per-node", "2"]) == 0
    assert "--standalone --nproc_per_node=2 train.py" in capsys.readouterr().out


def gpu_hours_of(output: str) -> float:
    (line,) = [line for line in output.splitlines() if line.startswith("[sweep] estimated compute:")]
    return float(line.split(":", 1)[1].split("GPU-hours")[0].replace(",", ""))


def test_dry_run_estimates_gpu_hours(capsys):
    from models import build_model

    args = ["run", "--models", "llama_60m", "--methods", "adam", "--lrs", "1e-3", "--seeds", "0,1", "--dry-run"]
    assert reproduce(args) == 0
    out = capsys.readouterr().out
    assert "models/cost.py's FLOPs per token" in out and "40% MFU of 989 TFLOP/s" in out
    # llama_60m: 10k steps x 512 sequences x 256 tokens; 6 x the 58M parameters less the input
    # embedding's 32000 x 512 (a lookup, no multiply) + 12 x 8 layers x 512 wide x 256 tokens
    n = sum(p.numel() for p in build_model("llama_60m", 32000, device="meta").parameters())
    per_token = 6 * (n - 32000 * 512) + 12 * 8 * 512 * 256
    expected = 2 * 10_000 * 512 * 256 * per_token / (0.4 * 989e12) / 3600
    assert gpu_hours_of(out) == pytest.approx(expected, abs=0.05)
    assert reproduce(args + ["--assume-mfu", "0.2", "--gpu-peak-tflops", "494.5"]) == 0
    assert gpu_hours_of(capsys.readouterr().out) == pytest.approx(4 * expected, abs=0.2)
    assert reproduce(args + ["--mode", "local"]) == 0  # local dry runs print it too
    assert gpu_hours_of(capsys.readouterr().out) == pytest.approx(expected, abs=0.05)


def sbatch_directives(output: str) -> dict:
    return dict(line[len("#SBATCH --"):].split("=", 1) for line in output.splitlines()
                if line.startswith("#SBATCH --") and "=" in line)


def test_sbatch_cpus_and_memory_come_from_the_config(capsys):
    from models import build_model

    base = ["run", "--models", "llama_1b", "--lrs", "1e-3", "--seeds", "0", "--dry-run"]
    assert reproduce(base + ["--methods", "adam"]) == 0
    directives = sbatch_directives(capsys.readouterr().out)
    assert directives["cpus-per-task"] == str(8 * (1 + 2))   # (data.num_workers + 2) x 8 ranks
    assert directives["mem"] == f"{8 * BASE_MEM_PER_RANK_GIB}G"

    # MoLS keeps two fp32 values per parameter on the CPU, each of the 8 ranks 1/8 of them
    # (mols.shard_statistics, on by default), or all of them on every rank when not sharded
    n = sum(p.numel() for p in build_model("llama_1b", 32000, device="meta").parameters())
    assert reproduce(base + ["--methods", "adam,adam+mols", "--set", "data.num_workers=4"]) == 0
    directives = sbatch_directives(capsys.readouterr().out)
    assert directives["cpus-per-task"] == str(8 * (4 + 2))
    assert directives["mem"] == f"{-(-8 * (BASE_MEM_PER_RANK_GIB * 2**30 + 8 * -(-n // 8)) // 2**30)}G"
    assert reproduce(base + ["--methods", "adam+mols", "--set", "mols.shard_statistics=false"]) == 0
    directives = sbatch_directives(capsys.readouterr().out)
    assert directives["mem"] == f"{-(-8 * (BASE_MEM_PER_RANK_GIB * 2**30 + 8 * n) // 2**30)}G"

    assert reproduce(base + ["--methods", "adam+mols", "--set", "mols.stats_device=device"]) == 0
    assert sbatch_directives(capsys.readouterr().out)["mem"] == f"{8 * BASE_MEM_PER_RANK_GIB}G"

    assert reproduce(base + ["--methods", "adam+mols", "--cpus-per-task", "7", "--mem", "99G"]) == 0
    directives = sbatch_directives(capsys.readouterr().out)
    assert (directives["cpus-per-task"], directives["mem"]) == ("7", "99G")
