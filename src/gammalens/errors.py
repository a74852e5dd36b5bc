"""The project's exceptions: bad input the user can fix, reported by the CLI as one line, exit code 2."""

from __future__ import annotations


class GammalensError(Exception):
    """Bad input or an unmeasurable situation, phrased for the user: what was wrong and what to do.

    The CLI prints ``str(err)`` on one line to stderr and exits with code 2.
    """


class ModelError(GammalensError):
    """The model cannot be loaded or cannot be measured (no softmax attention, not routed through the interface)."""


class CorpusError(GammalensError):
    """The corpus cannot be read or is too short for the requested windows."""


class FitError(GammalensError):
    """The fit range or fit settings are invalid for the measured profile."""


class NonFiniteAttentionError(GammalensError):
    """Attention probabilities contain NaN or inf; the message names the layer and head."""


class TheoryError(GammalensError):
    """A theory quantity was asked for outside its domain (ε ∉ (0,1), T < 1, γ_Padé of a non-RoPE model, ...)."""


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (its type name if it has none), cut to ``limit``
    characters: how a third-party failure is quoted inside a one-line gammalens error."""
    lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(err).__name__)[:limit]
