#!/usr/bin/env python3
"""How much of a training step waits for data, without and with the prefetching thread
(data.prefetch, data/prefetch.py), on a source slow enough to matter.

    python scripts/bench_prefetch.py [--delay-ms 150] [--steps 40] [--threads 2]

The quickstart config (llama_tiny on the embedded corpus, micro-batches of 16 x 128 tokens, 2 per
update) run by train.py in this process, twice: data.prefetch=0 (each micro-batch packed when the
loop asks for it) and data.prefetch=2. The source is made slow by a fixed wait of --delay-ms before
each micro-batch is handed out (standing for a network filesystem or on-the-fly tokenizing in the
rank's process: a wait that releases the CPU, as I/O does). Reported from train.py's own records:
step_s, data_wait_s and their ratio, over the run's train records after the first.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
    import _repo_root  # noqa: F401
except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
    pass

import os

os.environ.setdefault("WANDB_MODE", "disabled")

ROOT = Path(__file__).resolve().parents[1]


def slow_source(delay_s: float):
    """TrainStream's batches, each after `delay_s` of waiting."""
    from data import stream

    original = stream.TrainStream._batches

    def batches(self, start, taken):
        for item in original(self, start, taken):
            time.sleep(delay_s)
            yield item
    stream.TrainStream._batches = batches
    return lambda: setattr(stream.TrainStream, "_batches", original)


def run(out: Path, prefetch: int, steps: int, threads: int) -> dict:
    import train
    from training.records import read_metrics

    name = f"prefetch{prefetch}"
    overrides = [f"run.out_dir={out}", f"run.name={name}", f"data.prefetch={prefetch}", f"train.steps={steps}",
                 "train.eval_every=100000", "train.log_every=5", "train.checkpoint_every=0", f"train.threads={threads}",
                 "data.val_tokens=2000"]
    args = ["--config", str(ROOT / "configs" / "quickstart.yaml")]
    for item in overrides:
        args += ["--set", item]
    assert train.main(args) == 0
    records = [r for r in read_metrics(out / name / "metrics.jsonl") if r["kind"] == "train"][1:]
    step = sum(r["step_s"] for r in records) / len(records)
    wait = sum(r["data_wait_s"] for r in records) / len(records)
    return {"prefetch": prefetch, "step_s": step, "data_wait_s": wait, "wait_share": wait / step}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay-ms", type=float, default=150.0)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    restore = slow_source(args.delay_ms / 1000)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results = [run(Path(tmp), prefetch, args.steps, args.threads) for prefetch in (0, 2)]
    finally:
        restore()
    print(f"\nsource delay {args.delay_ms:.0f} ms per micro-batch, 2 micro-batches per update, {args.steps} updates")
    print(f"{'data.prefetch':>14}{'step_s':>10}{'data_wait_s':>13}{'wait share':>12}")
    for r in results:
        print(f"{r['prefetch']:>14}{r['step_s']:>10.3f}{r['data_wait_s']:>13.3f}{100 * r['wait_share']:>11.1f}%")
    if args.json:
        args.json.write_text(json.dumps({"delay_ms": args.delay_ms, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
