"""Corpora → token windows: the text every measurement runs on (glossary: induction probe Δγ).

A corpus spec names a source of documents; :func:`load_windows` cuts them into windows of exactly
``context`` tokens, each wrapped with the tokenizer's own special tokens, and picks them
deterministically for a seed. Specs:

- ``'stdlib'`` (default): the running interpreter's Python standard library (``*.py`` files).
- ``'random'``: token ids uniform over the non-special vocabulary. γ_text − γ_random = Δγ is the
  glossary's induction probe (γ_obs = γ_geom + γ_train + γ_arch + ε; random tokens remove what the
  model learned to read, leaving the geometric part).
- ``PATH``: a text file, or a folder read recursively (hidden entries skipped). UTF-8 with or without a byte-order
  mark, UTF-16/32 by their mark, a single-byte encoding only where unambiguous
  (:func:`~gammalens.corpus.sources.decode_file`); a folder's files that are not text are skipped and counted
  (``n_skipped_files`` in the manifest, a notice on stderr), a single file that is not text is refused.
- ``PATH.jsonl`` or ``PATH.jsonl:FIELD``: one JSON object per line, text in ``FIELD`` (default ``text``).
- ``hf:NAME[:CONFIG][:SPLIT][:FIELD]`` or a folder written by ``Dataset.save_to_disk``: a Hugging Face
  dataset (needs ``pip install 'gammalens[datasets]'``); split ``train`` and field ``text`` by default.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from gammalens.corpus.sources import Source, open_source
from gammalens.errors import CorpusError

__all__ = ["TokenWindows", "load_windows", "special_tokens"]

# Characters tokenized past the point whose tokens are kept: tokenizers merge locally, so tokens ending
# this far before a cut equal those of the whole document (tests check it against full encodings).
_GUARD_CHARS = 1024
_PROBE_TEXT = "gammalens probe: the quick brown fox"
MANIFEST_FILES = 100  # files listed by name in the manifest's skipped_files / decoded_files; the counts are complete


@dataclass(frozen=True, eq=False)
class TokenWindows:
    """Token windows cut from one corpus, ready for the model.

    Attributes
    ----------
    name : str
        Short corpus name: ``'stdlib'``, ``'random'``, a file or folder basename, ``'hf:NAME…'``.
    spec : str
        The corpus spec exactly as given to :func:`load_windows`.
    input_ids : numpy.ndarray
        Token ids, int64, shape ``(n_windows, context)``, read-only; each row includes the
        tokenizer's special tokens (e.g. ``[CLS] … [SEP]`` or ``<s> …``).
    doc_ids : tuple of str
        Length ``n_windows``: the source document of each window (relative path, ``file.jsonl:LINE``,
        ``SPLIT/ROW``, ``random-I``).
    sha256 : str
        Hex digest of ``name`` and ``input_ids``; identical windows give identical hashes.
    n_tokens : int
        Total tokens, ``n_windows * context`` (special tokens included).
    seed : int
        Seed of the selection.
    selection : str
        How the windows were chosen, in words (goes into the manifest).
    skipped : tuple of (str, str, str)
        Files met while choosing the windows that were skipped as not text: (document id, reason, detail), reason
        ``'binary'``, ``'undecodable'`` or ``'unreadable'``.
    decoded : tuple of (str, str)
        Files read in an encoding other than plain UTF-8: (document id, encoding).

    Examples
    --------
    >>> tw = load_windows("random", tok, context=8, windows=2)   # doctest: +SKIP
    >>> tw.input_ids.shape, tw.doc_ids
    ((2, 8), ('random-0', 'random-1'))
    """

    name: str
    spec: str
    input_ids: np.ndarray  # (n_windows, context) int64
    doc_ids: tuple[str, ...]
    sha256: str
    n_tokens: int
    seed: int = 0
    selection: str = ""
    skipped: tuple[tuple[str, str, str], ...] = ()
    decoded: tuple[tuple[str, str], ...] = ()

    def to_manifest(self) -> dict[str, Any]:
        """JSON-ready description for ``manifest.json``: enough to re-create the windows and check them.

        >>> load_windows("random", tok, 8, 2).to_manifest()["n_windows"]   # doctest: +SKIP
        2
        """
        n_windows, context = self.input_ids.shape
        return {
            "name": self.name,
            "spec": self.spec,
            "sha256": self.sha256,
            "n_windows": int(n_windows),
            "n_tokens": int(self.n_tokens),
            "tokens_per_window": int(context),
            "n_documents": len(set(self.doc_ids)),
            "seed": int(self.seed),
            "selection": self.selection,
            # files met while choosing the windows: none is dropped without a word (issue 25)
            "n_skipped_files": len(self.skipped),
            "skipped_reasons": dict(sorted(Counter(reason for _, reason, _ in self.skipped).items())),
            "skipped_files": [{"file": f, "reason": r, "detail": d} for f, r, d in self.skipped[:MANIFEST_FILES]],
            "n_decoded_files": len(self.decoded),
            "decoded_files": [{"file": f, "encoding": e} for f, e in self.decoded[:MANIFEST_FILES]],
        }

    def __repr__(self) -> str:
        n_windows, context = self.input_ids.shape
        return (
            f"TokenWindows(name={self.name!r}, n_windows={n_windows}, context={context}, "
            f"n_documents={len(set(self.doc_ids))}, sha256={self.sha256[:12]!r}…)"
        )


def load_windows(spec: str, tokenizer: Any, context: int, windows: int, seed: int = 0) -> TokenWindows:
    """Cut a corpus into ``windows`` windows of exactly ``context`` tokens, deterministically for ``seed``.

    Documents are tokenized without special tokens and cut into consecutive chunks of
    ``context − n_special`` content tokens (``n_special``: what the tokenizer adds around a text,
    e.g. 2 for ``[CLS] … [SEP]``); only full chunks are kept. Documents are sorted, shuffled with
    ``numpy.random.default_rng(seed)``, and each gives its first chunk; second chunks are taken
    only when every document has given one, and so on. Tokenizing stops once enough windows exist.

    Parameters
    ----------
    spec : str
        Corpus spec: ``'stdlib'``, ``'random'``, a file or folder path, ``PATH.jsonl[:FIELD]``,
        ``hf:NAME[:CONFIG][:SPLIT][:FIELD]`` (see the module docstring).
    tokenizer : transformers tokenizer
        The model's tokenizer (a fast tokenizer keeps long documents cheap).
    context : int
        Tokens per window, special tokens included; at least ``n_special + 2``.
    windows : int
        Number of windows, at least 1.
    seed : int, default 0
        Seed of the document shuffle (and of the ids for ``'random'``).

    Returns
    -------
    TokenWindows
        ``input_ids`` of shape ``(windows, context)``.

    Raises
    ------
    CorpusError
        Unknown path, empty corpus, bad JSONL line, too few tokens, or invalid ``context``/``windows``.

    Examples
    --------
    >>> tw = load_windows("stdlib", tok, context=512, windows=16)   # doctest: +SKIP
    >>> tw.input_ids.shape
    (16, 512)
    """
    if windows < 1:
        raise CorpusError(f"windows must be at least 1 (got {windows}); ask for one or more windows")
    if seed < 0:
        raise CorpusError(f"seed must be a non-negative integer (got {seed})")
    prefix, suffix = special_tokens(tokenizer)
    n_special = len(prefix) + len(suffix)
    if context < n_special + 2:
        raise CorpusError(
            f"context {context} is too short: this tokenizer adds {n_special} special tokens per window, "
            f"so the context must be at least {n_special + 2}"
        )
    n_content = context - n_special
    skipped: tuple[tuple[str, str, str], ...] = ()
    decoded: tuple[tuple[str, str], ...] = ()
    if spec == "random":
        name, chunks = "random", _random_chunks(tokenizer, n_content, windows, seed)
        doc_ids = tuple(f"random-{i}" for i in range(windows))
        selection = f"uniform token ids over the non-special vocabulary, numpy default_rng({seed})"
    else:
        source = open_source(spec)
        picked = _select(source, tokenizer, n_content, windows, seed)
        skipped, decoded = tuple(source.log.skipped), tuple(source.log.decoded)
        if skipped:  # one line, however many: the manifest lists them (n_skipped_files, skipped_files)
            first = f"{skipped[0][0]}: {skipped[0][2]}"
            print(f"gammalens: note: corpus {source.name!r}: {source.log.summary()}, e.g. {first}; see "
                  "corpus.skipped_files in the manifest", file=sys.stderr)
        name, chunks = source.name, [ids for _, ids in picked]
        doc_ids = tuple(source.doc_ids[i] for i, _ in picked)
        selection = (
            f"{source.description}: {len(source.doc_ids)} documents in sorted order shuffled with numpy "
            f"default_rng({seed}); consecutive chunks of {n_content} content tokens, first chunk of each "
            f"document before any second chunk; {len(set(doc_ids))} documents used"
        )
    input_ids = np.empty((windows, context), dtype=np.int64)  # (n_windows, context)
    input_ids[:, : len(prefix)] = prefix
    input_ids[:, len(prefix) : len(prefix) + n_content] = np.stack(chunks)
    input_ids[:, len(prefix) + n_content :] = suffix
    input_ids.setflags(write=False)
    digest = hashlib.sha256(f"{name}\0{input_ids.shape}\0".encode())
    digest.update(input_ids.astype("<i8").tobytes())
    return TokenWindows(
        name=name,
        spec=spec,
        input_ids=input_ids,
        doc_ids=doc_ids,
        sha256=digest.hexdigest(),
        n_tokens=int(input_ids.size),
        seed=int(seed),
        selection=selection,
        skipped=skipped,
        decoded=decoded,
    )


def special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a text's content, e.g. ``([101], [102])`` for BERT.

    Found by encoding a probe text with and without special tokens: transformers 5 fast tokenizers
    no longer have ``build_inputs_with_special_tokens``, and in 4.x the generic fast tokenizer's
    version ignores the post-processor that ``tokenizer(text)`` applies.

    >>> special_tokens(bert_tokenizer)   # doctest: +SKIP
    ([101], [102])
    """
    plain = list(_encode(tokenizer, _PROBE_TEXT))
    full = list(_encode(tokenizer, _PROBE_TEXT, special=True))
    n = len(plain)
    for start in range(len(full) - n + 1):
        if n and full[start : start + n] == plain:
            return full[:start], full[start + n :]
    raise CorpusError(
        f"cannot tell which special tokens {type(tokenizer).__name__} adds around a text "
        "(its encoding with special tokens does not contain the plain encoding); use another tokenizer"
    )


def _encode(tokenizer: Any, text: str, special: bool = False) -> list[int]:
    return tokenizer(text, add_special_tokens=special, truncation=False, verbose=False)["input_ids"]


def _encode_prefix(tokenizer: Any, text: str, n_tokens: int) -> tuple[np.ndarray, bool]:
    """Ids of the start of ``text``, at least ``n_tokens`` of them where the text has that many.

    Returns ``(ids, complete)``; ``complete`` means ``ids`` encode the whole text. Long texts are
    encoded by growing prefixes, keeping only tokens that end ``_GUARD_CHARS`` before the cut.
    """
    cut = max(4 * n_tokens, 4096)  # ~4 characters per token in code and English; doubled if short
    while getattr(tokenizer, "is_fast", False) and cut + _GUARD_CHARS < len(text):
        enc = tokenizer(
            text[: cut + _GUARD_CHARS],
            add_special_tokens=False,
            truncation=False,
            verbose=False,
            return_offsets_mapping=True,
        )
        ends = np.array([end for _, end in enc["offset_mapping"]], dtype=np.int64)  # (n_tokens,)
        beyond = np.flatnonzero(ends > cut)
        n_kept = int(beyond[0]) if beyond.size else len(ends)
        if n_kept >= n_tokens:
            return np.asarray(enc["input_ids"][:n_kept], dtype=np.int64), False
        cut *= 2
    return np.asarray(_encode(tokenizer, text), dtype=np.int64), True


def _select(source: Source, tokenizer: Any, n_content: int, windows: int, seed: int) -> list[tuple[int, np.ndarray]]:
    """Pick ``windows`` chunks of ``n_content`` ids: ``[(document index, ids (n_content,)), ...]``."""
    if not source.doc_ids:
        raise CorpusError(f"corpus {source.name!r} is empty: {source.description} has no documents")
    order = np.random.default_rng(seed).permutation(len(source.doc_ids))
    tokens: dict[int, tuple[np.ndarray, bool]] = {}  # document index -> (ids so far, complete)
    picked: list[tuple[int, np.ndarray]] = []
    active, any_text = [int(i) for i in order], False
    for k in itertools.count():  # round k takes chunk k of every document long enough
        end = (k + 1) * n_content
        still_active = []
        for i in active:
            ids, complete = tokens.get(i, (np.empty(0, np.int64), False))
            if len(ids) < end and not complete:
                text = source.load(i)
                # ask for twice what is held so a document met in many rounds is re-encoded O(log) times
                ids, complete = _encode_prefix(tokenizer, text, max(end, 2 * len(ids))) if text else (ids, True)
                tokens[i] = (ids, complete)
                any_text |= len(ids) > 0
            if len(ids) < end:
                tokens.pop(i, None)
                continue
            picked.append((i, ids[end - n_content : end]))
            if len(picked) == windows:
                return picked
            still_active.append(i)
        if not still_active:
            break
        active = still_active
    skipped = f" ({source.log.summary()})" if source.log.skipped else ""
    if not any_text:
        raise CorpusError(f"corpus {source.name!r} is empty: {source.description} holds no readable text{skipped}")
    raise CorpusError(
        f"corpus {source.name!r} is too short: found {len(picked)} windows of {n_content} content tokens, "
        f"but {windows} windows need {windows} × {n_content} = {windows * n_content} content tokens in "
        f"documents at least {n_content} tokens long{skipped}; use fewer windows, a shorter context or more text"
    )


def _random_chunks(tokenizer: Any, n_content: int, windows: int, seed: int) -> np.ndarray:
    """Uniform ids over the vocabulary minus special tokens, shape ``(windows, n_content)``."""
    special = set(tokenizer.all_special_ids)
    special |= {i for i, tok in getattr(tokenizer, "added_tokens_decoder", {}).items() if tok.special}
    allowed = np.setdiff1d(np.arange(len(tokenizer), dtype=np.int64), np.fromiter(special, np.int64))
    rng = np.random.default_rng(seed)
    return allowed[rng.integers(0, len(allowed), size=(windows, n_content))]  # (windows, n_content)
