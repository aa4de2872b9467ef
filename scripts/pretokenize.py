#!/usr/bin/env python3
"""Tokenize a corpus once into token shards (read back by data/shards.py).

    python scripts/pretokenize.py --source embedded --split train --tokenizer embedded-8k --out shards/emb-train
    python scripts/pretokenize.py --source local --path 'c4/en/c4-train.*.json.gz' --tokenizer t5-base \\
        --out shards/c4-train --workers 16
    python scripts/pretokenize.py --source c4 --split val --tokenizer t5-base --out shards/c4-val

Sources: `local` (--path: a file, directory or glob of jsonl / json / parquet / txt files or C4
json.gz shards; --format, --text-field as in the data config), `c4` and `openwebtext` (the hub, as
data/sources.py opens them) and `embedded` (the offline corpus of data/embedded.py).

Shard k holds source rows [k * docs_per_shard, (k + 1) * docs_per_shard) in source order (blank
rows dropped), tokenized with `DocumentEncoder.encode` (no special tokens; the sequence builder
adds the eos). Worker processes (--workers) tokenize and write whole shards; the main process
only reads the source. Every file is written atomically; a shard is finished once its .json is
there, and manifest.json is written last. A killed run, re-run with the same arguments, keeps the
finished shards (never rewritten) and writes only the missing ones; other arguments into the same
directory are refused (plan.json records them). Bad input: one message on stderr, exit status 2.
"""
from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Iterator

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:  # run as a file: scripts/ is sys.path[0], so this puts the repository root there too
    import _repo_root  # noqa: F401
except ModuleNotFoundError:  # imported as scripts.<name> (tests, python -m): the root is there already
    pass

from configs import write_json_atomic  # noqa: E402
from data.shards import (FORMAT_VERSION, MANIFEST, PLAN, read_manifest, shard_done,  # noqa: E402
                         token_dtype, tokenize_shard)

READ_BATCH = 1000


class InputError(Exception):
    """Bad input: reported as one line, exit status 2."""


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, choices=["local", "c4", "openwebtext", "embedded"])
    p.add_argument("--path", help="local: a file, directory or glob")
    p.add_argument("--format", default="auto", help="local: auto, c4, jsonl, json, parquet or text")
    p.add_argument("--text-field", default="text")
    p.add_argument("--split", default="train", choices=["train", "val"])
    p.add_argument("--tokenizer", default="embedded-32k", help="a data.tokenizer spec (embedded-8k, t5-base, a directory)")
    p.add_argument("--out", required=True, help="the shard directory")
    p.add_argument("--docs-per-shard", type=int, default=50_000, help="source rows per shard")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="tokenizer processes (0 or 1: tokenize in this process)")
    p.add_argument("--max-rows", type=int, default=None, help="stop after this many source rows")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.docs_per_shard < 1:
        p.error("--docs-per-shard must be positive")
    if args.workers < 0:
        p.error("--workers must be >= 0")
    if args.max_rows is not None and args.max_rows < 1:
        p.error("--max-rows must be positive")
    if args.source == "local" and not args.path:
        p.error("--source local needs --path")
    if args.source != "local" and args.path:
        p.error(f"--path is for --source local, not {args.source}")
    return args


def open_source(args) -> tuple[dict, Iterator]:
    """(description for the manifest, iterator over the rows' texts in source order)."""
    if args.source == "embedded":
        from data.embedded import load_embedded_corpus, read_texts
        corpus = load_embedded_corpus()
        path = corpus.split_path(args.split)
        return ({"kind": "embedded", "split": args.split, "corpus_key": corpus.key,
                 "description": f"embedded corpus {corpus.key}, {args.split} split ({path.name})"},
                read_texts(path))
    from data.sources import hub_spec, local_spec, open_stream
    if args.source == "local":
        spec = local_spec(args.path, split=args.split, data_format=args.format, text_field=args.text_field,
                          what="--path")
    else:
        spec = hub_spec(args.source, split=args.split, text_field=args.text_field)
    description = {"kind": args.source, "split": args.split, "text_field": spec.text_field,
                   "description": spec.describe()}
    if spec.source == "local":
        description["files"] = list(spec.files)
        description["builder"] = spec.builder
    stream = open_stream(spec)

    def texts():
        try:
            for batch in stream.iter(batch_size=READ_BATCH):
                if spec.text_field not in batch:
                    raise InputError(f"{spec.describe()}: rows have no field {spec.text_field!r} "
                                     f"(fields: {', '.join(batch)}); set --text-field")
                yield from batch[spec.text_field]
        except InputError:
            raise
        except Exception as err:  # datasets' parse errors come in many types
            raise InputError(f"could not read {spec.describe()}: {type(err).__name__}: "
                             f"{(str(err).strip().splitlines() or [''])[0]}") from None

    return description, texts()


def plan_for(args, tokenizer, source: dict) -> dict:
    from data.tokenizer import tokenizer_fingerprint
    return {
        "format_version": FORMAT_VERSION,
        "tokenizer": {"spec": args.tokenizer, "fingerprint": tokenizer_fingerprint(tokenizer),
                      "vocab_size": len(tokenizer), "eos_id": int(tokenizer.eos_token_id),
                      "pad_id": int(tokenizer.pad_token_id)},
        "source": source,
        "docs_per_shard": args.docs_per_shard,
        "max_rows": args.max_rows,
        "dtype": token_dtype(len(tokenizer)).name,
    }


def check_plan(out: Path, plan: dict) -> None:
    path = out / PLAN
    if path.is_file():
        import json
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != plan:
            changed = [k for k in plan if old.get(k) != plan[k]]
            raise InputError(f"{out} holds shards of another pretokenize run (different {', '.join(changed) or 'plan'}); "
                             f"use another --out, or the same arguments to finish that run")
    else:
        if out.is_dir() and any(out.glob("shard-*")):
            raise InputError(f"{out} already holds shards but no {PLAN}; use an empty --out directory")
        write_json_atomic(path, plan)


def blocks(texts: Iterator, docs_per_shard: int, max_rows: int | None) -> Iterator[tuple[int, list]]:
    if max_rows is not None:
        texts = itertools.islice(texts, max_rows)
    for k in itertools.count():
        block = list(itertools.islice(texts, docs_per_shard))
        if not block:
            return
        yield k, block


def run(args) -> int:
    from data.tokenizer import DocumentEncoder, get_tokenizer

    out = Path(args.out)
    tokenizer = get_tokenizer(args.tokenizer)
    source, texts = open_source(args)
    plan = plan_for(args, tokenizer, source)
    if (out / MANIFEST).is_file() and (out / PLAN).is_file():
        check_plan(out, plan)
        manifest = read_manifest(out)
        if not args.quiet:
            print(f"{out}: already complete ({manifest['documents']:,} documents, {manifest['tokens']:,} tokens)")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    check_plan(out, plan)
    encoder = DocumentEncoder(tokenizer)
    dtype = plan["dtype"]
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    started = time.perf_counter()
    infos: dict[int, dict] = {}
    kept = written = 0

    def finished(info: dict) -> None:
        nonlocal written
        infos[info["shard"]] = info
        written += 1
        log(f"shard {info['shard']:05d}: {info['documents']:,} documents, {info['tokens']:,} tokens "
            f"({time.perf_counter() - started:.1f}s)")

    jobs = ((k, block) for k, block in blocks(texts, args.docs_per_shard, args.max_rows))
    if args.workers <= 1:
        for k, block in jobs:
            done = shard_done(out, k)
            if done is not None:
                infos[k], kept = done, kept + 1
                continue
            finished(tokenize_shard((str(out), k, encoder, dtype, block)))
    else:
        context = multiprocessing.get_context("spawn")  # the tokenizers library and fork do not mix
        with context.Pool(args.workers) as pool:
            pending = []
            for k, block in jobs:
                done = shard_done(out, k)
                if done is not None:
                    infos[k], kept = done, kept + 1
                    continue
                pending.append(pool.apply_async(tokenize_shard, ((str(out), k, encoder, dtype, block),)))
                while len(pending) > args.workers + 1:  # bounded: texts of a few shards in memory
                    finished(pending.pop(0).get())
            for job in pending:
                finished(job.get())
    if not infos:
        raise InputError(f"{source['description']}: no documents")
    shards = [infos[k] for k in range(len(infos))]
    manifest = {**plan, "shards": shards, "documents": sum(s["documents"] for s in shards),
                "tokens": sum(s["tokens"] for s in shards), "rows": sum(s["rows"] for s in shards)}
    write_json_atomic(out / MANIFEST, manifest)  # last: marks the directory complete
    log(f"{out}: {len(shards)} shards ({written} written, {kept} kept from an earlier run), "
        f"{manifest['documents']:,} documents, {manifest['tokens']:,} tokens, {dtype}, "
        f"{time.perf_counter() - started:.1f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (InputError, ValueError, FileNotFoundError) as err:
        print(f"pretokenize: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pretokenize: interrupted; re-run with the same arguments to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
