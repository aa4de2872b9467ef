"""Tokenizers: `embedded-<N>k` (a byte-level BPE trained here, offline) or any Hugging Face tokenizer.

`embedded-32k` / `embedded-8k` train a GPT-2-style byte-level BPE with the `tokenizers` library on
the embedded corpus's train split, once, and cache it as `<cache>/tokenizers/<spec>-<corpus key>/
tokenizer.json`. Training is deterministic (the same file bytes every time) and takes a few
seconds. Special tokens: `<unk>` 0, `<s>` 1, `</s>` 2 (eos), `<pad>` 3. Byte-level BPE never needs
`<unk>`; it exists so that out-of-range ids have somewhere to go (see `DocumentEncoder`).

Any other spec goes to `AutoTokenizer.from_pretrained` (a hub name such as t5-base, or a local
directory). Whatever the source, the returned tokenizer has an eos token and a pad token (the eos
token when the tokenizer defines none).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Iterable

import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from configs import UserError, atomic_path
from data.cache import cache_root

EMBEDDED_SPEC = re.compile(r"embedded-(\d+)k")
ENCODE_CHUNK = 2000  # documents per tokenizer call when tokenizing ahead (DocumentEncoder.encode_all)
SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}


def get_tokenizer(spec: str) -> PreTrainedTokenizerBase:
    """The tokenizer named by `data.tokenizer`: "embedded-<N>k", a hub name or a local path."""
    match = EMBEDDED_SPEC.fullmatch(spec)
    if match:
        tokenizer = _embedded_tokenizer(spec, int(match.group(1)) * 1000)
    else:
        tokenizer = _pretrained_tokenizer(spec)
    _ensure_eos_and_pad(tokenizer)
    return tokenizer


def embedded_tokenizer_path(spec: str) -> Path:
    from data.embedded import corpus_key
    return cache_root() / "tokenizers" / f"{spec}-{corpus_key()}" / "tokenizer.json"


def _embedded_tokenizer(spec: str, vocab_size: int) -> PreTrainedTokenizerBase:
    if vocab_size < 1000:
        raise UserError(f"tokenizer {spec!r}: the vocabulary must be at least 1k tokens")
    path = embedded_tokenizer_path(spec)
    if not path.is_file():
        _train_byte_level_bpe(path, vocab_size)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path), **SPECIAL_TOKENS)
    tokenizer.name_or_path = spec
    return tokenizer


def _train_byte_level_bpe(path: Path, vocab_size: int) -> None:
    from data.embedded import load_embedded_corpus, read_texts

    corpus = load_embedded_corpus()
    train_byte_level_bpe(read_texts(corpus.train_path), vocab_size, path, length=corpus.manifest["documents"]["train"])


def train_byte_level_bpe(texts, vocab_size: int, path: Path, length: int | None = None) -> None:
    """A GPT-2-style byte-level BPE with our special tokens (<unk> 0, <s> 1, </s> 2, <pad> 3),
    trained deterministically on `texts` and saved (atomically) as a tokenizers JSON file."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        special_tokens=[SPECIAL_TOKENS[k] for k in ("unk_token", "bos_token", "eos_token", "pad_token")],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=length)
    with atomic_path(path) as tmp:
        tokenizer.save(str(tmp))


def _pretrained_tokenizer(spec: str) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(spec)
    except Exception as err:  # offline hub misses surface as OSError, bad folders as ValueError etc.
        reason = (str(err).strip().splitlines() or [""])[0]
        raise UserError(
            f"could not load tokenizer {spec!r} ({type(err).__name__}: {reason}). Without access to the "
            f"Hugging Face hub, use a local tokenizer directory or data.tokenizer: embedded-32k "
            f"(trained offline on the embedded corpus)") from None


def _ensure_eos_and_pad(tokenizer: PreTrainedTokenizerBase) -> None:
    if tokenizer.eos_token is None:
        if tokenizer.sep_token is not None:  # BERT-style tokenizers end sequences with [SEP]
            tokenizer.eos_token = tokenizer.sep_token
        else:  # grows the vocabulary by one: len(tokenizer) counts it
            tokenizer.add_special_tokens({"eos_token": SPECIAL_TOKENS["eos_token"]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def check_vocabulary(tokenizer: PreTrainedTokenizerBase, model_vocab: int) -> str | None:
    """A model vocabulary that would cut ids the tokenizer produces from text is a UserError; one
    that only cuts added special tokens (t5-base's 100 sentinels above 32,000) is allowed, and the
    returned note says so (None when nothing is cut)."""
    if model_vocab >= len(tokenizer):
        return None
    special = set(tokenizer.added_tokens_decoder) | set(tokenizer.all_special_ids)
    cut = [i for i in range(model_vocab, len(tokenizer)) if i not in special]
    if cut:
        raise UserError(f"model vocabulary ({model_vocab}) is smaller than the tokenizer's ({len(tokenizer)}): "
                        f"{len(cut):,} ids that text produces (from {cut[0]} on) would all become one token; "
                        f"raise model.vocab_size or pick a tokenizer that fits")
    return (f"model vocabulary {model_vocab} < tokenizer's {len(tokenizer)}: ids >= {model_vocab} are added "
            f"special tokens that text never produces; they map to unk")


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A digest of what decides token ids (vocabulary, merges, normalisation, eos/pad/unk), used
    as the cache key of pre-tokenized data and to check that a resumed stream uses the same one."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        content = json.loads(backend.to_str())
        content.pop("truncation", None)  # per-call settings that transformers leaves behind
        content.pop("padding", None)
    else:
        content = sorted(tokenizer.get_vocab().items())
    specials = [tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id, type(tokenizer).__name__]
    blob = json.dumps([content, specials], sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


class DocumentEncoder:
    """Text -> token ids without special tokens, plus the ids the sequence builder needs.

    Uses the fast backend directly when there is one (no length warnings, no per-call padding
    state); it is picklable, so DataLoader workers can carry it. `vocab_limit`: ids at or above
    it (e.g. t5-base's 100 sentinel tokens above a 32,000-row embedding) become the unk id, or
    the eos id when unk is itself out of range.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, vocab_limit: int | None = None):
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id)
        self.vocab_size = len(tokenizer)
        self.vocab_limit = vocab_limit
        self.replacement_id = None
        if vocab_limit is not None and vocab_limit < self.vocab_size:
            unk = tokenizer.unk_token_id
            self.replacement_id = int(unk) if unk is not None and unk < vocab_limit else self.eos_id
            if self.replacement_id >= vocab_limit:
                raise UserError(f"model vocabulary ({vocab_limit}) is smaller than the tokenizer's "
                                 f"eos id ({self.eos_id}); raise model.vocab_size")
        self._slow_tokenizer = None
        self._backend = None
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            from tokenizers import Tokenizer
            self._backend = Tokenizer.from_str(backend.to_str())  # private copy: no shared state
            self._backend.no_truncation()
            self._backend.no_padding()
        else:
            self._slow_tokenizer = tokenizer

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        if not texts:
            return []
        if self._backend is not None:
            encode = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
            id_lists = [e.ids for e in encode(texts, add_special_tokens=False)]
        else:
            id_lists = self._slow_tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return [np.asarray(ids, dtype=np.int64) for ids in id_lists]

    def encode_all(self, texts: Iterable[str]) -> list[np.ndarray]:
        """`encode` for any number of texts (an iterator is read as it goes), ENCODE_CHUNK texts
        per tokenizer call."""
        texts = iter(texts)
        ids: list[np.ndarray] = []
        while chunk := list(itertools.islice(texts, ENCODE_CHUNK)):
            ids += self.encode(chunk)
        return ids

    def limit(self, ids: np.ndarray) -> np.ndarray:
        """Map ids the model cannot embed to the replacement id."""
        if self.replacement_id is None:
            return ids
        return np.where(ids >= self.vocab_limit, self.replacement_id, ids)
