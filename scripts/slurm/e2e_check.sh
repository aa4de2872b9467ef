#!/usr/bin/env bash
# End-to-end check of `python -m reproduce run`'s Slurm mode on the local cluster (local_cluster.sh): a tiny
# 2-job grid (Adam and Adam+MoLS on llama_tiny, 30 steps, a checkpoint every 10), where the first
# job is requeued (`scontrol requeue`) after its first checkpoint and must resume from it.
#
#   scripts/slurm/local_cluster.sh && scripts/slurm/e2e_check.sh [OUT_DIR]
#
# Takes ~4 minutes on 2 CPU cores (Slurm holds a requeued job back ~2 minutes before restarting
# it). Exits non-zero if a job fails, the requeued job did not resume, or a summary is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT_DIR=${1:-/tmp/mols-slurm-e2e}
NAME=e2e
PYTHON=${PYTHON:-.venv/bin/python}
say() { printf '[e2e] %s\n' "$*"; }
fail() { printf '[e2e] FAILED: %s\n' "$*" >&2; exit 1; }

rm -rf "${OUT_DIR:?}/$NAME"
submit_log=$("$PYTHON" -m reproduce run --name "$NAME" --base configs/quickstart.yaml \
    --models llama_tiny --methods adam,adam+mols --lrs 2.5e-3 --seeds 0 \
    --set train.steps=30 --set train.eval_every=10 --set train.checkpoint_every=10 \
    --set data.val_tokens=20000 --set mols.samples=256 --set train.threads=1 --set run.wandb.mode=disabled \
    --out-dir "$OUT_DIR" --mode slurm --gpus-per-node 0 --nproc-per-node 1 --cpus-per-task 1 --mem 4G)
echo "$submit_log"
array_id=$(sed -n 's/.*submitted job array \([0-9]*\) .*/\1/p' <<<"$submit_log")
[[ -n $array_id ]] || fail "no job array id in the sweep output"

first_run="$OUT_DIR/$NAME/llama_tiny-adam-lr2.5e-03-s0"
say "waiting for the first checkpoint of ${array_id}_0 ($first_run)"
for _ in $(seq 300); do
    [[ -e $first_run/checkpoints/step_0000010.pt ]] && break
    sleep 1
done
[[ -e $first_run/checkpoints/step_0000010.pt ]] || fail "no checkpoint after 5 minutes"
[[ -e $first_run/summary.json ]] && fail "the job finished before it could be requeued"
say "$(date -Is) checkpoint step_0000010.pt written; scontrol requeue ${array_id}_0"
scontrol requeue "${array_id}_0"
squeue -j "$array_id" -o "%.10i %.9T %.12r %.20S"

say "waiting for both jobs to finish"
for _ in $(seq 600); do
    [[ -z $(squeue -h -j "$array_id" 2>/dev/null) ]] && break
    sleep 2
done
[[ -z $(squeue -h -j "$array_id" 2>/dev/null) ]] && say "array $array_id done" || fail "jobs still queued after 20 minutes"

logs="$OUT_DIR/$NAME/slurm/logs"
first_log="$logs/mols-${NAME}_${array_id}_0.out"
say "requeued job's log ($first_log):"
grep -E '^\[sweep\]|run directory|^step [0-9]+:|^done' "$first_log" | cut -c1-160
grep -q 'restart 1' "$first_log" || fail "the job did not restart"
grep -q 'resuming from step_0000010.pt' "$first_log" || fail "the restarted job did not resume from its checkpoint"
for run in "$OUT_DIR/$NAME"/llama_tiny-*; do
    [[ -s $run/summary.json ]] || fail "no summary.json in $run"
    say "$(basename "$run"): final_val_ppl $("$PYTHON" -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["final_val_ppl"], 2))' "$run/summary.json")"
done
"$PYTHON" -m reproduce results "$OUT_DIR/$NAME" --plot "$OUT_DIR/$NAME/curves.png"
say "OK: both jobs finished; the requeued job resumed from step 10"
