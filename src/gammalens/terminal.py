"""Where tables go: the terminal's width on a terminal, a wide page when piped (a file, a log, CI).

rich gives output that is not a terminal 80 columns, which squeezes the wide tables of ``measure``,
``sinks`` and ``atlas`` into ``0.…`` and ``lay…`` exactly where results are kept; a pipe gets
:data:`PIPE_WIDTH` columns instead, and no colour codes.

>>> console().width >= 80                     # doctest: +SKIP
True
"""

from __future__ import annotations

from typing import Any

PIPE_WIDTH = 250  # columns for output that is not a terminal: the widest table (sinks, per head) fits


def console(stderr: bool = False) -> Any:
    """A rich ``Console`` for stdout (or stderr): as is on a terminal, :data:`PIPE_WIDTH` wide when piped."""
    from rich.console import Console

    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=PIPE_WIDTH)
