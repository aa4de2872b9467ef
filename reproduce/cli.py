"""The paper's experiments from one command line (run it from the repository root).

    python -m reproduce list [--markdown]                # every table and figure, its command
    python -m reproduce run 1 --dry-run                  # Table 1: the jobs, the sbatch script, the GPU-hours
    python -m reproduce run 1 --partition gpu --time 48:00:00
    python -m reproduce run --name adam_vs_mols --models llama_60m --methods adam --mols both \\
        --lrs 1e-3,2.5e-3 --seeds 0,1 --mode local        # any grid
    python -m reproduce results runs/paper/table1 --table 1 [--format latex] [--plot table1.png]
    python -m reproduce results runs/evidence --baseline adamw  # intervals, tests, speed-up, tuning
    python -m reproduce plot snr RUN_DIR...              # also: alphas, ablation, curves

Every table and figure is an entry of configs/paper/experiments.yaml: what it is, its grid
(models, rows, seeds, learning rates, nodes, overlays) and the paper's numbers.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from reproduce import paper
from reproduce.cost import BASE_MEM_PER_RANK_GIB, DEFAULT_GPU_PEAK_TFLOPS, DEFAULT_MFU

RAW = argparse.RawDescriptionHelpFormatter
ABLATION_TABLES = ("7", "12", "figure3")  # the tables `plot ablation` draws


def _experiment_type(kind: str, known):
    def parse(text: str) -> str:
        try:
            key = paper.resolve(text)
        except KeyError:
            key = None
        if key not in known():
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind} of configs/paper/experiments.yaml "
                                             f"(choose from {', '.join(known())})")
        return key
    parse.__name__ = kind  # argparse names the type in its errors
    return parse


def comma_list(convert):
    def parse(text: str):
        return [convert(item) for item in text.split(",") if item.strip()]
    return parse


def parse_lrs(text: str):
    return text if text in ("paper", "grid") else comma_list(float)(text)


# ------------------------------------------------------------------------------------------------
# list
# ------------------------------------------------------------------------------------------------

LIST_HELP = """Every table and figure of the paper (configs/paper/experiments.yaml, in the paper's order): what
it is, the command that runs it and the commands that read it. --markdown prints
docs/paper_coverage.md's table; --update-doc writes it there."""


def cmd_list(args) -> int:
    from reproduce import coverage
    from reproduce.jobs import experiment_jobs

    if args.update_doc:
        changed = coverage.update_doc()
        print(f"{'updated' if changed else 'unchanged'}: {coverage.DOC}")
        return 0
    if args.markdown:
        print(coverage.markdown_table())
        return 0
    for key, entry in paper.experiments().items():
        print(f"{entry['paper']}: {entry['what']}")
        if "grid" in entry:
            grid = paper.preset(key)
            jobs = experiment_jobs(key)
            print(f"  run:  {coverage.command(key)}    ({len(jobs)} jobs, {grid.nodes} node(s) each, "
                  f"runs/paper/{grid.name}/)")
        else:
            print(f"  from: {entry.get('command', '-')}")
        for read in entry.get("read", []):
            print(f"  read: {read}")
    return 0


# ------------------------------------------------------------------------------------------------
# run
# ------------------------------------------------------------------------------------------------

RUN_HELP = """Expand a grid of training runs into jobs and run them locally or as a Slurm job array.

A grid is models x rows (a method overlay, with or without MoLS) x learning rates x seeds; every
cell becomes one job (reproduce/jobs.py). EXPERIMENT takes a paper table or figure's grid from
configs/paper/experiments.yaml (models, rows, learning rates, seeds, nodes, overlays); the options
refine it. Without EXPERIMENT, --models and --methods give the grid. Runs go to
OUT_DIR/NAME/RUN_NAME: runs/paper/ for an EXPERIMENT, runs/sweeps/ for a grid of your own.

Slurm mode submits one job array per resource request: each job asks for --cpus-per-task and
--mem derived from its own config (reproduce/cost.py; the flags override them for every job), and
the jobs that ask for the same share an array, so a 60M job does not ask for a 1B job's memory.
It writes <out-dir>/<name>/slurm/{<array>.sbatch, <array>.jobs, logs/} (<array>: NAME, or NAME-1,
NAME-2, ... for several) and submits each with sbatch; array task i runs line i+1 of its jobs
file through srun + the launcher on every node of its allocation (reproduce/launch.py: preemption
and time limits save a checkpoint and requeue, see docs/slurm.md; give --time, which that
depends on). Local mode runs the jobs one after another on this machine. A dry run also prints
the grid's estimated GPU-hours."""


def _run_epilog() -> str:
    lines = ["experiments (python -m reproduce list for more):"]
    for key, entry in paper.runnable().items():
        lines.append(f"  {key:<12} {entry['paper']}: {entry['what']}")
    return "\n".join(lines)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    from reproduce.jobs import Variant

    grid = parser.add_argument_group("the grid")
    grid.add_argument("experiment", nargs="?", type=_experiment_type("runnable experiment", paper.runnable),
                      metavar="EXPERIMENT", help="a paper table or figure's grid: 1, 3, 6, 7, ..., figure1, "
                      "lr_search, ... (table7 is 7); see below")
    grid.add_argument("--name", help="sweep name: wandb group, output subdirectory (default: the experiment's, "
                      "e.g. table1, or 'sweep')")
    grid.add_argument("--models", type=comma_list(str), help="model sizes, e.g. llama_60m,llama_130m")
    grid.add_argument("--methods", type=comma_list(Variant.parse),
                      help="method overlays of configs/paper/methods/, METHOD+mols for MoLS, e.g. adam,adam+mols")
    grid.add_argument("--mols", choices=["off", "on", "both"], default=None,
                      help="MoLS for every listed method: off, on, or both variants (default: as listed)")
    grid.add_argument("--lrs", type=parse_lrs, help="'paper' (learning_rates.yaml), 'grid' (the paper's search "
                      "grid) or a list, e.g. 1e-3,2.5e-3")
    grid.add_argument("--seeds", type=comma_list(int), help="training seeds, e.g. 0,1,2")
    grid.add_argument("--base", type=Path, default=None, help="first config of every job (default: the "
                      "experiment's, configs/paper/base.yaml or finetune/base.yaml)")
    grid.add_argument("--config", action="append", default=[], help="extra config layered last (repeatable)")
    grid.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override for every job")
    grid.add_argument("--out-dir", help="runs go to OUT_DIR/NAME/RUN_NAME (default: runs/paper for an EXPERIMENT, "
                      "runs/sweeps for a grid of --models and --methods)")
    grid.add_argument("--wandb-project", help="wandb project (default: base config's)")

    run = parser.add_argument_group("where to run")
    run.add_argument("--mode", choices=["slurm", "local"], default="slurm")
    run.add_argument("--dry-run", action="store_true", help="print what would be written, submitted or run; do nothing")
    run.add_argument("--python", default=sys.executable, help="python of the environment the jobs use")
    run.add_argument("--nproc-per-node", type=int, help="processes per node (default: GPUs per node; 1 locally)")
    run.add_argument("--nodes", type=int, help="nodes per job (Slurm)")
    run.add_argument("--gpus-per-node", type=int, help="GPUs per node (Slurm; 0 for CPU nodes; default: the experiment's, else 8)")
    run.add_argument("--cpus-per-task", type=int, help="CPUs of the one task per node (default: from the config, "
                     "(data.num_workers + 2) per rank)")
    run.add_argument("--mem", help="memory per node, e.g. 200G (default: from the config, "
                     f"{BASE_MEM_PER_RANK_GIB}G per rank plus 8 bytes per parameter per rank for MoLS on the CPU)")
    run.add_argument("--time", help="time limit per job, e.g. 48:00:00 (jobs save and requeue themselves before it; "
                     "without it the partition's default applies, and the run says so)")
    run.add_argument("--partition")
    run.add_argument("--max-parallel", type=int, help="run at most this many tasks of each array at once")
    run.add_argument("--sbatch-arg", action="append", default=[], help="extra sbatch option, e.g. --account=abc")
    run.add_argument("--assume-mfu", type=float, default=DEFAULT_MFU,
                     help="model FLOPs utilisation for the dry run's GPU-hours estimate (default: %(default)s)")
    run.add_argument("--gpu-peak-tflops", type=float, default=DEFAULT_GPU_PEAK_TFLOPS,
                     help="peak TFLOP/s of one GPU for the estimate (default: H100 dense bf16, %(default)s)")


def resolve_grid(args, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Fill the grid from the experiment's preset where the options leave it open."""
    from reproduce.jobs import Variant, runnable_variants

    if not 0 < args.assume_mfu <= 1 or args.gpu_peak_tflops <= 0:
        parser.error("--assume-mfu must be in (0, 1] and --gpu-peak-tflops positive")
    grid = paper.preset(args.experiment) if args.experiment else None
    args.name = args.name or (grid.name if grid else "sweep")
    args.out_dir = args.out_dir or ("runs/paper" if grid else "runs/sweeps")
    args.models = args.models or (grid.models if grid else None)
    args.methods = args.methods or (runnable_variants(grid.rows) if grid else None)
    args.config = [*(grid.configs if grid else []), *args.config]
    args.lrs = args.lrs or (grid.lrs if grid else "paper")
    args.seeds = args.seeds if args.seeds is not None else (grid.seeds if grid else [0])
    args.nodes = args.nodes or (grid.nodes if grid else 1)
    if args.gpus_per_node is None:
        args.gpus_per_node = grid.gpus_per_node if grid else 8
    args.base = args.base or (grid.base if grid else paper.BASE_CONFIG)
    args.models_dir = grid.models_dir if grid else paper.PAPER / "models"
    if not args.models or not args.methods:
        parser.error("name an EXPERIMENT, or give --models and --methods")
    if args.mols:
        methods = list(dict.fromkeys(v.method for v in args.methods))
        choices = {"off": [False], "on": [True], "both": [False, True]}[args.mols]
        args.methods = [Variant(m, on) for m in methods for on in choices]
    return args


def cmd_run(args) -> int:
    from reproduce import cost, launch
    from reproduce.jobs import build_jobs, check_jobs

    args = resolve_grid(args, args.parser)
    if args.mode == "slurm" and not args.dry_run and launch.sbatch_missing():  # before anything is written
        print(f"error: {launch.SBATCH_MISSING}", file=sys.stderr)
        return 2
    try:
        jobs = build_jobs(name=args.name, models=args.models, variants=args.methods, lrs=args.lrs,
                          seeds=args.seeds, out_dir=args.out_dir, base=args.base, extra_configs=args.config,
                          extra_overrides=args.set, wandb_project=args.wandb_project, models_dir=args.models_dir)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    slurm = launch.SlurmSettings(nodes=args.nodes, gpus_per_node=args.gpus_per_node, nproc_per_node=args.nproc_per_node,
                                 cpus_per_task=args.cpus_per_task, mem=args.mem, time=args.time,
                                 partition=args.partition, max_parallel=args.max_parallel, extra=args.sbatch_arg)
    world_size = slurm.nodes * slurm.processes_per_node if args.mode == "slurm" else (args.nproc_per_node or 1)
    problems = check_jobs(jobs, world_size)
    if problems:
        print(f"error: {len(problems)} problem(s) in the grid:\n" + "\n".join(f"  - {p}" for p in problems),
              file=sys.stderr)
        if any("world size" in p for p in problems):
            print("  (a world-size problem: change --nodes/--gpus-per-node or --set train.micro_batch=...)",
                  file=sys.stderr)
        return 2
    print(f"[sweep] {args.name}: {len(jobs)} jobs over {len(args.models)} model(s), {len(args.methods)} method(s), "
          f"{len({j.lr for j in jobs})} learning rate(s), {len(args.seeds)} seed(s); runs in {args.out_dir}/{args.name}/")
    costs = cost.job_costs(jobs, world_size) if args.dry_run or args.mode == "slurm" else []
    if args.dry_run:
        print(cost.estimate_line(jobs, costs, args.assume_mfu, args.gpu_peak_tflops))

    if args.mode == "local":
        nproc = args.nproc_per_node or 1
        if args.dry_run:
            for job in jobs:
                print(shlex.join(launch.local_command(job, nproc, args.python)))
            return 0
        return launch.run_local(jobs, nproc, args.python)
    return submit_arrays(args, jobs, costs, slurm)


def submit_arrays(args, jobs: list, costs: list, slurm) -> int:
    """Slurm mode: one job array per resource request (each job's CPUs and memory from its own
    config unless the flags give them), written and submitted, or printed by a dry run."""
    from reproduce import cost, launch

    requests = []
    for job_cost in costs:
        cpus, mem = cost.slurm_resources(job_cost, slurm.processes_per_node)
        requests.append(replace(slurm, cpus_per_task=cpus if slurm.cpus_per_task is None else slurm.cpus_per_task,
                                mem=slurm.mem or mem))
    arrays = launch.job_arrays(args.name, jobs, requests)
    if not slurm.has_time_limit:
        print(launch.NO_TIME_LIMIT.format(lead=slurm.requeue_signal_seconds), file=sys.stderr)
    print(f"[sweep] {len(arrays)} job array(s), one per resource request:")
    for array in arrays:
        print(f"[sweep]   {array.name}: {len(array.jobs)} job{'s' if len(array.jobs) != 1 else ''}, {array.request()}")

    sweep_dir = paper.REPO / args.out_dir / args.name / "slurm"
    if args.dry_run:
        for array in arrays:
            jobs_file = sweep_dir / f"{array.name}.jobs"
            print(f"\n[sweep] dry run: would write {jobs_file} ({len(array.jobs)} lines):")
            for job in array.jobs:
                print(job.command_line())
            print(f"[sweep] and {sweep_dir / (array.name + '.sbatch')}, then run: sbatch --parsable <that file>\n")
            print(launch.render_sbatch(name=array.name, jobs_file=jobs_file, log_dir=sweep_dir / "logs",
                                       job_count=len(array.jobs), slurm=array.slurm, python=args.python))
        return 0
    submitted = []
    for array in arrays:
        script, jobs_file = launch.write_slurm_files(array.jobs, array.name, sweep_dir, array.slurm, args.python)
        print(f"[sweep] wrote {jobs_file} and {script}")
        status, answer = launch.submit(script)
        if status:
            done = f" (submitted before it: {', '.join(submitted)})" if submitted else ""
            print(f"error: sbatch failed for {array.name} ({status}): {answer}{done}", file=sys.stderr)
            return 1
        submitted.append(answer)
        print(f"[sweep] submitted job array {answer} ({len(array.jobs)} tasks) for {array.name}")
    print(f"[sweep] logs in {sweep_dir / 'logs'}")
    print(f"[sweep] watch: squeue -j {','.join(submitted)}; results: python -m reproduce results "
          f"{args.out_dir}/{args.name}")
    return 0


# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------

RESULTS_HELP = """Tables and curves from run directories, with the paper's numbers beside ours.

    python -m reproduce results runs/paper/table1 --table 1                   # Markdown, paper layout
    python -m reproduce results runs/paper/table1 --table 1 --format latex
    python -m reproduce results runs/paper/table3 --table 3 --plot table3.png # + validation-PPL curves
    python -m reproduce results runs/paper/lr_search                          # every (model, method, lr) group
    python -m reproduce results runs/paper/table7 --table 7                   # also 12, 13, 14, figure1-7
    python -m reproduce results runs/evidence --baseline adamw                # each method against AdamW

A run directory is any directory under the given roots holding config.yaml and metrics.jsonl
(summary.json once it finished), as train.py writes them. Runs are grouped by (model, method,
MoLS, learning rate) and every other setting of their resolved config that changes training
(training.config.training_settings: run name, seed, output directory, resume, wandb and logging
cadence aside), so ablation runs never merge; a table row takes the runs whose settings match the
row's composed config in the keys where the table's rows differ (Table 7's grouping and reference,
Table 12's samples, ...). Each cell is the mean ± sample standard deviation over the seeds of a
group, followed by (paper value, our mean - paper); where the runs also evaluated under the paper
harness's protocol (train.eval_harness, as the paper configs set it) a model has three columns:
the paper's value, ours, and ours under the harness's protocol with Δ = harness - paper, the
comparable difference (docs/evaluation.md). When a cell was run at several learning rates
(a search), the lowest-perplexity one is shown (--lr paper: the paper's rate); the notes under the
table say which rate and seeds each cell uses. Table 1, 6, 12, 14 cells are final validation PPL
(summary.json; Table 12 adds the estimate's minutes); Tables 7 and Figure 3 final validation
loss; Table 3 cells the validation PPL logged at each step of the table; Table 13 the alphas of
the first MoLS calibration."""


def _table_option(parser: argparse.ArgumentParser, **kwargs) -> None:
    parser.add_argument("--table", type=_experiment_type("table", paper.tables), metavar="TABLE",
                        help=kwargs.pop("help") + f" (one of {', '.join(paper.tables())}; table7 is 7)", **kwargs)


def _lr_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lr", dest="lr_choice", choices=["best", "paper"], default="best",
                        help="per cell: the best learning rate run (default) or the paper's")


def _runs(roots: list[Path]):
    """The runs under the roots and 0; None and exit status 2 (the error printed) where there are none."""
    from reproduce.runs import find_runs

    missing = [str(root) for root in roots if not root.is_dir()]
    if missing:
        print(f"error: not a directory: {', '.join(missing)}", file=sys.stderr)
        return None, 2
    runs = find_runs(roots)
    if not runs:
        print(f"error: no run directories (config.yaml + metrics.jsonl) under {', '.join(map(str, roots))}",
              file=sys.stderr)
        return None, 2
    return runs, 0


def _groups(roots: list[Path]):
    """The runs under the roots, grouped; None (with the error printed) where there are none."""
    from reproduce.runs import group_runs

    runs, status = _runs(roots)
    if runs is None:
        return None, status
    groups = group_runs(runs)
    unfinished = sum(r.final_ppl is None for r in runs)
    print(f"{len(runs)} runs ({unfinished} unfinished) in {len(groups)} groups", file=sys.stderr)
    return groups, 0


def cmd_results(args) -> int:
    from reproduce import plots, tables

    parser = args.parser
    if args.baseline:
        if args.table or args.mols_effect:
            parser.error("--baseline compares arms of any runs: leave out --table and --mols-effect")
        if args.format == "latex":
            parser.error("--baseline prints text or Markdown (--format text|markdown)")
        if args.margin is not None and not args.margin > 0:
            parser.error("--margin must be a positive loss difference (nats)")
        return _evidence(args)
    used = [flag for flag, value in (("--method", args.method), ("--margin", args.margin),
                                     ("--target", args.target)) if value is not None]
    if used:
        parser.error(f"{', '.join(used)} only with --baseline")
    if args.format == "text":
        parser.error("--format text is the --baseline report's (tables: markdown or latex)")
    groups, status = _groups(args.roots)
    if groups is None:
        return status
    if args.table:
        table = tables.build_table(args.table, groups, args.lr_choice)
        print(tables.render_latex(table) if args.format == "latex" else tables.render_markdown(table))
    elif args.mols_effect:
        print(tables.render_mols_effect(groups))
    else:
        print(tables.render_groups(groups))
    if args.plot:
        plots.plot_curves(groups, args.plot, args.table, args.lr_choice)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _evidence(args) -> int:
    """results --baseline: methods against a baseline (reproduce/evidence.py)."""
    from reproduce import evidence, plots

    runs, status = _runs(args.roots)
    if runs is None:
        return status
    try:
        report = evidence.build_report(runs, args.baseline, args.method, args.margin, args.target)
    except evidence.EvidenceError as err:
        print(err.report(), file=sys.stderr)
        return 2
    unfinished = sum(r.final_loss is None for r in runs)
    print(f"{len(runs)} runs ({unfinished} unfinished) in {len(report.arms)} arms", file=sys.stderr)
    print(evidence.render(report, args.format or "text"))
    if args.plot:
        plots.plot_arms(report.arms, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------
# plot
# ------------------------------------------------------------------------------------------------

PLOT_HELP = """Pictures from run directories (reproduce/plots.py):

    python -m reproduce plot curves RUNS_ROOT... --out curves.png [--table 1]   # validation PPL
    python -m reproduce plot snr RUN_DIR... [--out snr.png]                     # Figures 1 and 7
    python -m reproduce plot alphas RUN_DIR... [--snr]                          # Table 13 (Markdown)
    python -m reproduce plot ablation RUNS_ROOT... --table 7|12|figure3 [--out plot.png]"""


def cmd_plot_curves(args) -> int:
    from reproduce import plots

    groups, status = _groups(args.roots)
    if groups is None:
        return status
    plots.plot_curves(groups, args.out, args.table, args.lr_choice)
    print(f"wrote {args.out}")
    return 0


def cmd_plot_snr(args) -> int:
    from reproduce import plots

    try:
        plots.plot_snr(args.runs, args.out, args.include_other)
    except plots.PlotError as err:
        print(err, file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


def cmd_plot_alphas(args) -> int:
    from reproduce import plots

    try:
        print(plots.alpha_table(args.runs, args.snr))
    except plots.PlotError as err:
        print(err, file=sys.stderr)
        return 2
    return 0


def cmd_plot_ablation(args) -> int:
    from reproduce import plots
    from reproduce.runs import group_runs

    runs, status = _runs(args.roots)
    if runs is None:
        return status
    out = args.out or Path(f"{args.table}.png")
    plots.plot_ablation(group_runs(runs), args.table, out, args.lr_choice)
    print(f"wrote {out}")
    return 0


# ------------------------------------------------------------------------------------------------
# The parser
# ------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reproduce", description=__doc__, formatter_class=RAW)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    listing = commands.add_parser("list", help="every table and figure, its command", description=LIST_HELP,
                                  formatter_class=RAW)
    listing.add_argument("--markdown", action="store_true", help="docs/paper_coverage.md's table, as Markdown")
    listing.add_argument("--update-doc", action="store_true", help="write that table into docs/paper_coverage.md")
    listing.set_defaults(handler=cmd_list)

    run = commands.add_parser("run", help="run a table's or figure's grid (Slurm or local), or any grid",
                              description=RUN_HELP, epilog=_run_epilog(), formatter_class=RAW)
    add_run_arguments(run)
    run.set_defaults(handler=cmd_run, parser=run)

    results = commands.add_parser("results", help="tables from run directories, the paper's numbers beside ours",
                                  description=RESULTS_HELP, formatter_class=RAW)
    results.add_argument("roots", nargs="+", type=Path, help="directories searched for run directories")
    _table_option(results, help="print this paper table or figure's numbers (default: every group)")
    results.add_argument("--format", choices=["markdown", "latex", "text"], default=None,
                         help="of the --table output: markdown (default) or latex; of the --baseline report: "
                         "text (default) or markdown (the group listing is Markdown)")
    _lr_option(results)
    results.add_argument("--mols-effect", action="store_true",
                         help="each method with and without MoLS side by side, with optimizer state memory")
    results.add_argument("--plot", type=Path, help="write validation-perplexity curves to this PNG")
    evidence = results.add_argument_group(
        "a method against a baseline",
        "Arms are runs of one setting over learning rates and seeds; each method arm is compared with\n"
        "the baseline arm that ran in the same setting (reproduce/evidence.py). A FILTER is comma-separated\n"
        "terms that all hold: a method name (adam, adamw, adamw+mols) or KEY=VALUE of any setting\n"
        "(train.precision=bf16-pure, mols.min_alpha=null).")
    evidence.add_argument("--baseline", metavar="FILTER",
                          help="the baseline arms: final-loss differences with 95%% intervals and a paired or Welch "
                          "t-test, the seeds a margin needs, the data-equivalent speed-up from the baseline's runs at "
                          "several train.steps, steps to a target loss, and every arm's learning-rate grid")
    evidence.add_argument("--method", metavar="FILTER", help="compare only these arms (default: every other arm)")
    evidence.add_argument("--margin", type=float, metavar="NATS",
                          help="the loss difference the seeds-needed count is for (default: the observed one)")
    evidence.add_argument("--target", type=float, metavar="LOSS",
                          help="the loss of the steps-to-target column (default: the higher of the two final losses)")
    results.set_defaults(handler=cmd_results, parser=results)

    plot = commands.add_parser("plot", help="curves, module SNRs, the alphas, ablation bars", description=PLOT_HELP,
                               formatter_class=RAW)
    kinds = plot.add_subparsers(dest="kind", metavar="KIND", required=True)

    curves = kinds.add_parser("curves", help="validation perplexity over training",
                              description="Validation perplexity over training, one panel per model: a paper "
                              "table's rows with the paper's numbers as crosses (--table), or every group (one "
                              "colour per method, dashed with MoLS, the best learning rate of each).")
    curves.add_argument("roots", nargs="+", type=Path, help="directories searched for run directories")
    curves.add_argument("--out", type=Path, required=True, help="PNG to write")
    _table_option(curves, help="the rows of this paper table or figure")
    _lr_option(curves)
    curves.set_defaults(handler=cmd_plot_curves)

    snr = kinds.add_parser("snr", help="module SNR over training (Figures 1, 7)",
                           description="Module SNR over training (the paper's Figures 1 and 7) from runs with "
                           "`mols.track_every > 0`: one panel per run, one line per module class, log scale; "
                           "calibration points (the SNRs that set the alphas) marked. Reads only metrics.jsonl.")
    snr.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    snr.add_argument("--out", type=Path, default=Path("snr.png"), help="PNG to write (default: %(default)s)")
    snr.add_argument("--include-other", action="store_true", help="also draw the unscaled 'other' class")
    snr.set_defaults(handler=cmd_plot_snr)

    alphas = kinds.add_parser("alphas", help="the MoLS multipliers of runs side by side (Table 13)",
                              description="The MoLS multipliers of several runs side by side (the paper's Table "
                              "13: alphas across sizes), as Markdown: each run's mols.json (written at "
                              "calibration) and config.yaml; one column per run, labelled with its model size.")
    alphas.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    alphas.add_argument("--snr", action="store_true", help="print the module SNRs instead of the alphas")
    alphas.set_defaults(handler=cmd_plot_alphas)

    ablation = kinds.add_parser("ablation", help="ours beside the paper's, one bar per row (Tables 7, 12, Figure 3)",
                                description="Bars of one row per setting, ours beside the paper's: Table 7 "
                                "(groupings, final loss), Table 12 (estimation samples: final PPL and the "
                                "estimate's minutes), Figure 3 (hand-tuned module learning rates vs MoLS, final "
                                "loss; the paper's best hand-tuned value as a line).")
    ablation.add_argument("roots", nargs="+", type=Path, metavar="RUNS_ROOT")
    ablation.add_argument("--table", choices=ABLATION_TABLES, required=True)
    ablation.add_argument("--out", type=Path, default=None, help="PNG to write (default: <table>.png)")
    _lr_option(ablation)
    ablation.set_defaults(handler=cmd_plot_ablation)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)
