"""Corpus sources: where a corpus's documents come from (stdlib, a text file or folder, JSONL, a Hugging Face dataset).

Each source is a :class:`Source`: document ids and a lazy ``load(i)``; :func:`open_source` turns a corpus spec
into one. Cutting documents into token windows is :mod:`gammalens.corpus.windows`.
"""

from __future__ import annotations

import json
import os
import platform
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gammalens.errors import CorpusError

__all__ = ["Source", "open_source", "read_text", "stdlib_source"]

_STDLIB_SKIP = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"})

@dataclass(frozen=True)
class Source:
    """Documents of a corpus, read lazily: ``load(i)`` is the text of ``doc_ids[i]`` or None (unreadable)."""

    name: str
    doc_ids: list[str]
    load: Callable[[int], str | None]
    description: str




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
        return Source(path.name, [path.name], lambda _: read_text(path), f"text file {path}")
    raise CorpusError(
        f"corpus {spec!r} not found: give 'stdlib', 'random', an existing file or folder, "
        "PATH.jsonl[:FIELD], or hf:NAME[:CONFIG][:SPLIT][:FIELD]"
    )


def read_text(path: Path) -> str | None:
    """The file's text, or None when it is not UTF-8 text (binary files hold NUL bytes or bad UTF-8)."""
    try:
        data = path.read_bytes()
        return None if b"\0" in data else data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


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
    return Source("stdlib", doc_ids, lambda i: read_text(root / doc_ids[i]), description)


def folder_source(root: Path) -> Source:
    doc_ids = walk_files(root, lambda name: name.startswith("."))
    return Source(root.resolve().name, doc_ids, lambda i: read_text(root / doc_ids[i]), f"folder {root}")


def jsonl_source(path: Path, field: str) -> Source:
    texts, doc_ids = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CorpusError(f"cannot read {path} as UTF-8 JSONL ({err}); give a JSON Lines text file") from err
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
    return Source(path.name, doc_ids, texts.__getitem__, f"JSONL {path} field {field!r}")


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
