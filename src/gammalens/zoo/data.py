"""The zoo's text: the Python standard library, split into training and held-out files, and the token stream.

The split is by file and deterministic: a file is held out when the first byte of the SHA-256 of its relative
path is below ``256 × heldout_fraction``, so adding or removing a stdlib file never moves another one. Training
reads one token stream — the training files in a seeded shuffle, each file's tokens followed by ``<|eos|>`` —
cut into fixed segments that are visited in one seeded order (:func:`segment_order`); every zoo model reads
the same segments at the same step, only cut into rows of its own context (:func:`segment_rows`).

>>> split = split_stdlib()                                   # doctest: +SKIP
>>> len(split.train), len(split.heldout)                     # doctest: +SKIP
(607, 67)
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gammalens.corpus import read_text, stdlib_source
from gammalens.errors import GammalensError

HELDOUT_FRACTION = 0.1  # share of stdlib files kept out of training, chosen by path hash


@dataclass(frozen=True)
class StdlibSplit:
    """Training and held-out files of the running interpreter's standard library.

    Attributes
    ----------
    root : Path
        ``sysconfig.get_paths()['stdlib']``.
    train, heldout : tuple of str
        Relative POSIX paths of ``*.py`` files (tests, idlelib and site-packages excluded, as in the
        ``'stdlib'`` corpus), sorted.
    description : str
        The interpreter version and the rule of the split, for manifests.
    """

    root: Path
    train: tuple[str, ...]
    heldout: tuple[str, ...]
    description: str

    def text(self, rel: str) -> str:
        """The UTF-8 text of one file (``''`` when unreadable)."""

        return read_text(self.root / rel) or ""


def split_stdlib(heldout_fraction: float = HELDOUT_FRACTION, limit: int | None = None) -> StdlibSplit:
    """Split the stdlib ``*.py`` files into training and held-out files by a hash of their path.

    Parameters
    ----------
    heldout_fraction : float
        Approximate share of files held out, in (0, 1).
    limit : int, optional
        Keep only the first ``limit`` files of each side (sorted); for tests.
    """
    if not 0 < heldout_fraction < 1:
        raise GammalensError(f"heldout_fraction must be in (0, 1) (got {heldout_fraction})")

    source = stdlib_source()
    cut = round(256 * heldout_fraction)
    held = [d for d in source.doc_ids if hashlib.sha256(d.encode()).digest()[0] < cut]
    train = [d for d in source.doc_ids if hashlib.sha256(d.encode()).digest()[0] >= cut]
    if limit is not None:
        held, train = held[:limit], train[:limit]
    root = Path(sysconfig.get_paths()["stdlib"])
    description = (f"Python {platform.python_version()} stdlib *.py (tests excluded), held out by file: "
                   f"sha256(path)[0] < {cut}")
    return StdlibSplit(root, tuple(train), tuple(held), description)


def token_stream(split: StdlibSplit, tokenizer: Any, files: tuple[str, ...], n_tokens: int | None = None,
                 seed: int | None = 0) -> np.ndarray:
    """Concatenated tokens of ``files`` (each followed by ``<|eos|>``), at least ``n_tokens`` where possible.

    Parameters
    ----------
    split : StdlibSplit
        Where the files live.
    tokenizer : transformers tokenizer
        With ``eos_token_id`` set.
    files : tuple of str
        Relative paths; shuffled with ``numpy.random.default_rng(seed)`` unless ``seed`` is None.
    n_tokens : int, optional
        Stop reading files once this many tokens are held; None: read every file.

    Returns
    -------
    numpy.ndarray
        uint16 token ids, shape ``(n,)`` with ``n ≥ n_tokens`` unless the files run out.
    """
    order = list(files) if seed is None else [files[i] for i in np.random.default_rng(seed).permutation(len(files))]
    parts, total = [], 0
    for rel in order:
        text = split.text(rel)
        if not text:
            continue
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] + [tokenizer.eos_token_id]
        parts.append(np.asarray(ids, dtype=np.uint16))
        total += len(ids)
        if n_tokens is not None and total >= n_tokens:
            break
    return np.concatenate(parts) if parts else np.empty(0, np.uint16)


def segment_order(stream: np.ndarray, segment: int, seed: int) -> np.ndarray:
    """A seeded permutation of the stream's whole ``segment``-token segments (the data order of training)."""
    return np.random.default_rng(seed).permutation(len(stream) // segment)


def segment_rows(stream: np.ndarray, segments: np.ndarray, segment: int, context: int, bos_id: int) -> np.ndarray:
    """Training rows from whole segments of the stream, for a model of training context ``context``.

    Each ``segment``-token segment is cut into ``segment // context`` slices of ``context`` tokens; a row is
    ``<|bos|>`` followed by the first ``context − 1`` tokens of a slice (the layout the measurement's windows
    have). Models of different contexts thus read the same text from the same segments, in the same order,
    only cut differently (the last token of each slice is left out).

    Parameters
    ----------
    stream : numpy.ndarray
        Token ids, shape ``(n,)``.
    segments : numpy.ndarray
        Segment indices, shape ``(k,)``; segment j is ``stream[j·segment : (j+1)·segment]``.
    segment, context : int
        Tokens per segment and per row; ``segment`` must be a multiple of ``context``.

    Returns
    -------
    numpy.ndarray
        int64, shape ``(k · segment // context, context)``.

    Examples
    --------
    >>> segment_rows(np.arange(16, dtype=np.uint16), np.array([1, 0]), 8, 4, bos_id=99)
    array([[99,  8,  9, 10],
           [99, 12, 13, 14],
           [99,  0,  1,  2],
           [99,  4,  5,  6]])
    """
    if segment % context:
        raise GammalensError(f"the segment ({segment} tokens) must be a multiple of the context ({context})")
    if len(segments) and int(np.max(segments)) >= len(stream) // segment:
        raise GammalensError(f"segment {int(np.max(segments))} is beyond the stream's {len(stream) // segment} "
                             "segments; train on fewer steps or read more text")
    whole = stream[: (len(stream) // segment) * segment].reshape(-1, segment)  # (n_segments, segment)
    slices = whole[np.asarray(segments, dtype=np.int64)].reshape(-1, context).astype(np.int64)  # (rows, context)
    rows = np.empty_like(slices)
    rows[:, 0] = bos_id
    rows[:, 1:] = slices[:, :-1]
    return rows


def write_heldout_folder(split: StdlibSplit, folder: Path) -> Path:
    """Copy the held-out files into ``folder`` (relative paths kept): a corpus spec for ``gammalens measure``."""
    folder = Path(folder)
    for rel in split.heldout:
        dest = folder / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(split.root / rel, dest)
    return folder
