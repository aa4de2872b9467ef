#!/usr/bin/env python3
"""Data-path benchmark: training tokens per second one rank's data source delivers, against what
one GPU consumes at the paper's LLaMA sizes.

    python scripts/bench_data.py [--quick] [--out bench_data.json] [--tokenizer SPEC] [--workers 0,1,2]

Each source is measured the way train.py consumes it: `data.build_train_stream(cfg.data,
tokenizer, rank=0, world_size=1, micro_batch=64)` and `stream.next_batch()` in a loop, with the
paper's sequence scheme (seq_len 256, packing false: one document per sequence, truncated +
padded). Sources:

  local     a C4-format corpus (`c4-train.NNNNN-of-NNNNN.json.gz`, rows {"text", "timestamp",
            "url"}) written into --dir, streamed and tokenized on the fly (data.source=local,
            data.format auto), once per --workers value (data.num_workers; 0: the rank's own
            process tokenizes);
  tokens    the same corpus tokenized once by scripts/pretokenize.py (timed too) into token
            shards (data.source=tokens);
  embedded  the embedded corpus (data.source=embedded), when its packages are installed.

Besides, one process reading the local corpus without tokenizing (the ceiling of the streamed
path: every DataLoader worker reads the rank's whole stream) and the pretokenize run itself (one
process: read + tokenize + write), projected to C4 en's 364,868,892 training documents.

The corpus: --docs documents of about --doc-chars characters (C4 en averages about 2,200
characters of text per document), cut at whitespace from the text of --text (a jsonl file with a
"text" field; default: the embedded corpus's train split when installed, else
tests/assets/train.jsonl), cycled as needed. The tokenizer: --tokenizer (default: embedded-32k when
the embedded corpus is installed, else tests/assets/tokenizer); on a node that has the real one,
pass its directory (e.g. a saved t5-base).

Rates: token positions per second (micro_batch x seq_len per batch, pads included: the unit of
train.py's tok_per_s_per_device and of MFU), then non-pad tokens and sequences per second.
Measured for --seconds after a warm-up that drains the DataLoader's prefetch queue; the time to
the first batch (stream start, workers, shuffle buffer) is shown apart.

Demand: one GPU at --mfu (0.40) of --peak-tflops (989, an H100 SXM's dense bf16) consumes
mfu * peak / flops_per_token tokens per second, with models/cost.py's flops_per_token of
models.build_model(size, 32000, device="meta") at seq_len 256. The table shows supply / demand
per size (>= 1: the source keeps up, one rank per GPU).

TOKENIZERS_PARALLELISM is set to false unless already set, so that every tokenizing process uses
one core (train.py leaves it unset: a rank with num_workers 0 may then tokenize on a thread pool).
--quick: a small corpus, a small shuffle buffer and 1.5 s per source (under a minute).
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
    import _repo_root  # noqa: F401
except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
    pass

ROOT = Path(__file__).resolve().parents[1]
ASSET_TEXT = ROOT / "tests" / "assets" / "train.jsonl"
ASSET_TOKENIZER = ROOT / "tests" / "assets" / "tokenizer"
PAPER_SIZES = ("llama_60m", "llama_130m", "llama_350m", "llama_1b")
PAPER_VOCAB = 32000                 # the LLaMA models' embedding rows (t5-base ids, sentinels cut)
C4_EN_TRAIN_DOCS = 364_868_892      # allenai/c4 "en" train rows
C4_DOC_CHARS = 2200                 # about: 828.6 GB over those rows, less url and timestamp
PREFETCH_FACTOR = 4                 # data/stream.py's DataLoader(prefetch_factor=4)
BLOCK_DOCS = 256                    # data/stream.py's BLOCK_DOCS


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small corpus and short runs (under a minute)")
    p.add_argument("--out", help="write the figures as JSON here")
    p.add_argument("--dir", help="work directory for the corpus and shards (default: a temporary one, removed)")
    p.add_argument("--text", help="jsonl with a 'text' field to build the corpus from")
    p.add_argument("--tokenizer", help="a data.tokenizer spec (default: embedded-32k if the embedded corpus is "
                                       "installed, else tests/assets/tokenizer)")
    p.add_argument("--sources", default="local,tokens,embedded", help="comma list of local, tokens, embedded")
    p.add_argument("--workers", help="data.num_workers values for the local source (default 0,1,2)")
    p.add_argument("--docs", type=int, help="documents in the corpus (default 20000; --quick 3000)")
    p.add_argument("--doc-chars", type=int, default=C4_DOC_CHARS, help="characters per document (default %(default)s)")
    p.add_argument("--files", type=int, default=8, help="json.gz files the corpus is split into")
    p.add_argument("--seconds", type=float, help="measured seconds per source (default 12; --quick 1.5)")
    p.add_argument("--shuffle-buffer", type=int, help="data.shuffle_buffer (default 10000, the config's; --quick 1000)")
    p.add_argument("--micro-batch", type=int, default=64, help="sequences per batch (the paper configs': 64)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--packing", action="store_true", help="packed sequences instead of truncate+pad")
    p.add_argument("--sizes", default=",".join(PAPER_SIZES), help="model sizes for the demand columns")
    p.add_argument("--mfu", type=float, default=0.40)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense bf16 peak (H100 SXM: 989)")
    args = p.parse_args(argv)
    quick = args.quick
    args.docs = args.docs or (3000 if quick else 20000)
    args.seconds = args.seconds or (1.5 if quick else 12.0)
    args.shuffle_buffer = args.shuffle_buffer or (1000 if quick else 10000)
    try:
        args.workers = [int(w) for w in (args.workers or ("0,1" if quick else "0,1,2")).split(",") if w != ""]
    except ValueError:
        p.error("--workers: a comma list of integers, e.g. 0,1,2")
    args.sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = sorted(set(args.sources) - {"local", "tokens", "embedded"})
    if unknown:
        p.error(f"--sources: unknown {', '.join(unknown)} (local, tokens, embedded)")
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if min(args.docs, args.doc_chars, args.files, args.micro_batch) < 1 or min(args.workers, default=0) < 0:
        p.error("--docs, --doc-chars, --files, --micro-batch must be positive; --workers >= 0")
    if args.seq_len < 2 or args.seconds <= 0 or not 0 < args.mfu <= 1:
        p.error("--seq-len >= 2, --seconds > 0, 0 < --mfu <= 1")
    return args


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

def embedded_corpus():
    """The embedded corpus, or None when its packages are missing (it is built on first use)."""
    try:
        from data.embedded import load_embedded_corpus
        return load_embedded_corpus()
    except Exception:  # missing packages surface as UserError / ImportError
        return None


def default_text(corpus) -> Path:
    return corpus.train_path if corpus is not None else ASSET_TEXT


def default_tokenizer(corpus) -> str:
    return "embedded-32k" if corpus is not None else str(ASSET_TOKENIZER)


def read_source_texts(path: Path) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                text = json.loads(line).get("text")
                if isinstance(text, str) and text.strip():
                    texts.append(" ".join(text.split()))
    if not texts:
        raise SystemExit(f"bench_data: no texts in {path}")
    return texts


def synthetic_documents(texts: list[str], n_docs: int, doc_chars: int) -> list[str]:
    """n_docs documents of about doc_chars characters each: the texts joined by blank lines,
    cycled, cut at the first whitespace at or after doc_chars characters."""
    docs, buffer, i = [], "", 0
    while len(docs) < n_docs:
        while len(buffer) < 2 * doc_chars:
            buffer += texts[i % len(texts)] + "\n\n"
            i += 1
        cut = doc_chars
        while cut < len(buffer) and not buffer[cut].isspace():
            cut += 1
        docs.append(buffer[:cut].strip())
        buffer = buffer[cut:].lstrip()
    return docs


def write_c4_like(directory: Path, docs: list[str], n_files: int) -> Path:
    """C4's own shard layout: c4-train.{k:05d}-of-{n:05d}.json.gz, one JSON object per line."""
    directory.mkdir(parents=True, exist_ok=True)
    n_files = max(1, min(n_files, len(docs)))
    per_file = math.ceil(len(docs) / n_files)
    for k in range(n_files):
        with gzip.open(directory / f"c4-train.{k:05d}-of-{n_files:05d}.json.gz", "wt", encoding="utf-8",
                       compresslevel=6) as f:
            for j, text in enumerate(docs[k * per_file: (k + 1) * per_file]):
                row = {"text": text, "timestamp": "2019-04-25T12:00:00Z",
                       "url": f"https://example.org/bench/{k}/{j}"}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return directory


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------

def measure_stream(cfg, tokenizer, *, micro_batch: int, seconds: float, vocab_limit) -> dict:
    """Batches from build_train_stream(...).next_batch() for `seconds`, after a warm-up."""
    from data import build_train_stream

    t0 = time.perf_counter()
    stream = build_train_stream(cfg, tokenizer, rank=0, world_size=1, micro_batch=micro_batch,
                                vocab_limit=vocab_limit)
    try:
        stream.next_batch()
        first = time.perf_counter() - t0
        prefetched_docs = PREFETCH_FACTOR * BLOCK_DOCS * cfg.num_workers if cfg.source == "local" else 0
        for _ in range(math.ceil(prefetched_docs / micro_batch) + 2):  # drain what the workers queued
            stream.next_batch()
        batches = positions = real = 0
        start = time.perf_counter()
        while True:
            batch = stream.next_batch()
            batches += 1
            positions += batch["input_ids"].numel()
            real += int((batch["labels"] != -100).sum())
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and batches >= 3:
                break
    finally:
        stream.close()
    return {"first_batch_s": first, "batches": batches, "seconds": elapsed,
            "tokens_per_s": positions / elapsed, "nonpad_tokens_per_s": real / elapsed,
            "sequences_per_s": batches * micro_batch / elapsed}


def measure_read_only(corpus_dir: Path, seconds: float) -> dict:
    """One process reading the local corpus as a DataLoader worker does (datasets' json builder,
    streamed, no shuffle), without tokenizing: rows per second."""
    from data.sources import local_spec, open_stream

    spec = local_spec(str(corpus_dir), split="train", data_format="auto", text_field="text", what="data.path")
    rows = chars = 0
    start = time.perf_counter()
    while True:
        for batch in open_stream(spec).iter(batch_size=BLOCK_DOCS):
            texts = batch["text"]
            rows += len(texts)
            chars += sum(len(t) for t in texts)
            if time.perf_counter() - start >= seconds:
                break
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return {"rows_per_s": rows / elapsed, "chars_per_s": chars / elapsed, "seconds": elapsed}


def run_pretokenize(corpus_dir: Path, out: Path, tokenizer_spec: str, n_docs: int) -> dict:
    """scripts/pretokenize.py --workers 1 (read, tokenize and write in one process), run as the
    command it is and timed (its interpreter start included: about a second)."""
    import subprocess

    start = time.perf_counter()
    code = subprocess.run([sys.executable, str(ROOT / "scripts" / "pretokenize.py"), "--source", "local",
                           "--path", str(corpus_dir), "--tokenizer", tokenizer_spec, "--out", str(out),
                           "--docs-per-shard", str(max(1, n_docs // 4)), "--workers", "1", "--quiet"]).returncode
    if code:
        raise SystemExit(f"bench_data: pretokenize failed (exit {code})")
    seconds = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text())
    return {"seconds": seconds, "documents": manifest["documents"], "tokens": manifest["tokens"],
            "docs_per_s": manifest["documents"] / seconds, "tokens_per_s": manifest["tokens"] / seconds,
            "c4_en_core_hours": C4_EN_TRAIN_DOCS / (manifest["documents"] / seconds) / 3600}


def gpu_demand(sizes: list[str], seq_len: int, mfu: float, peak_tflops: float) -> dict:
    from models import build_model
    from models.cost import flops_per_token

    out = {}
    for size in sizes:
        model = build_model(size, PAPER_VOCAB, device="meta")
        flops = flops_per_token(model, seq_len)
        tokens = mfu * peak_tflops * 1e12 / flops
        out[size] = {"parameters": sum(p.numel() for p in model.parameters()), "flops_per_token": flops,
                     "tokens_per_s": tokens, "sequences_per_s": tokens / seq_len}
    return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def short_size(size: str) -> str:
    return size.split("_", 1)[-1].upper() if "_" in size else size


def render(result: dict) -> str:
    s = result["settings"]
    demand = result["demand"]
    sizes = list(demand)
    lines = [f"corpus: {s['documents']:,} documents, {s['mean_chars']:,.0f} characters / {s['mean_tokens']:,.0f} "
             f"tokens each on average, {s['files']} json.gz files; tokenizer {s['tokenizer']} "
             f"({s['vocab']:,} tokens); seq_len {s['seq_len']}, "
             f"{'packed' if s['packing'] else 'truncate+pad per document'}, micro_batch {s['micro_batch']}, "
             f"shuffle_buffer {s['shuffle_buffer']}; {s['seconds']:g} s per source; "
             f"TOKENIZERS_PARALLELISM={s['tokenizers_parallelism']}; {s['machine']}",
             "",
             "GPU demand, one GPU: " + f"{s['mfu']:.0%} MFU of {s['peak_tflops']:g} TFLOP/s"]
    for size, d in demand.items():
        lines.append(f"  {size:<11} {d['parameters'] / 1e6:7.1f}M params  {d['flops_per_token'] / 1e6:8.1f} MFLOP/token"
                     f"  {d['tokens_per_s'] / 1e6:6.3f}M tokens/s  {d['sequences_per_s']:8,.0f} sequences/s")
    lines.append("")
    head = (f"{'source':<28}{'workers':>8}{'procs':>6}{'1st batch':>10}{'tokens/s':>12}{'non-pad/s':>12}"
            f"{'seq/s':>9}  " + "".join(f"{short_size(z) + ' x':>8}" for z in sizes))
    lines += ["supply per rank (tokens/s: token positions, pads included) and supply / demand per GPU", head,
              "-" * len(head)]
    for row in result["rows"]:
        ratios = "".join(f"{row['tokens_per_s'] / demand[z]['tokens_per_s']:8.2f}" for z in sizes)
        workers = "-" if row["workers"] is None else str(row["workers"])
        lines.append(f"{row['label']:<28}{workers:>8}{row['processes']:>6}{row['first_batch_s']:>9.1f}s"
                     f"{row['tokens_per_s']:>12,.0f}{row['nonpad_tokens_per_s']:>12,.0f}{row['sequences_per_s']:>9,.0f}"
                     f"  {ratios}")
    if "read_only" in result:
        r = result["read_only"]
        lines += ["", f"local json.gz read only (1 process, no tokenizer): {r['rows_per_s']:,.0f} documents/s, "
                      f"{r['chars_per_s'] / 1e6:.1f}M characters/s (ceiling of the streamed path: every worker "
                      f"reads the rank's whole stream)"]
    if "pretokenize" in result:
        p = result["pretokenize"]
        lines += [f"pretokenize (1 process: read + tokenize + write): {p['docs_per_s']:,.0f} documents/s, "
                  f"{p['tokens_per_s'] / 1e6:.2f}M tokens/s; C4 en train ({C4_EN_TRAIN_DOCS:,} documents of this "
                  f"length) at this rate: {p['c4_en_core_hours']:,.0f} core-hours"]
    return "\n".join(lines)


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f} at start"
    return f"{cpu}, {os.cpu_count()} CPUs{load}"


def run(args, work: Path) -> dict:
    import numpy as np

    from data.config import DataConfig
    from data.tokenizer import DocumentEncoder, get_tokenizer

    needs_corpus = not args.text or not args.tokenizer or "embedded" in args.sources
    corpus = embedded_corpus() if needs_corpus else None
    text_path = Path(args.text) if args.text else default_text(corpus)
    tokenizer_spec = args.tokenizer or default_tokenizer(corpus)
    tokenizer = get_tokenizer(tokenizer_spec)
    vocab_limit = PAPER_VOCAB if len(tokenizer) > PAPER_VOCAB else None

    for mine in ("c4-like", "shards"):  # this script's own subfolders of the work directory: fresh each run
        shutil.rmtree(work / mine, ignore_errors=True)
    docs = synthetic_documents(read_source_texts(text_path), args.docs, args.doc_chars)
    corpus_dir = write_c4_like(work / "c4-like", docs, args.files)
    sample = docs[:500]
    mean_tokens = float(np.mean([len(a) for a in DocumentEncoder(tokenizer).encode(sample)]))
    settings = {"documents": len(docs), "mean_chars": float(np.mean([len(d) for d in docs])),
                "mean_tokens": mean_tokens, "files": max(1, min(args.files, len(docs))),
                "text": str(text_path), "tokenizer": tokenizer_spec, "vocab": len(tokenizer),
                "seq_len": args.seq_len, "packing": args.packing, "micro_batch": args.micro_batch,
                "shuffle_buffer": args.shuffle_buffer, "seconds": args.seconds, "mfu": args.mfu,
                "peak_tflops": args.peak_tflops, "machine": machine_line(),
                "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM", "")}
    result = {"settings": settings, "demand": gpu_demand(args.sizes, args.seq_len, args.mfu, args.peak_tflops),
              "rows": []}
    common = dict(tokenizer=tokenizer_spec, seq_len=args.seq_len, packing=args.packing,
                  shuffle_buffer=args.shuffle_buffer)

    def add(label, cfg, workers, processes):
        print(f"  measuring {label}" + ("" if workers is None else f", {workers} workers"), file=sys.stderr, flush=True)
        row = measure_stream(cfg, tokenizer, micro_batch=args.micro_batch, seconds=args.seconds,
                             vocab_limit=vocab_limit)
        result["rows"].append({"label": label, "source": cfg.source, "workers": workers, "processes": processes, **row})

    if "local" in args.sources:
        for workers in args.workers:
            cfg = DataConfig(source="local", path=str(corpus_dir), num_workers=workers, **common)
            add("local json.gz (streamed)", cfg, workers, workers + 1)
        print("  measuring local json.gz read only", file=sys.stderr, flush=True)
        result["read_only"] = measure_read_only(corpus_dir, min(args.seconds, 5.0))
    if "tokens" in args.sources:
        print("  pretokenizing", file=sys.stderr, flush=True)
        shards = work / "shards"
        result["pretokenize"] = run_pretokenize(corpus_dir, shards, tokenizer_spec, len(docs))
        cfg = DataConfig(source="tokens", path=str(shards), val_path=str(shards), **common)
        add("tokens (pretokenized)", cfg, None, 1)
    if "embedded" in args.sources:
        if corpus is None:
            result["embedded_skipped"] = "the embedded corpus packages are not installed"
        else:
            cfg = DataConfig(source="embedded", **common)
            add("embedded (cached tokens)", cfg, None, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.dir:
        work = Path(args.dir)
        work.mkdir(parents=True, exist_ok=True)
        result = run(args, work)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_data-") as tmp:
            result = run(args, Path(tmp))
    result["settings"]["wall_s"] = time.perf_counter() - started
    print(render(result))
    if "embedded_skipped" in result:
        print(f"embedded: skipped ({result['embedded_skipped']})")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
