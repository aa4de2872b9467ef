#!/usr/bin/env python3
"""GPT-2 training step: the project's path vs a hand-written nanoGPT-style model vs a bare HF loop.

    python scripts/bench_gpt2.py [--rounds 8] [--steps 5] [--threads 2]

Times forward + backward + AdamW step, on the same random batch, of
  (a) nano:    a minimal GPT-2 written here (token + position embedding, pre-LN blocks with a fused
               qkv Linear and F.scaled_dot_product_attention(is_causal=True), MLP with the tanh
               GELU, final LayerNorm, head tied to the embedding, F.cross_entropy),
  (b) project: models.build_model("gpt2_tiny", vocab) + models.loss_sum_and_count + backward +
               AdamW step (what train.py does per micro-batch),
  (c) hf:      the same transformers model, `model(input_ids, labels=labels).loss`,
all of the gpt2_tiny shape (4 layers, 4 heads, width 128, MLP 512, seq 128, batch 32, vocab
8000), fp32, on the CPU with torch.set_num_threads(--threads). After a warm-up, rounds of
--steps steps alternate a, b, c; prints the median tokens/s of each and the ratios b/a and b/c (of the medians, and of
the fastest rounds, which suffer least from other load on the machine).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
    import _repo_root  # noqa: F401
except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
    pass

from models import SIZES, build_model, loss_sum_and_count  # noqa: E402


class Block(nn.Module):
    def __init__(self, d: int, heads: int, inner: int):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.attn_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.c_fc = nn.Linear(d, inner)
        self.mlp_proj = nn.Linear(inner, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class NanoGPT(nn.Module):
    def __init__(self, vocab: int, d: int, heads: int, layers: int, inner: int, positions: int):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(positions, d)
        self.blocks = nn.ModuleList(Block(d, heads, inner) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, ids, targets):
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.wte(ids) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)   # tied head
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="gpt2_tiny")
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="steps per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default="abc", help="variants to run (a, b, c)")
    p.add_argument("--clock", default="wall", choices=["wall", "process"],
                   help="process: this process's CPU time (less disturbed by other load; use with --threads 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = SIZES[args.size]
    torch.manual_seed(0)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq_len))
    labels = ids.clone()
    targets = torch.cat([labels[:, 1:], torch.full((args.batch, 1), -100)], dim=1)
    batch = {"input_ids": ids, "labels": labels}

    nano = NanoGPT(args.vocab, size.hidden, size.heads, size.layers, size.intermediate, size.max_positions)
    project = build_model(args.size, args.vocab)
    hf = build_model(args.size, args.vocab)
    models = {"a": nano, "b": project, "c": hf}
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=3e-4, weight_decay=0.1) for k, m in models.items()}

    def loss_of(key):
        if key == "a":
            return nano(ids, targets)
        if key == "b":
            loss_sum, count = loss_sum_and_count(project, batch)
            return loss_sum / count
        return hf(input_ids=ids, labels=labels).loss

    def step(key):
        optimizers[key].zero_grad(set_to_none=True)
        loss_of(key).backward()
        optimizers[key].step()

    keys = [k for k in "abc" if k in args.only]
    for key in keys:
        for _ in range(args.warmup):
            step(key)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    times = {k: [] for k in keys}
    for _ in range(args.rounds):
        for key in keys:
            t0 = clock()
            for _ in range(args.steps):
                step(key)
            times[key].append((clock() - t0) / args.steps)
    tokens = args.batch * args.seq_len
    names = {"a": "nano (hand-written)", "b": "project (build_model + loss_sum_and_count)",
             "c": "hf (model(ids, labels=labels).loss)"}
    print(f"{args.size}: batch {args.batch} x seq {args.seq_len}, vocab {args.vocab}, fp32, CPU, "
          f"torch.set_num_threads({args.threads}), torch {torch.__version__}; "
          f"{args.rounds} rounds x {args.steps} steps, a/b/c alternating, medians; {args.clock} clock")
    speed, best = {}, {}
    for key in keys:
        med = statistics.median(times[key])
        speed[key], best[key] = tokens / med, tokens / min(times[key])
        print(f"  ({key}) {names[key]:<45} {1e3 * med:8.1f} ms/step  {speed[key]:9.0f} tokens/s  "
              f"(min {1e3 * min(times[key]):.1f}, max {1e3 * max(times[key]):.1f} ms)")
    for other in "ac":
        if other in speed and "b" in speed:
            print(f"  b/{other} (tokens/s) = {speed['b'] / speed[other]:.3f} (medians), "
                  f"{best['b'] / best[other]:.3f} (fastest rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
