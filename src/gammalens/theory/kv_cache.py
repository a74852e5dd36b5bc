"""Moved to :mod:`gammalens.card.kv_cache` (predictions from a config alone live in ``gammalens.card``; ``theory`` holds pure
formulas). These names stay importable from here."""

from gammalens.card.kv_cache import *  # noqa: F403
