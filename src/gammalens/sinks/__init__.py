"""Sinks and massive activations: measure them per head, test whether massive activations cause sinks,
and keep the sink apart from γ (glossary: Sink, Massive activation; Ch. 17).

Importing this package loads neither torch nor transformers; a measurement does.

- :mod:`~gammalens.sinks.measures` — the probe observer: mass on the first k tokens, key shares, sink rate.
- :mod:`~gammalens.sinks.massive` — massive activations (Sun et al. 2024) recorded by forward hooks.
- :mod:`~gammalens.sinks.ablation` — the causal test: ablate them where they arise.
- :mod:`~gammalens.sinks.correlation` — γ ⟂ sink across heads (across the atlas's models: :mod:`gammalens.atlas.sink_gamma`).
- :mod:`~gammalens.sinks.run` — the pipeline behind ``gammalens sinks`` and :func:`measure_sinks`.

>>> from gammalens.sinks import measure_sinks
>>> r = measure_sinks("minilm", context=64, windows=4)        # doctest: +SKIP
>>> r.to_pandas().sort_values("peak_key_share").tail(3)        # doctest: +SKIP
"""

from gammalens.sinks.config import SinkConfig
from gammalens.sinks.correlation import Correlation, across_heads, correlate
from gammalens.sinks.result import PassSinks, SinkResult, read_sinks

__all__ = [
    "Correlation",
    "PassSinks",
    "SinkConfig",
    "SinkResult",
    "across_heads",
    "correlate",
    "measure_sinks",
    "read_sinks",
]


def __getattr__(name: str) -> object:
    if name == "measure_sinks":  # lazily: the pipeline loads torch, this package must not
        from gammalens.sinks.run import measure_sinks

        return measure_sinks
    raise AttributeError(f"module 'gammalens.sinks' has no attribute {name!r}")
