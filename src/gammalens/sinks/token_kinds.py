"""What kind of token a sink (or a massive activation) sits on: BOS, first content token, delimiter, other.

The glossary's sink is attention mass that piles up on a few low-information tokens (Ch. 17): the
beginning-of-sequence token when there is one, otherwise the first token, and delimiters ([SEP], ".",
newlines — Clark et al. 2019, Sun et al. 2024).

>>> classify(0, 101, prefix_len=1, special_ids={101, 102}, text="[CLS]")
'bos'
>>> classify(7, 1012, prefix_len=1, special_ids={101, 102}, text=".")
'delimiter'
"""

from __future__ import annotations

import string
from collections.abc import Collection
from typing import Any

KINDS = ("bos", "first_content", "delimiter", "other")
_PUNCTUATION = set(string.punctuation) | set("“”‘’«»…–—")


def classify(position: int, token_id: int, *, prefix_len: int, special_ids: Collection[int], text: str) -> str:
    """The kind of the token at ``position`` (tokens from the window's start).

    Parameters
    ----------
    position : int
        Position in the window (0 = first token).
    token_id : int
        The token's id.
    prefix_len : int
        Number of special tokens the tokenizer puts before the content (1 for ``[CLS]`` or ``<s>``;
        0 when the window starts with content, e.g. GPT-2, or after the BOS was dropped).
    special_ids : collection of int
        The tokenizer's special token ids.
    text : str
        The token decoded on its own.

    Returns
    -------
    str
        ``'bos'`` (one of the prefix special tokens), ``'first_content'`` (the first token after them),
        ``'delimiter'`` (any other special token, e.g. ``[SEP]``, or a token that decodes to whitespace
        or punctuation only), or ``'other'``.
    """
    if position < prefix_len:
        return "bos"
    if position == prefix_len:
        return "first_content"
    stripped = text.strip()
    if token_id in special_ids or not stripped or all(ch in _PUNCTUATION for ch in stripped):
        return "delimiter"
    return "other"


class TokenNamer:
    """Decodes and classifies token ids of one tokenizer, caching the decoded strings.

    Parameters
    ----------
    tokenizer : PreTrainedTokenizerBase
        The model's tokenizer.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
        self._text: dict[int, str] = {}

    def text(self, token_id: int) -> str:
        """The token decoded on its own (special tokens included), e.g. ``'[CLS]'``, ``'.'``, ``' the'``."""
        if token_id not in self._text:
            self._text[token_id] = self.tokenizer.decode([int(token_id)], skip_special_tokens=False)
        return self._text[token_id]

    def kind(self, position: int, token_id: int, prefix_len: int) -> str:
        """:func:`classify` of one token."""
        return classify(position, token_id, prefix_len=prefix_len, special_ids=self.special_ids,
                        text=self.text(token_id))
