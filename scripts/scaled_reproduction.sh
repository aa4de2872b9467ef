#!/usr/bin/env bash
# The scaled-down reproduction of Table 1 on 2 CPU cores (~70 minutes): the tiny LLaMA of
# configs/scaled.yaml on the embedded corpus; every Table 1 method with and without MoLS at the
# paper's LLaMA-60M learning rate (Table 8/9), seeds 0-2; a learning-rate search for Adam and
# Adam+MoLS; 8-bit Adam, Lion and Adafactor (+MoLS) with one seed. Then the table and curves.
#
#   scripts/scaled_reproduction.sh [OUT_DIR]     # default runs/scaled; rerunning skips finished runs
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-runs}
PYTHON=${PYTHON:-.venv/bin/python}
sweep() {
    # mols_floor.yaml after --mols's mols.yaml (the paper's rule): the floor scaled.yaml sets
    "$PYTHON" -m reproduce run --name scaled --base configs/scaled.yaml --models llama_tiny --mols both \
        --out-dir "$OUT_DIR" --mode local --set run.wandb.mode=disabled \
        --config configs/paper/mols_floor.yaml \
        --set mols.samples=256 --set mols.micro_batch=8 "$@"  # mols.yaml says 2048: too many here
}
# Adam and Adam+MoLS: a small search over the paper's grid, then 3 seeds at two rates
sweep --methods adam --lrs 1e-3,1e-2 --seeds 0
sweep --methods adam --lrs 2.5e-3,5e-3 --seeds 0,1,2
# the other Table 1 methods at the paper's LLaMA-60M rates
sweep --methods nadam,muon,adam_mini --lrs 5e-3 --seeds 0,1,2
sweep --methods lamb,galore,apollo --lrs 1e-2 --seeds 0,1,2
# the extra baselines (Table 3's 8-bit Adam, Table 14's Lion and Adafactor), one seed
sweep --methods adam8bit,adafactor --lrs 5e-3 --seeds 0
sweep --methods lion --lrs 5e-4 --seeds 0
"$PYTHON" -m reproduce results "$OUT_DIR/scaled" --plot "$OUT_DIR/scaled/curves.png"
