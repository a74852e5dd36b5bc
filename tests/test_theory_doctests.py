"""The tiny examples in the theory docstrings run and give what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [f"gammalens.theory.{name}" for name in ("annotate", "fractional", "kv_window", "pade", "phases", "rope",
                                                    "thermo")]
MODULES += ["gammalens.fit.power_law", "gammalens.fit.bootstrap", "gammalens.model.architecture", "gammalens.card.config_card", "gammalens.card.kv_cache", "gammalens.card.params"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
