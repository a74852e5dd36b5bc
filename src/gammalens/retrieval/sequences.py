"""The retrieval probe's input: random tokens x_0 … x_{L−1}, then the same tokens again, after the tokenizer's prefix.

The content is the draw of ``--corpus random`` (:func:`gammalens.corpus.load_windows`: uniform ids over the
non-special vocabulary, numpy ``default_rng(seed)``), and the prefix is what the tokenizer puts before a text
(:func:`gammalens.corpus.special_tokens`: the BOS of Llama, Gemma-3 …; nothing for GPT-2 or SmolLM2), so the
model sees the start it was trained on. The suffix (BERT's ``[SEP]``) is left out: tokens after the second copy
change no causal query of it.

>>> t = RepeatedTokens.from_content(np.array([[7, 8, 9]]), prefix=[1])
>>> t.input_ids.tolist(), t.first_query, t.n_tokens
([[1, 7, 8, 9, 7, 8, 9]], 4, 7)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gammalens.corpus import load_windows, special_tokens


@dataclass(frozen=True)
class RepeatedTokens:
    """N sequences of P prefix tokens and L random tokens repeated twice.

    Attributes
    ----------
    input_ids : np.ndarray
        (N, P + 2L) int64: prefix, x_0 … x_{L−1}, x_0 … x_{L−1}.
    prefix_len : int
        P, special tokens before the content (0 or 1 for a BOS).
    length : int
        L, tokens of one copy.
    seed : int or None
        The seed of the draw (None: given content).
    """

    input_ids: np.ndarray
    prefix_len: int
    length: int
    seed: int | None = None

    @classmethod
    def from_content(cls, content: np.ndarray, prefix: Sequence[int] = (), seed: int | None = None) -> RepeatedTokens:
        """Repeat ``content`` (N, L) int after ``prefix``."""
        content = np.asarray(content, dtype=np.int64)  # (N, L)
        n = len(content)
        head = np.broadcast_to(np.asarray(list(prefix), dtype=np.int64), (n, len(prefix)))  # (N, P)
        ids = np.concatenate([head, content, content], axis=1)  # (N, P + 2L)
        ids.setflags(write=False)
        return cls(input_ids=ids, prefix_len=len(prefix), length=int(content.shape[1]), seed=seed)

    @property
    def first_query(self) -> int:
        """Position of the first token of the second copy, P + L."""
        return self.prefix_len + self.length

    @property
    def n_tokens(self) -> int:
        """Tokens per sequence, P + 2L."""
        return int(self.input_ids.shape[1])

    def sha256(self) -> str:
        """Digest of the ids, as the manifest records it."""
        return hashlib.sha256(self.input_ids.astype("<i8").tobytes()).hexdigest()


def repeated_random(tokenizer: Any, length: int, sequences: int, seed: int = 0) -> RepeatedTokens:
    """Draw ``sequences`` random sequences of ``length`` tokens and repeat each after the tokenizer's prefix.

    Parameters
    ----------
    tokenizer : PreTrainedTokenizerBase
        The model's tokenizer (its vocabulary and special tokens).
    length : int
        L, tokens per copy.
    sequences : int
        N.
    seed : int
        Seed of the draw (the same ids as ``load_windows('random', …, seed=seed)``'s content).

    Returns
    -------
    RepeatedTokens
        (N, P + 2L) ids.
    """
    prefix, suffix = special_tokens(tokenizer)
    P = len(prefix)
    windows = load_windows("random", tokenizer, P + length + len(suffix), sequences, seed=seed)
    content = np.asarray(windows.input_ids)[:, P:P + length]  # (N, L)
    return RepeatedTokens.from_content(content, prefix, seed=seed)
