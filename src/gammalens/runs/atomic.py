"""Files that exist whole or not at all, and the named stages of a run's life.

**Atomic files.** :func:`write_text` / :func:`write_bytes` write to a hidden temporary file in the same folder
(``.<name>.tmp-<pid>``), fsync it and :func:`os.replace` it over the target, so a reader sees the old file or
the new one, never a part. On any error the temporary file is removed and :class:`AtomicWriteError` (a
:class:`~gammalens.errors.GammalensError`) names the file and the OS error; the previous version of the file,
if any, is unchanged. :func:`prepare` and :func:`commit` do the same for several files that become visible
together (e.g. a grokking run's ``.csv`` then its ``.json``). A process killed by SIGKILL cannot clean up its
temporary file; :func:`remove_stale_temps` removes those of processes that no longer exist.

**Stages.** Every long command (``measure``, ``sinks``, ``sweep``, ``grok run`` / ``grok sweep``) calls
:func:`stage` at each boundary of a run's life, in this order (:data:`STAGES`):

``measured``
    the measurement (or training) is finished, in memory; nothing is written yet;
``staged``
    every file is written under a temporary name; the commit (the atomic rename) is next;
``written``
    committed: the run directory (or the run's files) is complete under its final name;
``recording``
    the atlas transaction is about to start (SIGINT/SIGTERM are held until it ends);
``recorded``
    the run is in the atlas (in a sweep: and its status is saved);
``reported``
    a sweep's document is rebuilt (``grok sweep``);
``done``
    the command's work is finished and its summary printed.

:func:`stage` records where the process is (:func:`life`), so that the interrupt handler of the CLI
(:mod:`gammalens.cli.failure`) can print one true line: before the commit nothing is left; after it, the run
is named with what was kept. It is also the fault-injection point of the tests: with
``GAMMALENS_FAULT_AT=<stage>`` it raises KeyboardInterrupt there (``<stage>:term``: the SIGTERM kind);
``<stage>:wait`` writes the file ``$GAMMALENS_FAULT_MARKER`` and waits there for a real signal (``#n`` after
the stage name: its n-th occurrence). Signals that arrive inside :func:`deferred_signals` (a commit, an atlas
transaction) are delivered when the block ends.

>>> write_text(Path("runs/s.sweep.json"), "{}\\n")     # doctest: +SKIP
>>> stage("written", run_dir=Path("runs/x"))           # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gammalens.errors import GammalensError

STAGES = ("measured", "staged", "written", "recording", "recorded", "reported", "done")
PRE_COMMIT = ("measured", "staged")  # an interrupt here leaves nothing behind
FAULT_ENV = "GAMMALENS_FAULT_AT"  # test hook: <stage>[#n][:term|:wait]
FAULT_MARKER_ENV = "GAMMALENS_FAULT_MARKER"  # with :wait, the file written once the process waits at the stage
_FAULT_WAIT_S = 120.0  # a :wait that no signal ends gives up after this (a broken test, not a hang)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process was so that cleanup runs as for Ctrl-C."""


class Interrupted(GammalensError):
    """Ctrl-C or SIGTERM, told in one line that says what was kept.

    Attributes
    ----------
    exit_code : int
        2, or 0 when all the work was committed (the line then says so).
    notice : bool
        The CLI prints ``gammalens: notice:`` instead of ``gammalens: error:``.
    """

    def __init__(self, message: str, exit_code: int = 2, notice: bool = False) -> None:
        super().__init__(message)
        self.exit_code, self.notice = exit_code, notice


class AtomicWriteError(GammalensError):
    """A file could not be written (a full disk, a permission changed mid-run); nothing of it was left.

    Attributes
    ----------
    path : Path
        The file that was to be written.
    errno : int or None
        The OS error's number (``errno.ENOSPC`` for a full disk).
    strerror : str
        The OS error, in words.
    """

    def __init__(self, path: Path, err: OSError) -> None:
        self.path, self.errno = Path(path), err.errno
        self.strerror = err.strerror or str(err) or type(err).__name__
        super().__init__(f"cannot write {self.path} ({self.strerror}); it is as it was, nothing was left "
                         "half-written")


# --- stages ------------------------------------------------------------------------------------------------

_LIFE: dict[str, Any] = {}
_HITS: dict[str, int] = {}
_PENDING: list[int] = []  # signals held by deferred_signals blocks, not yet delivered


def begin() -> None:
    """Forget the stages seen so far (a command starts)."""
    _LIFE.clear()
    _HITS.clear()


def life() -> dict[str, Any]:
    """Where the process is: ``{'stage': name, **facts}`` of the stages called since the run's ``measured``."""
    return dict(_LIFE)


def seen() -> dict[str, int]:
    """How often each stage was reached since :func:`begin` (tests check that a command passes them all)."""
    return dict(_HITS)


def stage(name: str, **facts: Any) -> None:
    """Mark a boundary of a run's life (one of :data:`STAGES`), with the facts an interrupt line needs.

    ``measured`` starts a new run's life (the facts of the previous run are forgotten but ``last_written``,
    what the last commit wrote). Facts in use: ``run_dir`` (the committed run directory), ``files`` (committed
    files), ``record`` (the run is to be recorded in the atlas), ``recorded`` (it is), ``atlas`` (the atlas
    file passed on the command line), ``report`` (a rebuilt document).
    """
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; one of {STAGES}")
    if name == "measured":  # a new run: its facts, and what the runs before it committed (``last_written``)
        last = _LIFE.get("last_written")
        _LIFE.clear()
        if last is not None:
            _LIFE["last_written"] = last
    _LIFE.update(facts)
    _LIFE["stage"] = name
    if name == "written":
        _LIFE["last_written"] = facts.get("run_dir") or " and ".join(str(f) for f in facts.get("files") or ())
    _HITS[name] = _HITS.get(name, 0) + 1
    spec = os.environ.get(FAULT_ENV)
    if spec:
        _inject(name, spec)


def _inject(name: str, spec: str) -> None:
    where, _, mode = spec.partition(":")
    want, _, nth = where.partition("#")
    if want.strip() != name or _HITS[name] != int(nth or 1):
        return
    if mode == "wait":
        marker = os.environ.get(FAULT_MARKER_ENV)
        if marker:
            Path(marker).write_text(f"{name} {os.getpid()}\n")
        deadline = time.monotonic() + _FAULT_WAIT_S
        while not _PENDING:  # a signal outside deferred_signals raises out of the sleep
            if time.monotonic() > deadline:
                raise RuntimeError(f"{FAULT_ENV}={spec}: no signal came within {_FAULT_WAIT_S:.0f} s")
            time.sleep(0.01)
        return
    raise (Terminated if mode == "term" else KeyboardInterrupt)(f"{FAULT_ENV}={spec}")


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver the first one (a second one does not wait).

    For the short steps that must not be cut in two: a rename and the stage that says it happened, an atlas
    transaction (DuckDB turns a SIGINT inside a query into its own errors, which would mask the interrupt).
    The signal is delivered to the handler that was in place (Python's Ctrl-C, the CLI's SIGTERM), or
    re-sent to the process where that was the default action. Ignored signals stay ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        caught.append(signum)
        _PENDING.append(signum)
        if len(caught) > 1:  # a second Ctrl-C does not wait (a transaction still rolls back)
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) not in (signal.SIG_IGN, None):
            previous[sig] = signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in caught:
            with contextlib.suppress(ValueError):
                _PENDING.remove(signum)
        if caught:
            _deliver(caught[0], previous[caught[0]])


def _deliver(signum: int, handler: Any) -> None:
    if callable(handler):
        handler(signum, None)  # raises (KeyboardInterrupt, Terminated), as the signal would have
    else:  # SIG_DFL: what the signal would have done
        os.kill(os.getpid(), signum)


# --- atomic files ------------------------------------------------------------------------------------------

_TEMP = re.compile(r"^\..+\.tmp-(\d+)$")


def temp_path(path: Path) -> Path:
    """The hidden temporary name of ``path`` for this process: ``.<name>.tmp-<pid>`` next to it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _write_synced(tmp: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``tmp`` and fsync it: every atomic file's one write (tests patch it)."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Prepared:
    """A file written under its temporary name, waiting for :func:`commit`."""

    path: Path
    tmp: Path


def prepare(path: Path | str, data: str | bytes, *, encoding: str = "utf-8") -> Prepared:
    """Write ``data`` to ``path``'s temporary name and fsync it; :func:`commit` makes it ``path``.

    Raises
    ------
    AtomicWriteError
        The temporary file could not be written; it was removed.
    """
    path = Path(path)
    tmp = temp_path(path)
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    try:
        _write_synced(tmp, payload)
    except OSError as err:
        _unlink(tmp)
        raise AtomicWriteError(path, err) from None
    except BaseException:
        _unlink(tmp)
        raise
    return Prepared(path, tmp)


def discard(*prepared: Prepared) -> None:
    """Remove the temporary files of files that will not be committed."""
    for p in prepared:
        _unlink(p.tmp)


def commit(*prepared: Prepared, then: Callable[[], None] | None = None) -> None:
    """Rename prepared files over their targets, in order, with signals held; then call ``then`` (a stage).

    Raises
    ------
    AtomicWriteError
        A rename failed; the temporary files not yet renamed were removed.
    """
    with deferred_signals():
        for i, p in enumerate(prepared):
            try:
                os.replace(p.tmp, p.path)
            except OSError as err:
                discard(*prepared[i:])
                raise AtomicWriteError(p.path, err) from None
            except BaseException:
                discard(*prepared[i:])
                raise
        _sync_dir(prepared[0].path.parent if prepared else None)
        if then is not None:
            then()


def write_bytes(path: Path | str, data: bytes, *, then: Callable[[], None] | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); return ``path``."""
    commit(prepare(path, data), then=then)
    return Path(path)


def write_text(path: Path | str, text: str, *, encoding: str = "utf-8", then: Callable[[], None] | None = None) -> Path:
    """Write ``text`` to ``path`` atomically (see the module docstring); return ``path``."""
    commit(prepare(path, text, encoding=encoding), then=then)
    return Path(path)


def _sync_dir(folder: Path | None) -> None:
    """fsync a folder so a rename in it survives a power cut (best effort: some filesystems refuse)."""
    if folder is None or not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temps(folder: Path | str) -> list[Path]:
    """Remove the temporary files ``.<name>.tmp-<pid>`` in ``folder`` whose process no longer exists.

    Returns
    -------
    list of Path
        What was removed.
    """
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP.match(p.name)
        if m is None or not p.is_file() or int(m.group(1)) == os.getpid() or _alive(int(m.group(1))):
            continue
        _unlink(p)
        removed.append(p)
    return removed
