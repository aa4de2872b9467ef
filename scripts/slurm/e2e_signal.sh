#!/usr/bin/env bash
# End-to-end check of preemption on the local cluster (local_cluster.sh): a one-job sweep with no
# periodic checkpoints (train.checkpoint_every=0) is signalled mid-run the way Slurm warns a job
# before its time limit (--signal=B:USR1@N sends USR1 to the batch shell; here
# `scancel --signal=USR1 --batch`). The batch shell must pass the signal on to the training
# processes, which save a checkpoint at the step they are at and exit; then it requeues the job,
# which resumes from that step and must end at exactly the validation loss of an uninterrupted
# run of the same config (run here with train.py alongside, outside Slurm).
#
#   scripts/slurm/local_cluster.sh && scripts/slurm/e2e_signal.sh [OUT_DIR]
#
# Takes ~4 minutes on 2 CPU cores (Slurm holds a requeued job back ~2 minutes before restarting
# it). Exits non-zero on any failed check; prints the signalled and resumed steps and both losses.
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT_DIR=${1:-/tmp/mols-slurm-signal}
NAME=signal
PYTHON=${PYTHON:-.venv/bin/python}
STEPS=${STEPS:-40}
SIGNAL_AFTER=${SIGNAL_AFTER:-12}   # signal once this many steps are logged
say() { printf '[e2e_signal] %s\n' "$*"; }
fail() { printf '[e2e_signal] FAILED: %s\n' "$*" >&2; exit 1; }
last_train_step() {  # the step of the last "train" record in a metrics.jsonl (0 if none)
    "$PYTHON" - "$1" <<'EOF'
import json, sys
steps = [0]
try:
    for line in open(sys.argv[1]):
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line being written
        if record.get("kind") == "train":
            steps.append(record["step"])
except FileNotFoundError:
    pass
print(steps[-1])
EOF
}
started=$(date +%s)

rm -rf "${OUT_DIR:?}/$NAME" "$OUT_DIR/reference"
submit_log=$("$PYTHON" -m reproduce run --name "$NAME" --base configs/quickstart.yaml \
    --models llama_tiny --methods adam+mols --lrs 2.5e-3 --seeds 0 \
    --set train.steps="$STEPS" --set train.eval_every="$STEPS" --set train.checkpoint_every=0 \
    --set train.log_every=1 --set data.val_tokens=20000 --set mols.samples=256 --set train.threads=1 \
    --set run.wandb.mode=disabled \
    --out-dir "$OUT_DIR" --mode slurm --gpus-per-node 0 --nproc-per-node 1 --cpus-per-task 1 --mem 4G)
echo "$submit_log"
array_id=$(sed -n 's/.*submitted job array \([0-9]*\) .*/\1/p' <<<"$submit_log")
[[ -n $array_id ]] || fail "no job array id in the sweep output"
run="$OUT_DIR/$NAME/llama_tiny-adam-mols-lr2.5e-03-s0"
log="$OUT_DIR/$NAME/slurm/logs/mols-${NAME}_${array_id}_0.out"

# The uninterrupted run: the job's own jobs-file line (same configs and overrides), another directory.
eval "job_argv=($(sed -n 1p "$OUT_DIR/$NAME/slurm/$NAME.jobs"))"
say "uninterrupted reference run: $PYTHON train.py <jobs-file line 1> --set run.out_dir=$OUT_DIR --set run.name=reference"
"$PYTHON" train.py "${job_argv[@]}" --set run.out_dir="$OUT_DIR" --set run.name=reference \
    >"$OUT_DIR/reference.log" 2>&1 &
reference_pid=$!

say "waiting for ${array_id}_0 to log step $SIGNAL_AFTER ($run)"
for _ in $(seq 600); do
    (( $(last_train_step "$run/metrics.jsonl") >= SIGNAL_AFTER )) && break
    sleep 0.5
done
before=$(last_train_step "$run/metrics.jsonl")
(( before >= SIGNAL_AFTER )) || fail "the job did not reach step $SIGNAL_AFTER in 5 minutes"
(( before < STEPS )) || fail "the job finished before it could be signalled"
signalled_at=$(date +%s)
say "$(date -Is) last logged step $before; scancel --signal=USR1 --batch ${array_id}_0"
scancel --signal=USR1 --batch "${array_id}_0" && scancel_status=0 || scancel_status=$?
say "scancel exit code $scancel_status"

say "waiting for the job to stop, be requeued and finish"
requeued_at=""
for _ in $(seq 900); do
    state=$(squeue -h -j "$array_id" -o %T 2>/dev/null || true)
    [[ -z $requeued_at && -n $state && $state != RUNNING && $state != COMPLETING ]] && {
        requeued_at=$(date +%s); say "$(date -Is) job state $state"; squeue -j "$array_id" -o "%.12i %.9T %.12r %.20S"; }
    [[ -z $state ]] && break
    sleep 1
done
[[ -z $(squeue -h -j "$array_id" 2>/dev/null) ]] || fail "the job is still queued after 15 minutes"
finished_at=$(date +%s)
wait "$reference_pid" && reference_status=0 || reference_status=$?
say "reference run exited with status $reference_status"
(( reference_status == 0 )) || { tail -n 20 "$OUT_DIR/reference.log"; fail "the reference run failed"; }

say "the job's log ($log):"
grep -E '^\[sweep\]|run directory|stopped by|^done|rror' "$log" | cut -c1-200
stopped=$("$PYTHON" -c '
import json, sys
stops = [json.loads(l) for l in open(sys.argv[1]) if "\"stopped\"" in l]
print(" ".join("%d:%s" % (r["step"], r["signal"]) for r in stops))' "$run/metrics.jsonl")
say "stopped records in metrics.jsonl: ${stopped:-none}"
[[ $stopped =~ ^[0-9]+:SIGTERM$ ]] || fail "expected exactly one \"stopped\" record (SIGTERM)"
stop_step=${stopped%%:*}
(( stop_step >= before && stop_step <= before + 2 )) \
    || fail "stopped at step $stop_step, not within 2 steps of the last logged step $before"
checkpoint=$(printf 'step_%07d.pt' "$stop_step")
say "signalled after step $before; stopped and saved $checkpoint"
grep -q 'restart 1' "$log" || fail "the job was not requeued"
grep -q "resuming from $checkpoint" "$log" || fail "the requeued job did not resume from $checkpoint"
grep -q 'training exited with status 0' "$log" || fail "the requeued job did not finish"
losses=$("$PYTHON" -c '
import json, sys
a, b = (json.load(open(p))["final_val_loss"] for p in sys.argv[1:])
print(repr(a), repr(b), "equal" if a == b else "DIFFERENT")' "$run/summary.json" "$OUT_DIR/reference/summary.json")
say "final_val_loss: signalled+requeued job, uninterrupted run: $losses"
[[ $losses == *" equal" ]] || fail "the resumed run does not match the uninterrupted one"
say "times: signal at +$((signalled_at - started)) s, out of the running state at +$((${requeued_at:-$finished_at} - started)) s," \
    "all done at +$((finished_at - started)) s"
say "OK: signalled after step $before, saved $checkpoint, requeued, resumed from it, same final loss"
