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

A local row the reader cannot take (not JSON, not UTF-8) is a UserError naming its file and line
(`read_error`): the files are scanned for it only after the reader failed, never ahead.
"""
from __future__ import annotations

import bz2
import glob
import gzip
import json
import lzma
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
        except StopIteration:  # the json builder found no first row to learn the columns from
            what = "data.path" if spec.split == "train" else "data.val_path"
            files = spec.files[0] if len(spec.files) == 1 else f"{len(spec.files)} files ({spec.files[0]}, ...)"
            raise UserError(f"{what}: {files}: no documents (empty)") from None
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


def read_error(spec: StreamSpec, err: Exception) -> UserError | None:
    """What to tell the user when reading a local split's rows failed with `err` (the reader's
    error says neither the file nor the line): the first bad line of its files, found by reading
    them again line by line (only now, after the failure: the normal path does not scan), else
    the reader's error in one line when it is a data error; None when `err` is not about the data
    (a bug: it keeps its traceback)."""
    if spec.source != "local":
        return None
    problem = find_bad_line(spec)
    if problem is not None:
        return UserError(problem)
    if _is_data_error(err):
        return UserError(f"could not read {spec.describe()}: {type(err).__name__}: {_first_line(err)}")
    return None


def _is_data_error(err: Exception) -> bool:
    import pyarrow

    return isinstance(err, (pyarrow.ArrowException, UnicodeError))


def find_bad_line(spec: StreamSpec) -> str | None:
    """`<file>: line <n> is not valid JSON (<why>)` for the first line of the split's files (in
    their sorted order) that the reader cannot take: bytes that are not UTF-8, a lone surrogate,
    text that is not JSON, JSON that is not an object. Text files: the first line that is not
    UTF-8. None when every line reads (or the files are of another format)."""
    for path in spec.files:
        if spec.builder == "json":
            problem = _bad_json_line(path)
        elif spec.builder == "text":
            problem = _bad_text_line(path)
        else:
            problem = None
        if problem is not None:
            return problem
    return None


_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _open_binary(path: str):
    """The file's (decompressed) bytes; None when the compression's module is not installed."""
    suffix = Path(path).suffix.lower()
    if suffix == ".zst":
        try:
            import zstandard
        except ImportError:
            return None
        return zstandard.open(path, "rb")
    return _OPENERS.get(suffix, open)(path, "rb")


def _utf8_problem(line: bytes, err: UnicodeDecodeError) -> str:
    return f"byte 0x{line[err.start]:02x} at byte {err.start + 1} of the line is not valid UTF-8"


def _json_problem(err: json.JSONDecodeError) -> str:
    return f"{err.msg.removesuffix(' at')} at column {err.colno}"  # some of json's messages end in "at"


def _bad_text_line(path: str) -> str | None:
    handle = _open_binary(path)
    if handle is None:
        return None
    with handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                return f"{path}: line {number} is not valid UTF-8 ({_utf8_problem(line, err)})"
    return None


def _bad_json_line(path: str) -> str | None:
    handle = _open_binary(path)
    if handle is None:
        return None
    first = True
    with handle:
        for number, raw in enumerate(handle, 1):
            line = raw[3:] if number == 1 and raw.startswith(b"\xef\xbb\xbf") else raw  # a UTF-8 BOM
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                return f"{path}: line {number} is not valid JSON ({_utf8_problem(line, err)})"
            if first and text.lstrip().startswith("["):  # one JSON array, not JSON lines
                return _bad_json_document(path)
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                if first:  # perhaps one JSON document over several lines
                    return _bad_json_document(path)
                return f"{path}: line {number} is not valid JSON ({_json_problem(err)})"
            first = False
            if not isinstance(row, dict):
                return f"{path}: line {number} is not valid JSON for a row (a {type(row).__name__}, not an object)"
            if _has_surrogate(row):
                return f"{path}: line {number} is not valid JSON (a lone surrogate escape such as \\ud800: not Unicode)"
    return None


def _bad_json_document(path: str) -> str | None:
    """A file that is one JSON value (an array of rows, or an object): where it fails to parse."""
    handle = _open_binary(path)
    if handle is None:
        return None
    with handle:
        data = handle.read()
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        number = data.count(b"\n", 0, line_start) + 1
        err.start -= line_start
        return f"{path}: line {number} is not valid JSON ({_utf8_problem(data[line_start:], err)})"
    except json.JSONDecodeError as err:
        return f"{path}: line {err.lineno} is not valid JSON ({_json_problem(err)})"
    if _has_surrogate(value):
        return f"{path}: the file is not valid JSON (a lone surrogate escape such as \\ud800: not Unicode)"
    return None


def _has_surrogate(value) -> bool:
    """Whether a parsed JSON value holds a lone surrogate (valid JSON escapes, but not text)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def openwebtext_split(dataset):
    """nanoGPT's prepare.py split: 0.05% held out with seed 2357; "test" is the validation set."""
    return dataset.train_test_split(test_size=0.0005, seed=2357, shuffle=True)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
