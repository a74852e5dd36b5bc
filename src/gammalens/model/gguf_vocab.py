"""The token ids a GGUF file's own vocabulary implies, to check the tokenizer transformers builds from it.

transformers rebuilds a Hugging Face tokenizer from a GGUF's ``tokenizer.ggml.*`` fields. For SentencePiece
vocabularies (``tokenizer.ggml.model = 'llama'``: Gemma, Llama-2, Mistral) that rebuild has been wrong: transformers
5.2 builds Gemma-3's as a Unigram model fed with the BPE scores and drops the BOS, so "The capital of France is"
becomes ``The|▁c|ap|it|al|…`` — fluent round trips, other tokens, and a measurement of something else. This
module is the reference: llama.cpp's SentencePiece BPE (``llm_tokenizer_spm``; merge the adjacent pair whose
joined piece is in the vocabulary with the best score, bytes as ``<0xNN>`` fallback) on the GGUF's tokens and
scores, with its user-defined and control tokens matched first.

>>> vocab = SpmVocab(["<unk>", "<s>", "▁a", "b", "▁ab"], [0.0, 0.0, -1.0, -2.0, -0.5], [2, 3, 1, 1, 1],
...                  bos=1, add_bos=True)
>>> vocab.encode("ab")
[1, 4]
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SpmVocab", "read_spm_vocab"]

# llama.cpp's token types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"  # SentencePiece's visible space


@dataclass
class SpmVocab:
    """A SentencePiece vocabulary as a GGUF stores it (tokens, scores, token types and the BOS rule)."""

    tokens: list[str]
    scores: list[float]
    types: list[int]
    bos: int | None = None
    add_bos: bool = True
    add_space_prefix: bool = True
    ids: dict[str, int] = field(init=False, repr=False)
    special: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.ids = {}
        for i, t in enumerate(self.tokens):
            self.ids.setdefault(t, i)
        # matched before SentencePiece runs, longest first (llama.cpp's tokenizer_st_partition)
        self.special = sorted((i for i, t in enumerate(self.types) if t in (UNKNOWN, CONTROL, USER_DEFINED)
                               and self.tokens[i]), key=lambda i: -len(self.tokens[i]))

    def encode(self, text: str) -> list[int]:
        """The ids of ``text`` with the GGUF's special-token rule (a BOS first when ``add_bos``)."""
        pieces: list[str | int] = [text]
        for tid in self.special:
            tok = self.tokens[tid]
            split: list[str | int] = []
            for piece in pieces:
                if isinstance(piece, int) or tok not in piece:
                    split.append(piece)
                    continue
                for j, part in enumerate(piece.split(tok)):
                    if j:
                        split.append(tid)
                    if part:
                        split.append(part)
            pieces = split
        out = [self.bos] if self.add_bos and self.bos is not None else []
        after_special = True
        for piece in pieces:
            if isinstance(piece, int):
                out.append(piece)
                after_special = True
                continue
            text = (" " if self.add_space_prefix and after_special else "") + piece
            out += self._bpe(text.replace(" ", SPACE))
            after_special = False
        return out

    def _bpe(self, text: str) -> list[int]:
        # symbols: [start, length, prev, next]; a heap of candidate merges by (−score, left position)
        sym = [[k, 1, k - 1, k + 1 if k + 1 < len(text) else -1] for k in range(len(text))]
        heap: list[tuple[float, int, int, int]] = []
        made: dict[str, tuple[int, int]] = {}

        def push(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            s = text[sym[left][0]:sym[left][0] + sym[left][1] + sym[right][1]]
            tid = self.ids.get(s)
            if tid is not None:
                heapq.heappush(heap, (-self.scores[tid], left, right, len(s)))
                made[s] = (sym[left][1], sym[right][1])

        for k in range(1, len(sym)):
            push(k - 1, k)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            a, b = sym[left], sym[right]
            if a[1] == 0 or b[1] == 0 or a[1] + b[1] != size:
                continue  # stale: one side has been merged since
            a[1] += b[1]
            b[1] = 0
            a[3] = b[3]
            if b[3] >= 0:
                sym[b[3]][2] = left
            push(a[2], left)
            push(left, a[3])
        out: list[int] = []
        k = 0 if sym else -1
        while k != -1:
            self._resegment(text, sym[k][0], sym[k][1], made, out)
            k = sym[k][3]
        return out

    def _resegment(self, text: str, start: int, n: int, made: dict[str, tuple[int, int]], out: list[int]) -> None:
        s = text[start:start + n]
        tid = self.ids.get(s)
        if tid is not None:
            out.append(tid)
        elif s in made:
            left, right = made[s]
            self._resegment(text, start, left, made, out)
            self._resegment(text, start + left, right, made, out)
        else:
            out += [self.ids.get(f"<0x{b:02X}>", 0) for b in s.encode("utf-8")]


def read_spm_vocab(path: Path) -> SpmVocab | None:
    """The SentencePiece vocabulary of a GGUF file, or None when its tokenizer is not SentencePiece."""
    import gguf

    fields = gguf.GGUFReader(str(path)).fields

    def scalar(key: str, default: object = None) -> object:
        f = fields.get(key)
        return default if f is None else f.parts[f.data[0]].tolist()[0]

    model = fields.get("tokenizer.ggml.model")
    if model is None or bytes(model.parts[model.data[0]]).decode() != "llama":
        return None
    tok, sc, ty = (fields[k] for k in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"))
    return SpmVocab([bytes(tok.parts[i]).decode("utf-8", "replace") for i in tok.data],
                    [float(sc.parts[i][0]) for i in sc.data], [int(ty.parts[i][0]) for i in ty.data],
                    bos=scalar("tokenizer.ggml.bos_token_id"), add_bos=bool(scalar("tokenizer.ggml.add_bos_token", True)),
                    add_space_prefix=bool(scalar("tokenizer.ggml.add_space_prefix", True)))
