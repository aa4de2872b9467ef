"""Everything a GPU machine should tell us, in one go: correctness on CUDA, then speed and size.

    python scripts/gpu_report.py --out gpu-figures            # on a machine with a GPU (minutes)
    python scripts/gpu_report.py --out /tmp/r --quick --device cpu   # the same steps, tiny, on a CPU

Needs no network and no data: it writes synthetic token shards (random ids; throughput does not
depend on the text) tagged with the tokenizer it is given, and runs train.py on them. Steps, in
this order, each a train.py run whose metrics.jsonl the report reads:

1. the tests marked `cuda` (pytest -m cuda);
2. bf16-mixed against fp32 over 50 steps of llama_60m: the two loss curves side by side;
3. every optimizer, and its MoLS variant, takes a few steps;
4. tokens/s, MFU and peak memory of the paper configs llama_60m, 130m, 350m and 1b (bf16),
   with and without torch.compile;
5. llama_7b with the Table 3 setup (8-bit Adam, gradient checkpointing, pure bf16) for a few
   steps, and its peak memory;
6. MoLS calibration time against the step time (the paper's Table 2).

Writes OUT/report.md (the tables for docs/performance.md, with the GPU's name, the command and
the date) and OUT/report.json. A step that fails is reported as failed and the rest still run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper"
SIZES = ["llama_60m", "llama_130m", "llama_350m", "llama_1b"]
METHODS = ["adamw", "adam", "nadam", "lamb", "muon", "adam_mini", "galore", "apollo", "adam8bit", "lion",
           "adafactor", "soap"]


def synthetic_shards(directory: Path, tokenizer_spec: str, documents: int = 20000) -> Path:
    """Random documents of 200-600 ids below the tokenizer's size, as token shards tagged with its
    fingerprint (the sizes' own 32,000-row embeddings and heads cost the same whatever the ids)."""
    from data import get_tokenizer, tokenizer_fingerprint
    from data.cache import write_json_atomic
    from data.shards import FORMAT_VERSION, MANIFEST, write_shard_arrays

    if (directory / MANIFEST).is_file():
        return directory
    tokenizer = get_tokenizer(tokenizer_spec)
    rng = np.random.default_rng(0)
    offsets = np.zeros(documents + 1, dtype=np.int64)
    np.cumsum(rng.integers(200, 600, documents), out=offsets[1:])
    tokens = rng.integers(4, len(tokenizer), int(offsets[-1])).astype(np.uint16)
    shard = write_shard_arrays(directory, 0, tokens, offsets, rows=documents)
    write_json_atomic(directory / MANIFEST, {
        "format_version": FORMAT_VERSION, "dtype": "uint16", "docs_per_shard": documents,
        "tokenizer": {"spec": tokenizer_spec, "fingerprint": tokenizer_fingerprint(tokenizer)},
        "source": {"kind": "synthetic", "description": f"{documents} random documents (gpu_report.py)"},
        "shards": [shard], "documents": shard["documents"], "tokens": shard["tokens"], "rows": documents})
    return directory


class Report:
    def __init__(self, out: Path, args):
        self.out, self.args, self.sections, self.data = out, args, [], {}
        self.shards = synthetic_shards(out / "shards", args.tokenizer)

    def train(self, name: str, configs: list[Path], *overrides: str) -> dict:
        """One train.py run on the synthetic shards; its train records, calibration and summary."""
        command = [sys.executable, str(ROOT / "train.py")]
        for config in configs:
            command += ["--config", str(config)]
        for item in ["data.source=tokens", f"data.path={self.shards}", f"data.val_path={self.shards}",
                     f"data.tokenizer={self.args.tokenizer}", "data.val_tokens=20000", "run.wandb.mode=disabled",
                     f"run.out_dir={self.out / 'runs'}", f"run.name={name}", f"train.device={self.args.device}",
                     "train.checkpoint_every=0", "train.eval_every=100000", *overrides]:
            command += ["--set", item]
        started = time.time()
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        run_dir = self.out / "runs" / name
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        (self.out / "logs" / f"{name}.log").write_text(result.stdout + result.stderr)
        records = []
        if (run_dir / "metrics.jsonl").is_file():
            records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
        summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
        return {"ok": result.returncode == 0, "code": result.returncode, "seconds": time.time() - started,
                "train": [r for r in records if r["kind"] == "train"],
                "calibration": [r for r in records if r["kind"] == "mols_calibration"], "summary": summary,
                "error": "" if result.returncode == 0 else (result.stderr.strip().splitlines() or [""])[-1]}

    def add(self, title: str, lines: list[str]) -> None:
        self.sections.append(f"## {title}\n\n" + "\n".join(lines) + "\n")
        print(self.sections[-1], flush=True)


def model_configs(size: str) -> list[Path]:
    return [PAPER / "base.yaml", PAPER / "models" / f"{size}.yaml", PAPER / "methods" / "adam.yaml"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tokenizer", default=str(ROOT / "tests" / "assets" / "tokenizer"),
                        help="a tokenizer that loads offline (its fingerprint tags the synthetic shards)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps: checks the script itself")
    parser.add_argument("--steps", type=int, default=60, help="steps per throughput run")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out, args)
    quick = args.quick
    sizes = ["llama_micro", "llama_tiny"] if quick else SIZES
    tiny = ["model.size=llama_micro", "train.global_batch=8", "train.micro_batch=4", "data.seq_len=64"] if quick else []
    device_name = "cpu"
    if args.device == "cuda":
        import torch
        device_name = torch.cuda.get_device_name(0)
    header = [f"machine: {device_name}; command: `python scripts/gpu_report.py {' '.join(argv or sys.argv[1:])}`; "
              f"date: {time.strftime('%Y-%m-%d')}"]

    # 1. the CUDA tests
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", str(ROOT / "tests" / "test_cuda.py")],
                           capture_output=True, text=True, cwd=ROOT)
    report.add("1. Tests marked cuda", [f"`pytest -m cuda`: {(tests.stdout.strip().splitlines() or ['?'])[-1]}"])

    # 2. bf16-mixed against fp32
    curves = {}
    for precision in ("bf16-mixed", "fp32"):
        if args.device == "cpu" and precision == "bf16-mixed":
            precision_set = "train.precision=bf16-mixed"
        else:
            precision_set = f"train.precision={precision}"
        run = report.train(f"precision-{precision}", model_configs("llama_60m"), precision_set, "train.steps=50",
                           "train.log_every=10", "train.warmup_steps=5", *tiny)
        curves[precision] = {r["step"]: r["loss"] for r in run["train"]}
    steps = sorted(set(curves["bf16-mixed"]) & set(curves["fp32"]))
    report.add("2. bf16-mixed vs fp32, llama_60m, 50 steps", ["| step | bf16-mixed | fp32 | difference |", "|---|---|---|---|"]
               + [f"| {s} | {curves['bf16-mixed'][s]:.4f} | {curves['fp32'][s]:.4f} | "
                  f"{curves['bf16-mixed'][s] - curves['fp32'][s]:+.4f} |" for s in steps])

    # 3. every optimizer and its MoLS variant
    rows = ["| method | steps | with MoLS |", "|---|---|---|"]
    for method in METHODS:
        cells = []
        for mols in (False, True):
            run = report.train(f"opt-{method}-{int(mols)}", model_configs("llama_60m"), f"optimizer.name={method}",
                               "model.size=llama_tiny" if not quick else "model.size=llama_micro",
                               "train.steps=4", "train.log_every=1", "train.global_batch=16", "train.micro_batch=8",
                               f"mols.enabled={str(mols).lower()}", "mols.estimate_at=1", "mols.samples=32",
                               "optimizer.options={}", "optimizer.lr=1e-3")
            cells.append("ok, loss %.3f" % run["train"][-1]["loss"] if run["ok"] and run["train"] else f"FAILED: {run['error']}")
        rows.append(f"| {method} | {cells[0]} | {cells[1]} |")
    report.add("3. Every optimizer on the device (llama_tiny, 4 steps)", rows)

    # 4. throughput
    rows = ["| model | compile | tokens/s | per device | MFU | step s | data wait s | peak alloc GiB | reserved GiB |",
            "|---|---|---|---|---|---|---|---|---|"]
    results = {}
    for size in sizes:
        for compile_ in (False, True):
            overrides = [f"model.size={size}", f"train.steps={args.steps if not quick else 6}",
                         f"train.log_every={max(args.steps // 3, 1) if not quick else 3}", f"train.compile={str(compile_).lower()}"]
            if quick:
                overrides += ["train.global_batch=8", "train.micro_batch=4", "data.seq_len=64"]
            run = report.train(f"speed-{size}-{int(compile_)}", model_configs(size if not quick else "llama_60m"), *overrides)
            last = run["train"][-1] if run["train"] else {}
            results[(size, compile_)] = last
            if not run["ok"]:
                rows.append(f"| {size} | {compile_} | FAILED: {run['error']} |||||||")
                continue
            rows.append(f"| {size} | {compile_} | {last.get('tok_per_s', 0):,.0f} | {last.get('tok_per_s_per_device', 0):,.0f} | "
                        f"{100 * last.get('mfu', 0):.1f}% | {last.get('step_s', 0):.3f} | {last.get('data_wait_s', 0):.4f} | "
                        f"{last.get('mem_alloc_gib', 0):.1f} | {last.get('mem_reserved_gib', 0):.1f} |")
    report.add("4. Throughput of the paper configs (bf16-mixed; the last logging window)", rows)

    # 5. 7B with the Table 3 setup
    seven = [PAPER / "base.yaml", PAPER / "models" / "llama_7b.yaml", PAPER / "methods" / "adam8bit.yaml"]
    run = report.train("size-llama_7b", seven, "train.steps=3", "train.log_every=1",
                       *(["model.size=llama_micro", "train.global_batch=8", "train.micro_batch=4", "data.seq_len=64"]
                         if quick else ["train.global_batch=32"]))
    last = run["train"][-1] if run["train"] else {}
    report.add("5. llama_7b, Table 3 setup (8-bit Adam, gradient checkpointing), 3 steps",
               [f"{'ok' if run['ok'] else 'FAILED: ' + run['error']}; peak allocated {last.get('mem_alloc_gib', 0):.1f} GiB, "
                f"reserved {last.get('mem_reserved_gib', 0):.1f} GiB; step {last.get('step_s', 0):.2f} s"])

    # 6. MoLS calibration time against the step time
    size = sizes[-1]
    run = report.train(f"mols-{size}", [*model_configs(size if not quick else "llama_60m"), PAPER / "mols.yaml"],
                       f"model.size={size}", "train.steps=12", "train.log_every=4", "mols.estimate_at=2",
                       *(["train.global_batch=8", "train.micro_batch=4", "data.seq_len=64", "mols.samples=64"] if quick else []))
    if run["ok"] and run["calibration"] and run["train"]:
        calibration, step_s = run["calibration"][0], run["train"][-1]["step_s"]
        report.add(f"6. MoLS calibration cost ({size})",
                   [f"{calibration['sequences']:,} sequences in {calibration['seconds']:.1f} s = "
                    f"{calibration['seconds'] / step_s:.1f} training steps of {step_s:.2f} s"])
    else:
        report.add(f"6. MoLS calibration cost ({size})", [f"FAILED: {run['error']}"])

    (args.out / "report.md").write_text("# GPU report\n\n" + "\n".join(header) + "\n\n" + "\n".join(report.sections))
    (args.out / "report.json").write_text(json.dumps({"machine": device_name, "sections": report.sections}, indent=2))
    print(f"wrote {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
