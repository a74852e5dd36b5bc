"""How the ``gammalens`` command fails: one line on stderr and exit code 2, never a traceback for a
failure the user can act on.

:func:`clean_exit` wraps the command. It turns into one line:

- a :class:`~gammalens.errors.GammalensError` (bad input, found by our own checks);
- a command-line usage error (a bad value, an unknown option or command, a missing argument), from
  typer's vendored click or from click;
- Ctrl-C, and SIGTERM (turned into :class:`Terminated` so the writers' ``finally`` blocks remove their
  partial output, exactly as for Ctrl-C), told truly whatever stage the run had reached
  (:data:`gammalens.runs.atomic.STAGES`): before the commit nothing is left; after it the line names the run
  directory and what of it was kept — ``gammalens: error:`` and exit code 2, or ``gammalens: notice:`` and exit
  code 0 when all the work was committed;
- an ``OSError`` from the environment (a full disk, a permission changed mid-run) and an error of the
  atlas database that escaped the atlas's own checks.

Anything else is a bug and keeps its traceback (exit code 1).

>>> with clean_exit():                        # doctest: +SKIP
...     app(args=argv, standalone_mode=False)

Inside a command, :func:`ctrl_c_is_an_error` wraps the work that may be interrupted (and the printing of its
summary: an interrupt there is told too); ``describe`` lets a command that knows better (a sweep) say what
was kept.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

from gammalens.errors import GammalensError
from gammalens.runs.atomic import PRE_COMMIT, Interrupted, Terminated, begin, life, seen, stage

__all__ = ["USAGE", "Interrupted", "Terminated", "clean_exit", "ctrl_c_is_an_error", "interrupted", "stage"]

USAGE = 2  # exit code of every clean failure
TYPER_INTERRUPT = 130  # what typer returns for a KeyboardInterrupt it caught itself (it prints nothing)

Describe = Callable[[str], "Interrupted | None"]  # "interrupted" or "terminated (SIGTERM)" → the line, or None
_SIGNALLED: list[int] = []  # the signals this process received under clean_exit


def _on_sigterm(signum: int, frame: Any) -> None:
    _SIGNALLED.append(signum)
    raise Terminated()


def _on_sigint(signum: int, frame: Any) -> None:
    _SIGNALLED.append(signum)
    raise KeyboardInterrupt()


def _kind(err: BaseException | None) -> str:
    if isinstance(err, Terminated) or (err is None and _SIGNALLED and _SIGNALLED[-1] == signal.SIGTERM):
        return "terminated (SIGTERM)"
    return "interrupted"


def _quote(path: Any) -> str:
    return shlex.quote(str(path))


def interrupted(err: BaseException | None, describe: Describe | None = None, *, one_run: bool = False) -> Interrupted:
    """The one true line for Ctrl-C or SIGTERM (``err``), from the stage the run had reached.

    ``describe(kind)`` may tell it instead (a sweep knows which cells are kept); None falls back to the stage.
    ``one_run``: the command writes one run (measure, sinks, grok run), so the run's stage is the command's;
    otherwise a commit only tells that what was written so far is complete.
    """
    kind = _kind(err)
    if describe is not None:
        told = describe(kind)
        if told is not None:
            return told
    facts = life()
    where = facts.get("stage")
    if where is None or (where in PRE_COMMIT and seen().get("written", 0) == 0):
        return Interrupted(f"{kind}; no partial output was left behind")
    run_dir, files = facts.get("run_dir"), [str(f) for f in facts.get("files") or ()]
    kept = str(run_dir) if run_dir is not None else " and ".join(files) or "the output"
    verb = "are" if run_dir is None and len(files) > 1 else "is"
    if not one_run or seen().get("measured", 0) > 1:  # a command of many runs: only what was written is known
        return Interrupted(f"{kind}: what was written so far is complete (the last: {facts.get('last_written')}) "
                           "and nothing was left half-written; the rest was not done")
    if facts.get("record") and not facts.get("recorded"):
        record = f"gammalens atlas record {_quote(run_dir)}" + (
            f" --atlas {_quote(facts['atlas'])}" if facts.get("atlas") is not None else "")
        return Interrupted(f"{kind} after the run was written: {kept} is complete but not recorded in the atlas; "
                           f"record it with `{record}`")
    if facts.get("recorded"):
        atlas = f" ({facts['atlas']})" if facts.get("atlas") is not None else ""
        return Interrupted(f"{kind} after the run was written and recorded: {kept} is complete and in the "
                           f"atlas{atlas}; all the work was committed", exit_code=0, notice=True)
    if run_dir is None:
        return Interrupted(f"{kind} after {kept} {'were' if verb == 'are' else 'was'} written (complete); all the "
                           "work was committed", exit_code=0, notice=True)
    return Interrupted(f"{kind} after the run was written: {kept} is complete; all the work was committed",
                       exit_code=0, notice=True)


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


def _fail(message: str, code: int = USAGE, notice: bool = False) -> None:
    print(f"gammalens: {'notice' if notice else 'error'}: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(code)


def _told(err: Interrupted) -> None:
    _fail(str(err), err.exit_code, err.notice)


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
def ctrl_c_is_an_error(describe: Describe | None = None, *, one_run: bool = False) -> Iterator[None]:
    """Turn Ctrl-C and SIGTERM into an :class:`Interrupted` line here (typer would otherwise swallow them into
    a silent exit code 130), told by ``describe`` or by the stage the run had reached (see :func:`interrupted`)."""
    try:
        yield
    except KeyboardInterrupt as err:
        raise interrupted(err, describe, one_run=one_run) from None


@contextlib.contextmanager
def clean_exit() -> Iterator[None]:
    """Run the command body; every failure the user can act on becomes one line on stderr and exit 2."""
    usage, clicks, aborts = _click_exceptions()
    begin()
    _SIGNALLED.clear()
    previous: dict[int, Any] = {}
    with contextlib.suppress(ValueError):  # only the main thread may install signal handlers
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, _on_sigterm)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # an ignored Ctrl-C stays ignored
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    except SystemExit as ex:
        if ex.code == TYPER_INTERRUPT:  # typer caught an interrupt (no command exits 130 itself) and said nothing
            _told(interrupted(None))
        raise
    except Interrupted as err:
        _told(err)
    except GammalensError as err:
        _fail(str(err))
    except KeyboardInterrupt as err:
        _told(interrupted(err))
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
        for sig, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)
