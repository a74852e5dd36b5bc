"""The tiny examples in the theory docstrings run and give what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["annotate", "architecture", "card", "fractional", "kv_cache", "kv_window", "pade", "params", "phases",
           "rope", "thermo"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"gammalens.theory.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
