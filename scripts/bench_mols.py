#!/usr/bin/env python3
"""What MoLS costs: one SNR gradient sample vs one training step, and the statistics' memory.

    python scripts/bench_mols.py [--size llama_tiny] [--micro-batch 16] [--seq-len 128] [--steps 10]

Times, in one process and on the same random batches, (a) a training micro-step (forward, backward,
AdamW step) and (b) one SNR sample (forward, backward, folding the gradient into the streamed
moments on the CPU), and projects the calibration's share of a paper-sized run: 2048 samples of
the given micro-batch against `--train-steps` optimizer steps of a 512-sequence batch. Compare the
two figures as a ratio; absolute times depend on the machine.

    python scripts/bench_mols.py --fold-only --size llama_350m --threads 1,2

times only the host's part of a sample on a GPU node, folding one gradient into the moments on the
CPU (no forward or backward), with each number of CPU threads: under torchrun that was 1 thread per
rank (OMP_NUM_THREADS=1); train.py now gives each rank its share of the node's cores. It projects
the host time of a paper calibration (16,384 sequences, one sample per micro-batch of the paper
config: 64 samples per rank at 1.3B on 8 GPUs, 128 at 7B on 16) from the per-element cost, beside
a paper run's length at 40% MFU of an H100.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
    import _repo_root  # noqa: F401
except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
    pass

from models import SIZES, build_model  # noqa: E402
from models.cost import flops_per_token  # noqa: E402
from mols import param_groups  # noqa: E402
from mols.snr import GradientMoments  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="llama_tiny", choices=sorted(SIZES))
    parser.add_argument("--vocab", type=int, default=8000, help="for sizes without their own vocabulary")
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed repetitions of each")
    parser.add_argument("--stats-device", default="cpu")
    parser.add_argument("--train-steps", type=int, default=10000, help="for the projection (LLaMA-60M: 10K)")
    parser.add_argument("--fold-only", action="store_true", help="time only the host's fold of one sample")
    parser.add_argument("--threads", default="1", help="with --fold-only: comma-separated CPU thread counts")
    args = parser.parse_args(argv)
    if args.fold_only:
        return fold_only(args.size, [int(t) for t in args.threads.split(",")], args.steps, args.vocab)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = build_model(args.size, SIZES[args.size].vocab or args.vocab).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    optimizer = torch.optim.AdamW(param_groups(model), lr=1e-4, betas=(0.9, 0.95))
    vocab = model.config.vocab_size
    batch = torch.randint(0, vocab, (args.micro_batch, args.seq_len), device=device)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    moments = GradientMoments(params, args.stats_device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step():
        with autocast:
            model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def snr_sample():
        with autocast:
            model(input_ids=batch, labels=batch).loss.backward()
        moments.add_current_grads()
        model.zero_grad(set_to_none=True)

    timings = {}
    for name, fn in [("train micro-step", train_step), ("SNR sample", snr_sample)]:
        fn()  # warm-up
        sync()
        start = time.perf_counter()
        for _ in range(args.steps):
            fn()
        sync()
        timings[name] = (time.perf_counter() - start) / args.steps
    n_params = sum(p.numel() for p in params.values())
    stats_bytes = sum(m.numel() * 4 for m in moments.mean.values()) * 2
    ratio = timings["SNR sample"] / timings["train micro-step"]
    micro_steps_per_update = 512 // args.micro_batch
    samples = 2048 // args.micro_batch
    share = samples * ratio / (args.train_steps * micro_steps_per_update)
    print(f"{args.size} ({n_params / 1e6:.1f}M parameters) on {device}, micro-batch {args.micro_batch} x {args.seq_len} tokens")
    for name, seconds in timings.items():
        print(f"  {name:<18} {seconds * 1000:9.1f} ms")
    print(f"  SNR sample / train micro-step: {ratio:.2f}")
    print(f"  moment buffers ({args.stats_device}): {stats_bytes / 2**20:.1f} MiB (2 x fp32 per parameter)")
    print(f"  projected calibration share: 2048 samples = {samples} micro-batches vs {args.train_steps} steps x "
          f"{micro_steps_per_update} micro-steps: {100 * share:.3f}% of training compute")
    if device.type == "cuda":
        print(f"  peak accelerator memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    return 0


# A paper run, for the projection: (size, parameters, steps, GPUs, micro-batch) as configs/paper has them.
PAPER_RUNS = [("llama_1b", 1.34e9, 100_000, 8, 32), ("llama_7b", 6.74e9, 150_000, 16, 8)]


def fold_only(size: str, threads: list[int], repeats: int, vocab: int) -> int:
    model = build_model(size, SIZES[size].vocab or vocab, device="meta")
    params = {n: torch.nn.Parameter(torch.empty(p.shape)) for n, p in model.named_parameters()}
    for p in params.values():
        p.grad = torch.randn(p.shape)
    moments = GradientMoments(params, "cpu")
    n = sum(p.numel() for p in params.values())
    print(f"{size}: {n / 1e6:.1f}M parameters; host fold of one gradient sample (fp32 moments on the CPU)")
    per_element = {}
    for count in threads:
        torch.set_num_threads(count)
        moments.add_current_grads()  # warm-up (page faults of the fresh buffers)
        start = time.perf_counter()
        for _ in range(repeats):
            moments.add_current_grads()
        seconds = (time.perf_counter() - start) / repeats
        per_element[count] = seconds / n
        print(f"  {count} thread(s): {seconds:8.3f} s per sample ({n / seconds / 1e9:.2f} G elements/s)")
    for name, params_count, steps, gpus, micro_batch in PAPER_RUNS:
        samples_per_rank = 16_384 // gpus // micro_batch  # mols.samples sequences, one sample per micro-batch
        meta = build_model(name, 32000, device="meta")
        step_s = flops_per_token(meta, 256) * 512 * 256 / (gpus * 0.4 * 989e12)
        run_s = steps * step_s
        for count, cost in per_element.items():
            host = samples_per_rank * cost * params_count
            print(f"  projected {name} ({gpus} GPUs, {steps:,} steps, {run_s / 3600:.1f} h at 40% MFU, {samples_per_rank} "
                  f"samples per rank): calibration "
                  f"host fold {host / 60:.1f} min with {count} thread(s) per rank = {100 * host / run_s:.2f}% of the run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
