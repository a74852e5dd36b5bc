"""The GGUF vocabulary's own tokenization (SentencePiece BPE as llama.cpp runs it) and the check built on it.

The heap-based merge loop of :class:`SpmVocab` is compared with a brute-force one written here (rescan every
adjacent pair, merge the best, leftmost first); the check must refuse a tokenizer that disagrees with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gammalens.errors import ModelError
from gammalens.model.gguf_cache import check_tokenizer_against_vocab
from gammalens.model.gguf_vocab import BYTE, CONTROL, NORMAL, SPACE, USER_DEFINED, SpmVocab

ALPHABET = "ab c"


def toy_vocab() -> SpmVocab:
    pieces = ["a", "b", "c", SPACE, SPACE + "a", "ab", "ba", SPACE + "ab", "bc", "abc", SPACE + "c", "aa"]
    tokens = ["<unk>", "<s>", "<x>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    types = [2, CONTROL, USER_DEFINED] + [BYTE] * 256 + [NORMAL] * len(pieces)
    # distinct scores: the merge order is then unambiguous, as in real vocabularies
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(k) * 1.37 % 11 - k * 1e-3 for k in range(len(pieces))]
    return SpmVocab(tokens, scores, types, bos=1, add_bos=True)


def brute_force(vocab: SpmVocab, text: str) -> list[int]:
    out = [vocab.bos]
    for k, piece in enumerate(text.split("<x>")):
        if k:
            out.append(vocab.ids["<x>"])
        if not piece:
            continue
        s = (" " + piece).replace(" ", SPACE)  # the space prefix: after the start and after a special token
        syms = list(s)
        while True:
            best = None
            for i in range(len(syms) - 1):
                tid = vocab.ids.get(syms[i] + syms[i + 1])
                if tid is not None and (best is None or vocab.scores[tid] > best[0]):
                    best = (vocab.scores[tid], i)
            if best is None:
                break
            i = best[1]
            syms[i:i + 2] = [syms[i] + syms[i + 1]]
        for sym in syms:
            out += [vocab.ids[sym]] if sym in vocab.ids else [vocab.ids[f"<0x{b:02X}>"] for b in sym.encode()]
    return out


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=ALPHABET + "é", min_size=1, max_size=24))
def test_merges_equal_the_brute_force_reference(text: str) -> None:
    vocab = toy_vocab()
    assert vocab.encode(text) == brute_force(vocab, text)


def test_special_tokens_split_the_text_and_bytes_fall_back() -> None:
    vocab = toy_vocab()
    ids = vocab.encode("ab<x>é")
    assert ids[0] == vocab.bos and vocab.ids["<x>"] in ids
    assert ids[-2:] == [vocab.ids["<0xC3>"], vocab.ids["<0xA9>"]]  # é is not a piece: its UTF-8 bytes


class _Tok:
    def __init__(self, fn):
        self.fn = fn

    def __call__(self, text):
        return {"input_ids": self.fn(text)}


def test_the_check_refuses_a_tokenizer_that_disagrees(monkeypatch) -> None:
    import gammalens.model.gguf_cache as gc

    vocab = toy_vocab()
    monkeypatch.setattr(gc, "read_spm_vocab", lambda path: vocab)
    check_tokenizer_against_vocab(_Tok(vocab.encode), Path("toy.gguf"))  # agrees: passes
    with pytest.raises(ModelError, match=r"disagrees with the file's own vocabulary .*and no BOS.*transformers ≥ 5\.24"):
        check_tokenizer_against_vocab(_Tok(lambda t: vocab.encode(t)[1:]), Path("toy.gguf"))
    monkeypatch.setattr(gc, "read_spm_vocab", lambda path: None)  # a BPE (gpt2) vocabulary: not this check's
    check_tokenizer_against_vocab(_Tok(lambda t: []), Path("bpe.gguf"))
