"""Token shards: documents tokenized once (scripts/pretokenize.py), read memory-mapped.

Layout of a shard directory:

    shard-00000.tokens.npy    all documents' ids back to back (uint16, or uint32 for vocabularies
                              larger than 65536)
    shard-00000.offsets.npy   int64[documents + 1]: document j is tokens[offsets[j]:offsets[j+1]]
    shard-00000.json          the shard's counts; written after its two arrays (marks it done)
    ...
    plan.json                 what is being tokenized (written first; a resumed run must match it)
    manifest.json             written last: format version, tokenizer spec + fingerprint, source,
                              dtype, per-shard document and token counts

Shard k holds rows [k * docs_per_shard, (k + 1) * docs_per_shard) of the source, in source order,
minus blank rows, so a shard's content never depends on the number of workers or on a resume.

A `Shard` is one pair of arrays (`<stem>.tokens.npy`, `<stem>.offsets.npy`): a shard of such a
directory, and also each split of the embedded corpus's token cache (data/stream.py,
`<corpus dir>/tokens-<fingerprint>/train.tokens.npy` ...).

Reading: `ShardSet(directory)` validates the manifest against the files and memory-maps every
shard (`np.load(mmap_mode="r")`); `ShardSet.document(i)` is random access to document i of the
whole set (shards in order). `check_tokenizer(shards, tokenizer)` refuses shards made with another
tokenizer. `shard_documents(...)` is one rank's endless, shuffled, resumable document stream, with
the semantics of `data.stream._embedded_documents`.

Order: epoch e of stream `seed_offset` is a pseudo-random permutation P_e of the N documents of the
set, given by a keyed bijection (a 6-round Feistel network over the smallest even power of two
>= N, with cycle walking back into [0, N)), keys derived from `data.order.epoch_seed(shuffle_seed,
seed_offset, e)`. Rank r of W takes positions r, r + W, r + 2W, ... of P_e, cut to N // W
documents per rank (ranks stay in step and never share a document within an epoch); document k of
rank r in epoch e is document P_e(k * W + r) of the set. P_e is computed per position, in blocks,
and never materialised: memory is O(block) (the shards themselves are memory-mapped), and resuming
at Cursor(epoch, docs, offset) costs the same at docs = 10 as at docs = 10,000,000 (nothing is
re-read or skipped). The permutation is not numpy's `permutation` (the embedded stream's order):
the same documents in another order.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from configs import atomic_path, write_json_atomic
from data.order import check_ranks, documents_per_rank, epoch_seed
from data.sequences import Cursor, Document

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PLAN = "plan.json"
FEISTEL_ROUNDS = 6
ORDER_BLOCK = 1024          # positions of a rank's order computed at once


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


def shard_stem(k: int) -> str:
    return f"shard-{k:05d}"


@dataclass(frozen=True)
class Shard:
    """Documents' token ids back to back, and where each starts: the arrays of `<stem>.tokens.npy`
    and `<stem>.offsets.npy` (a shard of a token shard directory, or one split of the embedded
    corpus's token cache)."""
    tokens: np.ndarray    # all documents' ids back to back (uint16 or uint32; int32 in older embedded caches)
    offsets: np.ndarray   # int64[documents + 1]: document j is tokens[offsets[j]:offsets[j+1]]

    @classmethod
    def from_documents(cls, ids: Sequence[np.ndarray], dtype: np.dtype) -> Shard:
        lengths = np.fromiter((len(a) for a in ids), dtype=np.int64, count=len(ids))
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = np.concatenate(ids).astype(dtype, copy=False) if len(ids) else np.zeros(0, dtype)
        return cls(tokens, offsets)

    @classmethod
    def load(cls, stem: str | Path) -> Shard:
        """Both arrays, memory-mapped (OSError / ValueError when missing or unreadable)."""
        return cls(np.load(f"{stem}.tokens.npy", mmap_mode="r"), np.load(f"{stem}.offsets.npy", mmap_mode="r"))

    def save(self, stem: str | Path) -> None:
        """Write both arrays, each atomically (tokens first)."""
        for suffix, array in ((".tokens.npy", self.tokens), (".offsets.npy", self.offsets)):
            with atomic_path(Path(f"{stem}{suffix}")) as tmp, open(tmp, "wb") as f:
                np.save(f, array)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def document(self, j: int) -> np.ndarray:
        return self.tokens[int(self.offsets[j]): int(self.offsets[j + 1])]

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])


# --------------------------------------------------------------------------------------------
# Writing (used by scripts/pretokenize.py; the worker function lives here so that worker
# processes can import it)
# --------------------------------------------------------------------------------------------

def shard_done(directory: Path, k: int) -> dict | None:
    """The counts of shard k if it was completely written, else None."""
    stem = Path(directory) / shard_stem(k)
    info = stem.with_name(stem.name + ".json")
    if not info.is_file():
        return None
    for suffix in (".tokens.npy", ".offsets.npy"):
        if not stem.with_name(stem.name + suffix).is_file():
            return None
    try:
        return json.loads(info.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_shard(directory: Path, k: int, ids: Sequence[np.ndarray], dtype: np.dtype, rows: int) -> dict:
    """Write shard k from its documents' ids: the two arrays, then its json (each atomically)."""
    shard = Shard.from_documents(ids, dtype)
    return write_shard_arrays(directory, k, shard.tokens, shard.offsets, rows)


def write_shard_arrays(directory: Path, k: int, tokens: np.ndarray, offsets: np.ndarray, rows: int) -> dict:
    """Write shard k from its flat token array and int64 document offsets (offsets[0] = 0,
    offsets[-1] = len(tokens)): the two arrays, then its json (each atomically)."""
    stem = Path(directory) / shard_stem(k)
    Shard(tokens, offsets).save(stem)
    info = {"shard": k, "rows": rows, "documents": len(offsets) - 1, "tokens": int(offsets[-1])}
    write_json_atomic(stem.with_name(stem.name + ".json"), info)
    return info


def tokenize_shard(job: tuple) -> dict:
    """Worker job: (directory, k, encoder, dtype name, texts) -> the shard's counts. Blank or
    non-string rows are dropped (as the streamed sources do)."""
    directory, k, encoder, dtype, texts = job
    kept = [t for t in texts if isinstance(t, str) and t.strip()]
    return write_shard(Path(directory), k, encoder.encode_all(kept), np.dtype(dtype), rows=len(texts))


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

class ShardSet:
    """All shards of a directory as one sequence of documents (`len`, `document(i)`, `n_tokens`:
    the access one `Shard` gives). Raises ValueError when the manifest is missing
    (an unfinished pretokenize run), of another format, or disagrees with the files."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        m = self.manifest
        self.dtype = np.dtype(m["dtype"])
        self.shards: list[Shard] = []
        for entry in m["shards"]:
            stem = self.directory / shard_stem(int(entry["shard"]))
            try:
                shard = Shard.load(stem)
            except (OSError, ValueError) as err:
                raise ValueError(f"token shards in {self.directory}: cannot read {stem.name} "
                                 f"({type(err).__name__}: {err}); re-run scripts/pretokenize.py") from None
            tokens, offsets = shard.tokens, shard.offsets
            problems = []
            if tokens.dtype != self.dtype or tokens.ndim != 1:
                problems.append(f"tokens are {tokens.dtype}[{tokens.ndim}d], manifest says {self.dtype}")
            if offsets.dtype != np.int64 or offsets.shape != (int(entry["documents"]) + 1,):
                problems.append(f"{offsets.shape[0] - 1 if offsets.ndim == 1 else '?'} document offsets, "
                                f"manifest says {entry['documents']} documents")
            elif int(offsets[-1]) != len(tokens) or len(tokens) != int(entry["tokens"]) or int(offsets[0]) != 0:
                problems.append(f"{len(tokens)} tokens, offsets end at {int(offsets[-1])}, "
                                f"manifest says {entry['tokens']}")
            if problems:
                raise ValueError(f"token shards in {self.directory}: {stem.name} does not match the manifest: "
                                 + "; ".join(problems) + "; re-run scripts/pretokenize.py into a fresh directory")
            self.shards.append(shard)
        counts = np.array([len(s) for s in self.shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # one int per shard

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def n_tokens(self) -> int:
        return sum(s.n_tokens for s in self.shards)

    @property
    def fingerprint(self) -> str:
        return self.manifest["tokenizer"]["fingerprint"]

    def locate(self, i: int) -> tuple[int, int]:
        """(shard, document within it) of document i."""
        if not 0 <= i < len(self):
            raise IndexError(f"document {i} out of range for {len(self)} documents")
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return k, i - int(self.starts[k])

    def document(self, i: int) -> np.ndarray:
        k, j = self.locate(int(i))
        return self.shards[k].document(j)

    def documents(self, indices: np.ndarray) -> list[np.ndarray]:
        """Several documents at once (one searchsorted for the block)."""
        indices = np.asarray(indices, dtype=np.int64)
        ks = np.searchsorted(self.starts, indices, side="right") - 1
        return [self.shards[k].document(int(i - self.starts[k])) for k, i in zip(ks.tolist(), indices.tolist())]


def read_manifest(directory: str | Path) -> dict:
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        hint = (" (an unfinished scripts/pretokenize.py run: re-run it with the same arguments to finish)"
                if (directory / PLAN).is_file() else " (not a token shard directory; make one with scripts/pretokenize.py)")
        raise ValueError(f"token shards: {path} does not exist{hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"token shards: cannot read {path}: {err}") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise ValueError(f"token shards: {path} has format version {version!r}; this reader knows "
                         f"version {FORMAT_VERSION}: re-run scripts/pretokenize.py")
    missing = [key for key in ("tokenizer", "dtype", "shards", "documents", "tokens", "source") if key not in manifest]
    if missing or "fingerprint" not in manifest.get("tokenizer", {}):
        raise ValueError(f"token shards: {path} lacks {', '.join(missing) or 'tokenizer.fingerprint'}")
    return manifest


def check_tokenizer(shards: ShardSet | dict | str | Path, tokenizer) -> None:
    """Raise ValueError unless the shards were made with this tokenizer (same fingerprint)."""
    from data.tokenizer import tokenizer_fingerprint

    if isinstance(shards, ShardSet):
        manifest, where = shards.manifest, shards.directory
    elif isinstance(shards, dict):
        manifest, where = shards, "the given manifest"
    else:
        manifest, where = read_manifest(shards), shards
    made_with = manifest["tokenizer"]
    fingerprint = tokenizer_fingerprint(tokenizer)
    if made_with["fingerprint"] != fingerprint:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(
            f"token shards in {where} were made with tokenizer {made_with.get('spec')!r} "
            f"(fingerprint {made_with['fingerprint']}), but this run uses {name!r} (fingerprint "
            f"{fingerprint}): set data.tokenizer to {made_with.get('spec')!r}, or re-run "
            f"scripts/pretokenize.py --tokenizer {name} into another directory")


# --------------------------------------------------------------------------------------------
# Order
# --------------------------------------------------------------------------------------------

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


class EpochPermutation:
    """A seeded bijection of [0, n), evaluated per position: `perm(positions) -> documents`.

    Balanced Feistel network on 2 * h bits (4^h >= n, the smallest such), FEISTEL_ROUNDS rounds
    with splitmix64 round functions keyed from `seed`; values that land outside [0, n) are
    encrypted again (cycle walking), which keeps it a bijection of [0, n). 4^h < 4n, so a walk
    takes fewer than 4 steps on average. Memory: the keys only.
    """

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError("a permutation needs at least one element")
        self.n = int(n)
        self.half = max(1, ((self.n - 1).bit_length() + 1) // 2)   # 4^half > n - 1, exactly
        self.mask = np.uint64((1 << self.half) - 1)
        self.keys = np.random.SeedSequence(int(seed)).generate_state(FEISTEL_ROUNDS, dtype=np.uint64)

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        h = np.uint64(self.half)
        left, right = x >> h, x & self.mask
        with np.errstate(over="ignore"):
            for key in self.keys:
                left, right = right, left ^ (_mix(right ^ key) & self.mask)
        return (left << h) | right

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        x = np.asarray(positions, dtype=np.uint64)
        if x.size and (int(x.max()) >= self.n):
            raise IndexError(f"position out of range for a permutation of {self.n}")
        y = self._encrypt(x)
        out = y >= np.uint64(self.n)
        while out.any():
            y[out] = self._encrypt(y[out])
            out = y >= np.uint64(self.n)
        return y.astype(np.int64)


def shard_documents(directory: str | Path | ShardSet, start: Cursor = Cursor(), *, rank: int, world_size: int,
                    shuffle_seed: int, seed_offset: int) -> Iterator[Document]:
    """One rank's endless document stream over a shard directory, from `start`.

    Epoch e's order is `EpochPermutation(N, epoch_seed(shuffle_seed, seed_offset, e))`; rank r
    takes positions r, r + W, ... of it, N // W of them; `Document.index` is the position in this
    rank's order and `Document.ids` the token ids (a memory-mapped slice; uint16 or uint32).
    Starting at Cursor(epoch, docs, offset) jumps straight to document `docs` of `epoch` (the
    offset is the sequence builder's business)."""
    check_ranks(rank, world_size, seed_offset)
    shards = directory if isinstance(directory, ShardSet) else ShardSet(directory)
    n = len(shards)
    per_rank = documents_per_rank(n, world_size, f"token shards in {shards.directory}")
    if start.epoch < 0 or start.docs < 0:
        raise ValueError(f"invalid cursor {start}")
    epoch, first = start.epoch, start.docs
    while True:
        perm = EpochPermutation(n, epoch_seed(shuffle_seed, seed_offset, epoch))
        for block in range(first, per_rank, ORDER_BLOCK):
            ks = np.arange(block, min(block + ORDER_BLOCK, per_rank), dtype=np.int64)
            for k, ids in zip(ks.tolist(), shards.documents(perm(ks * world_size + rank))):
                yield Document(epoch, k, ids)
        epoch, first = epoch + 1, 0
