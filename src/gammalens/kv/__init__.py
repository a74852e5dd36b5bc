"""The γ-window KV cache: per-head windows from measured profiles (glossary: D_f, KV cache, GQA).

- :mod:`~gammalens.kv.tails`     measured tail curves per head, extended by the fitted law beyond the run
- :mod:`~gammalens.kv.allocate`  token budget → windows minimising the attention mass lost (water-filling)
- :mod:`~gammalens.kv.plan`      ``gammalens kv plan RUN_DIR``: the plan (ε or budget mode), table and JSON
- :mod:`~gammalens.kv.cache`     a ``transformers`` Cache that holds only sink + last-W tokens per KV head
- :mod:`~gammalens.kv.selected`  a Cache that holds, per KV head, a chosen subset of the prefill (e.g. the plan's
  budget filled with the best-scored keys) and a window of the later tokens
- :mod:`~gammalens.kv.score`     a content score per prefill key (ExpectedAttention's formula, no kvpress) and
  ``selected_prefill``: a prefill that keeps each head's budget of best-scored keys in a SelectedCache
- :mod:`~gammalens.kv.attention` the attention function that reads either cache (installed by a context manager)
- :mod:`~gammalens.kv.press`     ``GammaWindowPress`` for NVIDIA kvpress (optional extra ``gammalens[kvpress]``)

Nothing here is imported by ``import gammalens``; torch, transformers and kvpress load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GammaWindowCache", "GammaWindowPress", "SelectedCache", "selected_prefill"]

KVPRESS_HINT = "GammaWindowPress needs kvpress, an optional extra: pip install 'gammalens[kvpress]'"


def __getattr__(name: str) -> Any:
    """``GammaWindowCache``, ``SelectedCache``, ``selected_prefill`` and ``GammaWindowPress`` on first use: ``import gammalens.kv`` stays light."""
    if name == "GammaWindowCache":
        from gammalens.kv.cache import GammaWindowCache

        return GammaWindowCache
    if name == "SelectedCache":
        from gammalens.kv.selected import SelectedCache

        return SelectedCache
    if name == "selected_prefill":
        from gammalens.kv.score import selected_prefill

        return selected_prefill
    if name == "GammaWindowPress":
        import importlib.util

        if importlib.util.find_spec("kvpress") is None:
            raise ImportError(KVPRESS_HINT, name="kvpress")
        from gammalens.kv.press import GammaWindowPress

        return GammaWindowPress
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
