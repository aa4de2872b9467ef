"""The paper's experiments: every table and figure as data, and one command line to run and read them.

    python -m reproduce list                          # every table and figure, its command
    python -m reproduce run 1 --dry-run               # Table 1's jobs, sbatch script and GPU-hours
    python -m reproduce results runs/paper/table1 --table 1
    python -m reproduce plot snr|alphas|ablation|curves ...

Modules, by concern:

    paper     the paper's data, one loader: configs/paper/experiments.yaml (every table and figure:
              description, grid, the paper's numbers) and learning_rates.yaml (Tables 8/9)
    jobs      the grid: rows x models x learning rates x seeds -> train.py command lines
    cost      GPU-hours, host CPUs and memory of a job (FLOPs from models/cost.py)
    launch    Slurm job arrays (the sbatch script) and local runs
    runs      reading run directories, grouping them by what they trained
    tables    the paper's tables filled with our numbers (Markdown, LaTeX), group listings
    plots     curves, module SNRs, the alphas, ablation bars
    coverage  docs/paper_coverage.md's table, generated from the data
    cli       the command line (`python -m reproduce`)

It sits on top of the project: it imports configs, data, models, mols, optimizers and training;
nothing imports it.
"""
