"""Corpus sources: where a corpus's documents come from (stdlib, a text file or folder, JSONL, a Hugging Face dataset).

Each source is a :class:`Source`: document ids and a lazy ``load(i)``; :func:`open_source` turns a corpus spec
into one. Cutting documents into token windows is :mod:`gammalens.corpus.windows`.

Files are read by :func:`decode_file`: UTF-8 with or without a byte-order mark, UTF-16 and UTF-32 by their mark, and
otherwise a single-byte encoding only where it is unambiguous (:func:`single_byte_reading`). A file read in anything
but plain UTF-8 gets a one-line ``gammalens: note:`` on stderr naming it and its encoding; a folder's file that cannot
be read as text (binary, undecodable, unreadable) is skipped and counted in the source's :class:`ReadLog`, which goes
into the corpus manifest; a corpus that is one file is refused instead, in one line naming the encoding.
"""

from __future__ import annotations

import codecs
import json
import os
import platform
import re
import sys
import sysconfig
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gammalens.errors import CorpusError

__all__ = ["Decoded", "ReadLog", "Source", "decode_file", "open_source", "read_text", "single_byte_reading",
           "stdlib_source"]

_STDLIB_SKIP = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"})

# byte-order marks, longest first: the UTF-32-LE mark begins with the UTF-16-LE one
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32-LE"), (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32-BE"),
         (codecs.BOM_UTF8, "utf-8", "UTF-8"), (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16-LE"),
         (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16-BE"))
# the single-byte encodings a non-UTF-8 file is read in: codec and name, in the order of preference. Western, Central
# European, Cyrillic, Greek and Mac Roman; a file is read only when every one of these that gives text gives the same
# text (single_byte_reading)
SINGLE_BYTE = (("latin_1", "Latin-1 (ISO-8859-1)"), ("cp1252", "Windows-1252"), ("iso8859_15", "ISO-8859-15"),
               ("cp1250", "Windows-1250"), ("iso8859_2", "ISO-8859-2"), ("cp1251", "Windows-1251"),
               ("koi8_r", "KOI8-R"), ("cp1253", "Windows-1253"), ("mac_roman", "Mac Roman"))
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_IN_WORD = frozenset("\u2019\u2010\u2011\u00b7\u00ad")  # ’ ‐ ‑ · and the soft hyphen may sit inside a word
_LATIN_SIGNS = frozenset("\u00aa\u00ba\u00b5")  # ª º µ: letters of Latin text whose names do not say LATIN
NOTICES_PER_SOURCE = 5  # per-file notices printed for one source; the manifest lists every file


@dataclass(frozen=True)
class Decoded:
    """One file as read: its ``text`` and ``encoding``, or ``text=None`` with a ``reason`` (``'binary'``,
    ``'undecodable'``, ``'unreadable'``) and a one-line ``detail``."""

    text: str | None
    encoding: str | None = None
    reason: str | None = None
    detail: str = ""


@dataclass
class ReadLog:
    """What reading a source's documents met so far: files read in an encoding other than plain UTF-8, and files
    skipped as not text, with why. Only documents that were read count (windows are cut lazily)."""

    decoded: list[tuple[str, str]] = field(default_factory=list)  # (doc id, encoding)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (doc id, reason, detail)

    def reasons(self) -> dict[str, int]:
        """Skipped files per reason, e.g. ``{'binary': 2, 'undecodable': 1}``."""
        return dict(sorted(Counter(reason for _, reason, _ in self.skipped).items()))

    def summary(self) -> str:
        """``'3 files skipped as not text (2 binary, 1 undecodable)'``, or '' when none was."""
        n = len(self.skipped)
        if not n:
            return ""
        reasons = ", ".join(f"{k} {r}" for r, k in self.reasons().items())
        return f"{n} file{'s' if n != 1 else ''} skipped as not text ({reasons})"


@dataclass(frozen=True)
class Source:
    """Documents of a corpus, read lazily: ``load(i)`` is the text of ``doc_ids[i]`` or None (not text; then
    ``log`` says why)."""

    name: str
    doc_ids: list[str]
    load: Callable[[int], str | None]
    description: str
    log: ReadLog = field(default_factory=ReadLog, compare=False)


def open_source(spec: str) -> Source:
    if spec == "stdlib":
        return stdlib_source()
    if spec.startswith("hf:"):
        return hf_source(spec)
    head, _, field = spec.rpartition(":")
    if head.endswith(".jsonl") and Path(head).is_file():
        return jsonl_source(Path(head), field or "text")
    path = Path(spec)
    if path.is_dir() and is_saved_dataset(path):
        return hf_source(f"hf:{spec}")
    if path.is_dir():
        return folder_source(path)
    if path.is_file() and path.name.endswith(".jsonl"):
        return jsonl_source(path, "text")
    if path.is_file():
        log = ReadLog()
        return Source(path.name, [path.name], _file_loader(lambda _: path, [path.name], log, refuse=True),
                      f"text file {path}", log)
    raise CorpusError(
        f"corpus {spec!r} not found: give 'stdlib', 'random', an existing file or folder, "
        "PATH.jsonl[:FIELD], or hf:NAME[:CONFIG][:SPLIT][:FIELD]"
    )


def read_text(path: Path) -> str | None:
    """The file's text (:func:`decode_file`), or None when it is not text."""
    return decode_file(path).text


def decode_file(path: Path) -> Decoded:
    """Read ``path`` as text: UTF-8 (a byte-order mark dropped), UTF-16 / UTF-32 by their byte-order mark, else the
    one reading that every plausible single-byte encoding agrees on (:func:`single_byte_reading`).

    >>> decode_file(Path("notes.txt")).encoding                  # doctest: +SKIP
    'UTF-16-LE (byte-order mark)'
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        return Decoded(None, reason="unreadable", detail=err.strerror or type(err).__name__)
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            try:
                text = data[len(bom):].decode(codec)
            except UnicodeDecodeError as err:
                return Decoded(None, reason="undecodable", detail=f"starts with a {name} byte-order mark but is not "
                                                                  f"valid {name} (byte {err.start + len(bom)})")
            if "\0" in text:
                return Decoded(None, reason="binary", detail=f"{name} with NUL characters")
            return Decoded(text, f"{name} (byte-order mark)" if name != "UTF-8" else "UTF-8 with a byte-order mark")
    if b"\0" in data:
        return Decoded(None, reason="binary", detail="NUL bytes (binary, or UTF-16/32 without a byte-order mark)")
    try:
        return Decoded(data.decode("utf-8"), "UTF-8")
    except UnicodeDecodeError as err:
        bad = f"byte 0x{data[err.start]:02X} at offset {err.start} is not UTF-8"
    text, name, problem = single_byte_reading(data)
    if text is not None:
        return Decoded(text, name)
    return Decoded(None, reason="undecodable", detail=f"{bad}, and {problem}")


def single_byte_reading(data: bytes) -> tuple[str | None, str, str]:
    """``(text, encoding, '')`` when the single-byte encodings of :data:`SINGLE_BYTE` that read ``data`` as text all
    read the same text, else ``(None, '', why)``: none reads it as text, or two read it differently.

    Bytes alone never name a single-byte encoding; they do not need to when the encodings agree. A reading is text
    unless it holds control characters, a letter next to a letter of another script (Latin ``caf`` beside Cyrillic
    ``й``) or a symbol between two letters (``Gr‰n``).

    >>> single_byte_reading("Größe".encode("latin-1"))[:2]
    ('Größe', 'Latin-1 (ISO-8859-1)')
    >>> single_byte_reading("très".encode("latin-1"))[2].split(";")[0]
    "its single-byte encoding is ambiguous: Latin-1 (ISO-8859-1) reads 'très', Windows-1250 reads 'trčs'"
    """
    readings = []
    for codec, name in SINGLE_BYTE:
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        if _reads_as_text(text):
            readings.append((text, name))
    if not readings:
        return None, "", "no single-byte encoding checked reads it as text"
    first, name = readings[0]
    other = next((r for r in readings[1:] if r[0] != first), None)
    if other is None:
        return first, name, ""
    i = next(k for k, (a, b) in enumerate(zip(first, other[0], strict=True)) if a != b)
    return None, "", (f"its single-byte encoding is ambiguous: {name} reads {_word(first, i)!r}, {other[1]} reads "
                      f"{_word(other[0], i)!r}; convert it to UTF-8 from the encoding it was written in "
                      f"(iconv -f ENCODING -t UTF-8)")


def _script(ch: str) -> str:
    if ch.isascii() or ch in _LATIN_SIGNS:
        return "LATIN"
    return unicodedata.name(ch, "UNKNOWN").split()[0]


def _reads_as_text(text: str) -> bool:
    """No control characters beyond whitespace, no letter beside a letter of another script, no symbol inside a word."""
    n = len(text)
    for m in _NON_ASCII.finditer(text):
        i, ch = m.start(), m.group()
        category = unicodedata.category(ch)
        if category in ("Cc", "Co", "Cn"):
            return False
        neighbours = [text[j] for j in (i - 1, i + 1) if 0 <= j < n and text[j].isalpha()]
        if category[0] == "L":
            if any(_script(nb) != _script(ch) for nb in neighbours):
                return False
        elif len(neighbours) == 2 and not ch.isspace() and ch not in _IN_WORD:
            return False
    return True


def _word(text: str, i: int) -> str:
    """The whitespace-delimited word of ``text`` around index ``i``, at most 24 characters."""
    start = max(text.rfind(" ", 0, i), text.rfind("\n", 0, i)) + 1
    ends = [e for e in (text.find(" ", i), text.find("\n", i)) if e != -1]
    return text[start:min(ends, default=len(text))][:24]


def _file_loader(path_of: Callable[[int], Path], doc_ids: list[str], log: ReadLog,
                 refuse: bool = False) -> Callable[[int], str | None]:
    """``load(i)`` of a source of files: the text of ``path_of(i)``, a notice on stderr when it is not plain UTF-8;
    a file that is not text is logged and skipped (None), or refused (CorpusError) with ``refuse``."""
    def load(i: int) -> str | None:
        path = path_of(i)
        got = decode_file(path)
        if got.text is None:
            if refuse:
                raise CorpusError(f"cannot read corpus file {path} as text: {got.detail}")
            log.skipped.append((doc_ids[i], got.reason or "unreadable", got.detail))
            return None
        if got.encoding != "UTF-8":
            log.decoded.append((doc_ids[i], got.encoding or ""))
            if len(log.decoded) <= NOTICES_PER_SOURCE:
                more = " (further files: see corpus.decoded in the manifest)" \
                    if len(log.decoded) == NOTICES_PER_SOURCE else ""
                print(f"gammalens: note: corpus file {path} is not plain UTF-8: read as {got.encoding}{more}",
                      file=sys.stderr)
        return got.text

    return load


def walk_files(root: Path, skip: Callable[[str], bool], suffix: str = "") -> list[str]:
    """Sorted relative POSIX paths of files under ``root``, pruning directories for which ``skip`` holds."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not skip(d)]
        rel = Path(folder).relative_to(root)
        found += [(rel / f).as_posix() for f in files if f.endswith(suffix) and not skip(f)]
    return sorted(found)


def stdlib_source() -> Source:
    root = Path(sysconfig.get_paths()["stdlib"])
    doc_ids = walk_files(root, lambda name: name in _STDLIB_SKIP, suffix=".py")
    description = f"Python {platform.python_version()} stdlib"
    log = ReadLog()
    return Source("stdlib", doc_ids, _file_loader(lambda i: root / doc_ids[i], doc_ids, log), description, log)


def folder_source(root: Path) -> Source:
    doc_ids = walk_files(root, lambda name: name.startswith("."))
    log = ReadLog()
    return Source(root.resolve().name, doc_ids, _file_loader(lambda i: root / doc_ids[i], doc_ids, log),
                  f"folder {root}", log)


def jsonl_source(path: Path, field: str) -> Source:
    texts, doc_ids = [], []
    log = ReadLog()
    text = _file_loader(lambda _: path, [path.name], log, refuse=True)(0)
    lines = (text or "").splitlines()
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusError(
                f"line {line_no} of {path} is not valid JSON ({err.msg}); write one JSON object per line"
            ) from err
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise CorpusError(
                f"line {line_no} of {path} has no text field {field!r}; name the field holding the text as {path}:FIELD"
            )
        texts.append(record[field])
        doc_ids.append(f"{path.name}:{line_no}")
    return Source(path.name, doc_ids, texts.__getitem__, f"JSONL {path} field {field!r}", log)


def is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    )


def hf_source(spec: str) -> Source:
    """``hf:NAME[:CONFIG][:SPLIT][:FIELD]``; NAME may be a folder written by ``save_to_disk``."""
    parts = spec[len("hf:") :].split(":")
    if len(parts) > 4 or not parts[0]:
        raise CorpusError(f"corpus {spec!r} is not of the form hf:NAME[:CONFIG][:SPLIT][:FIELD]")
    name, config, split, field = [*parts, "", "", ""][:4]
    split, field = split or "train", field or "text"
    try:
        import datasets
    except ImportError as err:
        raise CorpusError(
            f"corpus {spec!r} needs the Hugging Face 'datasets' package: pip install 'gammalens[datasets]'"
        ) from err
    local = Path(name).is_dir()
    try:
        ds = datasets.load_from_disk(name) if local else datasets.load_dataset(name, config or None, split=split)
    except Exception as err:  # datasets raises many types (offline, unknown name, bad config)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CorpusError(f"cannot load dataset {spec!r}: {reason}; give a Hub name or a save_to_disk folder") from err
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise CorpusError(f"dataset {spec!r} has no split {split!r} (splits: {', '.join(ds)})")
        ds = ds[split]
    features = ds.features
    if field not in features or getattr(features[field], "dtype", None) not in ("string", "large_string"):
        text_fields = [f for f, v in features.items() if getattr(v, "dtype", None) in ("string", "large_string")]
        raise CorpusError(
            f"dataset {spec!r} has no text field {field!r} (text fields: {', '.join(text_fields) or 'none'}); "
            "name it as hf:NAME:CONFIG:SPLIT:FIELD"
        )
    name = Path(name).resolve().name if local else f"hf:{':'.join(p for p in (name, config, split) if p)}"
    doc_ids = [f"{split}/{i}" for i in range(len(ds))]
    return Source(name, doc_ids, lambda i: ds[int(i)][field], f"dataset {spec}")
