"""How the ``gammalens`` command fails: one line on stderr and exit code 2, never a traceback for a
failure the user can act on.

:func:`clean_exit` wraps the command. It turns into one line:

- a :class:`~gammalens.errors.GammalensError` (bad input, found by our own checks);
- a command-line usage error (a bad value, an unknown option or command, a missing argument), from
  typer's vendored click or from click;
- Ctrl-C, and SIGTERM (turned into :class:`Terminated` so the writers' ``finally`` blocks remove their
  partial output, exactly as for Ctrl-C);
- an ``OSError`` from the environment (a full disk, a permission changed mid-run) and an error of the
  atlas database that escaped the atlas's own checks.

Anything else is a bug and keeps its traceback (exit code 1).

>>> with clean_exit():                        # doctest: +SKIP
...     app(args=argv, standalone_mode=False)

Inside a command, :func:`ctrl_c_is_an_error` wraps the work that may be interrupted.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import Any

from gammalens.errors import GammalensError

USAGE = 2  # exit code of every clean failure


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process was so that cleanup runs as for Ctrl-C."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(usage errors, other click exceptions, aborts) of typer's vendored click and of click, if installed."""
    mods = []
    with contextlib.suppress(ImportError):
        import typer._click.exceptions as vendored

        mods.append(vendored)
    with contextlib.suppress(ImportError):
        import click.exceptions as upstream

        mods.append(upstream)
    aborts = [getattr(m, "Abort", None) for m in mods]
    with contextlib.suppress(ImportError):
        import typer

        aborts.append(getattr(typer, "Abort", None))
    return (tuple(m.UsageError for m in mods), tuple(m.ClickException for m in mods),
            tuple(a for a in aborts if isinstance(a, type)))


def _fail(message: str) -> None:
    print(f"gammalens: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(USAGE)


def _environment_message(err: BaseException) -> str | None:
    """One line for a failure of the machine rather than of gammalens; None for anything else (a bug)."""
    if isinstance(err, OSError):
        what = err.strerror or str(err)
        where = f": {err.filename}" if getattr(err, "filename", None) else ""
        return f"{what}{where}; nothing was left half-written"
    if any(c.__module__.lstrip("_").split(".")[0] == "duckdb" for c in type(err).__mro__):  # duckdb or _duckdb
        first = (str(err).splitlines() or [type(err).__name__])[0]
        return f"the atlas database failed ({first}); check its file and free disk space, or pass another --atlas"
    return None


@contextlib.contextmanager
def ctrl_c_is_an_error() -> Iterator[None]:
    """Turn Ctrl-C into a GammalensError here: click would otherwise swallow it in non-standalone mode."""
    try:
        yield
    except KeyboardInterrupt:
        raise GammalensError("interrupted; no partial output was left behind") from None


@contextlib.contextmanager
def clean_exit() -> Iterator[None]:
    """Run the command body; every failure the user can act on becomes one line on stderr and exit 2."""
    usage, clicks, aborts = _click_exceptions()
    previous = None
    with contextlib.suppress(ValueError):  # only the main thread may install signal handlers
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    except GammalensError as err:
        _fail(str(err))
    except Terminated:
        _fail("terminated (SIGTERM); no partial output was left behind")
    except KeyboardInterrupt:
        _fail("interrupted; no partial output was left behind")
    except usage as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # `gammalens` alone: the help, not an error
            print(err.format_message())
            sys.exit(0)
        hint = f" (see `{err.ctx.command_path} --help`)" if getattr(err, "ctx", None) is not None else ""
        _fail(err.format_message() + hint)
    except clicks as err:
        _fail(err.format_message())
    except aborts:
        _fail("aborted")
    except Exception as err:
        message = _environment_message(err)
        if message is None:
            raise
        _fail(message)
    finally:
        if previous is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, previous)
