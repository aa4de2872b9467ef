"""Where documents come from: local files, or the Hugging Face hub (C4, OpenWebText).

All of them become a `datasets.IterableDataset` of rows with a text column, opened lazily from
a small picklable `StreamSpec` (so DataLoader workers can open their own copy):

- local: `data.path` / `data.val_path` is a file, a directory (every data file below it, sorted)
  or a glob. Formats: C4 shards (`c4-train.*.json.gz`, JSON lines) and other JSON lines / JSON
  files -> the `json` builder; `.parquet` -> `parquet`; `.txt` -> `text`, where each blank-line
  separated paragraph is one document (so both a folder of short files and one long text file
  give sensible documents). `data.format: auto` picks the builder from the file extensions.
- c4: `allenai/c4`, config `en`, streamed; validation is its "validation" split.
- openwebtext: nanoGPT's split of `Skylion007/openwebtext` (downloaded, not streamed):
  `train_test_split(test_size=0.0005, seed=2357, shuffle=True)`, "test" is the validation part.
"""
from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from configs import UserError

FORMAT_BUILDERS = {"c4": "json", "jsonl": "json", "json": "json", "parquet": "parquet", "text": "text"}
EXTENSION_BUILDERS = {
    ".json": "json", ".jsonl": "json", ".json.gz": "json", ".jsonl.gz": "json",
    ".json.zst": "json", ".jsonl.zst": "json",
    ".parquet": "parquet",
    ".txt": "text", ".txt.gz": "text",
}
OPENWEBTEXT_SHARDS = 1024  # shards of the in-memory split: lets the shuffle reorder shards too
HUB_HINT = "use data.source: local (with data.path) or data.source: embedded"


@dataclass(frozen=True)
class StreamSpec:
    """Enough to open one split's documents in any process."""
    source: str                           # local | c4 | openwebtext
    split: str                            # train | val
    files: tuple[str, ...] = ()           # local only
    builder: str = ""                     # local only: json | parquet | text
    text_field: str = "text"

    def describe(self) -> str:
        if self.source == "local":
            shown = ", ".join(self.files[:2]) + (f", ... ({len(self.files)} files)" if len(self.files) > 2 else "")
            return f"local {self.builder} files: {shown}"
        return {"c4": "allenai/c4 (en)", "openwebtext": "Skylion007/openwebtext (nanoGPT split)"}[self.source] \
            + f" {self.split}"


def _builder_for(path: str) -> str | None:
    name = Path(path).name.lower()
    for extension in sorted(EXTENSION_BUILDERS, key=len, reverse=True):
        if name.endswith(extension):
            return EXTENSION_BUILDERS[extension]
    return None


def resolve_files(spec: str, what: str = "data.path") -> list[str]:
    """A file, a directory (its data files, recursively) or a glob -> a sorted list of files."""
    expanded = str(Path(spec).expanduser())
    if any(ch in spec for ch in "*?["):
        files = [f for f in glob.glob(expanded, recursive=True) if Path(f).is_file()]
    elif Path(expanded).is_dir():
        files = [str(f) for f in Path(expanded).rglob("*")
                 if f.is_file() and not f.name.startswith(".") and _builder_for(str(f))]
    elif Path(expanded).is_file():
        files = [expanded]
    else:
        raise UserError(f"{what}: {spec!r} is not a file, a directory or a glob that matches anything")
    if not files:
        raise UserError(f"{what}: no data files found at {spec!r} "
                                f"(known extensions: {', '.join(sorted(EXTENSION_BUILDERS))})")
    return sorted(files)


def local_spec(path: str | None, *, split: str, data_format: str, text_field: str, what: str) -> StreamSpec:
    if not path:
        raise UserError(f"{what} is required with data.source: local "
                         f"(a file, directory or glob of {'validation' if split == 'val' else 'training'} documents)")
    files = resolve_files(path, what)
    if data_format != "auto":
        if data_format not in FORMAT_BUILDERS:
            raise UserError(f"data.format: unknown format {data_format!r} (known: auto, {', '.join(FORMAT_BUILDERS)})")
        builder = FORMAT_BUILDERS[data_format]
    else:
        builders = {f: _builder_for(f) for f in files}
        unknown = [f for f, b in builders.items() if b is None]
        if unknown:
            raise UserError(f"{what}: cannot tell the format of {unknown[0]!r} from its extension; "
                             f"set data.format (c4, jsonl, json, parquet or text)")
        kinds = sorted(set(builders.values()))
        if len(kinds) > 1:
            raise UserError(f"{what}: files of different formats ({', '.join(kinds)}); "
                             f"point it at one kind or set data.format")
        builder = kinds[0]
    field = "text" if builder == "text" else text_field  # the text builder always names it "text"
    return StreamSpec(source="local", split=split, files=tuple(files), builder=builder, text_field=field)


def hub_spec(source: str, *, split: str, text_field: str = "text") -> StreamSpec:
    return StreamSpec(source=source, split=split, text_field=text_field)


def open_stream(spec: StreamSpec):
    """The split's rows as a `datasets.IterableDataset`, in the source's own order."""
    import datasets

    if spec.source == "local":
        kwargs = {"sample_by": "paragraph"} if spec.builder == "text" else {}
        try:
            return datasets.load_dataset(spec.builder, data_files=list(spec.files), split="train",
                                         streaming=True, **kwargs)
        except Exception as err:
            raise UserError(f"could not read {spec.describe()}: {type(err).__name__}: {err}") from None
    try:
        if spec.source == "c4":
            return datasets.load_dataset("allenai/c4", "en", split="train" if spec.split == "train" else "validation",
                                         streaming=True)
        if spec.source == "openwebtext":
            full = datasets.load_dataset("Skylion007/openwebtext", split="train")
            part = openwebtext_split(full)["train" if spec.split == "train" else "test"]
            return part.to_iterable_dataset(num_shards=min(OPENWEBTEXT_SHARDS, max(len(part), 1)))
    except Exception as err:
        raise UserError(f"could not open {spec.describe()} from the Hugging Face hub "
                         f"({type(err).__name__}: {_first_line(err)}); offline? {HUB_HINT}") from None
    raise UserError(f"data.source: unknown source {spec.source!r} (embedded, local, c4 or openwebtext)")


def openwebtext_split(dataset):
    """nanoGPT's prepare.py split: 0.05% held out with seed 2357; "test" is the validation set."""
    return dataset.train_test_split(test_size=0.0005, seed=2357, shuffle=True)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
