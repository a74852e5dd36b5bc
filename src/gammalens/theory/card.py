"""Moved to :mod:`gammalens.card.config_card` (predictions from a config alone live in ``gammalens.card``; ``theory`` holds pure
formulas). These names stay importable from here."""

from gammalens.card.config_card import *  # noqa: F403
