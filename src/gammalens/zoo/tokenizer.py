"""The zoo's BPE tokenizer (glossary: BPE), trained here with Hugging Face ``tokenizers`` on stdlib text.

Byte-level BPE (every byte is in the alphabet, so any text encodes), three special tokens
``<|bos|>`` (0), ``<|eos|>`` (1), ``<|pad|>`` (2), and a post-processor that puts ``<|bos|>`` before every
text — the layout the zoo models are trained on and the measurement's windows have. Saved as a
:class:`transformers.PreTrainedTokenizerFast`, so ``AutoTokenizer.from_pretrained(model_dir)`` loads it.

>>> tok = train_tokenizer(["def f(x):\\n    return x\\n"] * 50, vocab_size=300)   # doctest: +SKIP
>>> tok("return x")["input_ids"][0] == tok.bos_token_id                           # doctest: +SKIP
True
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
SPECIAL_TOKENS = (BOS, EOS, PAD)  # ids 0, 1, 2 in this order


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2) -> Any:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for transformers.

    Parameters
    ----------
    texts : iterable of str
        Training documents (one string per file).
    vocab_size : int
        Total vocabulary, special tokens and the 256 byte symbols included.
    min_frequency : int
        A pair is merged only if it occurs at least this often.

    Returns
    -------
    transformers.PreTrainedTokenizerFast
        With ``bos_token``, ``eos_token`` and ``pad_token`` set; ``tok(text)`` starts with ``<|bos|>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B:1",
                                                       special_tokens=[(BOS, bos_id)])
    return wrap(tok)


def wrap(tok: Any) -> Any:
    """A ``tokenizers.Tokenizer`` as a :class:`transformers.PreTrainedTokenizerFast` with bos/eos/pad set."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   model_max_length=1 << 20, clean_up_tokenization_spaces=False)


def save_tokenizer(tokenizer: Any, directory: Path) -> None:
    """Save ``tokenizer`` with a class name that ``AutoTokenizer`` of transformers 4.x and 5.x resolves.

    transformers 5 writes ``tokenizer_class: TokenizersBackend``, a name 4.x does not know; 5.x loads
    ``PreTrainedTokenizerFast`` from ``tokenizer.json`` as well (tested), and 4.x knows that class, so that is
    the class recorded.
    """
    tokenizer.save_pretrained(directory)
    path = Path(directory) / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
