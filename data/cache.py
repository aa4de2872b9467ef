"""The on-disk cache of the data layer (corpus, tokenizers, pre-tokenized arrays): where it lives
and its keys. Its files are written with the atomic writes of configs/files.py."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cache_root() -> Path:
    """`$MOLS_CACHE`, else ~/.cache/mols."""
    return Path(os.environ.get("MOLS_CACHE", "~/.cache/mols")).expanduser()


def short_hash(*parts) -> str:
    """A 12-hex-digit digest of the parts' JSON form: a stable cache key."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
