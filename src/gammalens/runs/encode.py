"""The public JSON encoder of run files and of every command's ``--json`` output.

NaN and ±inf become ``null`` (JSON has neither), paths become strings, NumPy and torch scalars their Python
values, tuples lists, and dict keys strings, recursively.

>>> to_jsonable({"gamma": float("nan"), 1: (1.5, None)})
{'gamma': None, '1': [1.5, None]}
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["to_jsonable"]


def to_jsonable(x: Any) -> Any:
    """``x`` with every value JSON can hold as itself and the rest converted (see the module docstring)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        return to_jsonable(x.item())
    return x
