"""Atomic file writes, for everything the project writes: the data cache, token shards, run
records, checkpoints, reports.

Every file is written to a temporary file in the same directory (`.<name>.<random>.tmp`) and then
moved into place with `os.replace`, so a run killed mid-write never leaves a half file behind.
Several processes may write the same file at once (ranks building the same cache entry): they
produce identical bytes, and the last rename wins.

Here, in the bottom package, because every layer writes files and none should import `data` (or
anything above `configs`) for it.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to `final`; on success move it onto `final`, else delete it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; cached files are meant to be shared
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(final: Path, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(final: Path, obj) -> None:
    write_text_atomic(final, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
