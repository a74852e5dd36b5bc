"""Moved to :mod:`gammalens.card.params` (predictions from a config alone live in ``gammalens.card``; ``theory`` holds pure
formulas). These names stay importable from here."""

from gammalens.card.params import *  # noqa: F403
