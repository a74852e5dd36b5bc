"""Corpora → token windows: the text every measurement runs on.

:mod:`~gammalens.corpus.sources` reads documents (stdlib, file, folder, JSONL, Hugging Face dataset);
:mod:`~gammalens.corpus.windows` cuts them into windows of exactly ``context`` tokens.
"""

from gammalens.corpus.sources import Source, open_source, read_text, stdlib_source
from gammalens.corpus.windows import TokenWindows, load_windows, special_tokens

__all__ = ["Source", "TokenWindows", "load_windows", "open_source", "read_text", "special_tokens", "stdlib_source"]
