"""Writing run directories atomically: whole or not at all (see docs/run_format.md)."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from gammalens.errors import GammalensError
from gammalens.runs import atomic
from gammalens.runs import schema as run_format
from gammalens.runs.encode import to_jsonable

FIT_COLUMNS = list(run_format.FIT_COLUMNS)  # the writer's column order: the format's table


class RunWriter:
    """Creates ``<parent>/<run_id>/`` atomically.

    The parent's writability is checked at construction, before any expensive work, so an unwritable
    ``--out`` fails in a second, not after the forward passes. With ``lazy=True`` a parent that does not
    exist yet is checked through its nearest existing ancestor and created only when the run is written,
    so a run that fails leaves no empty ``--out`` folder behind; otherwise it is created now.
    """

    def __init__(self, parent: Path, *, lazy: bool = False) -> None:
        self.parent = Path(parent)
        if not lazy:
            try:
                self.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise GammalensError(f"output directory {self.parent} cannot be created ({err.strerror}); "
                                     "pass --out DIR") from None
        existing = self.parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        try:
            if not existing.is_dir():
                raise NotADirectoryError(20, "not a directory", str(existing))
            probe = existing / f".gammalens-write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise GammalensError(f"output directory {self.parent} is not writable ({err.strerror}); pass --out DIR") from None
        if self.parent.is_dir():
            remove_stale_partials(self.parent)  # what runs killed by SIGKILL left behind

    def write(self, manifest: dict, fits: list[dict], profile: Any, extras: Any = None) -> Path:
        """Write manifest, fits.csv and profile.npz; ``extras(partial_dir)`` may add files before the rename."""
        created = not self.parent.exists()
        try:
            self.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise GammalensError(f"output directory {self.parent} cannot be created ({err.strerror}); pass --out DIR") from None
        try:
            return self._write(manifest, fits, profile, extras)
        except BaseException:
            if created:  # a failed first run leaves no empty --out folder behind
                with contextlib.suppress(OSError):
                    self.parent.rmdir()
            raise

    def _write(self, manifest: dict, fits: list[dict], profile: Any, extras: Any) -> Path:
        remove_stale_partials(self.parent)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(manifest["model"]["id"])).name or "model").strip("-")
        digest = hashlib.sha256(json.dumps(to_jsonable(manifest["settings"]), sort_keys=True).encode()).hexdigest()[:8]
        run_id = f"{slug}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{digest}"
        final, lock = self._reserve(run_id)
        manifest = {**manifest, "run_id": final.name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp = self.parent / f".{final.name}.partial-{os.getpid()}"
        try:
            tmp.mkdir()
            atomic.write_text(tmp / "manifest.json", json.dumps(to_jsonable(manifest), indent=2, sort_keys=False) + "\n")
            write_fits_csv(tmp / "fits.csv", fits)
            # the layout the measurement chose and recorded (manifests from before the choice: full)
            profile.save(tmp / "profile.npz", layout=str(manifest.get("profile_layout", "full")))
            if extras is not None:
                extras(tmp, manifest)
            atomic.stage("staged")
            with atomic.deferred_signals():  # the rename and the stage that says it happened are one step
                os.rename(tmp, final)
                atomic.stage("written", run_dir=final)
        except (OSError, atomic.AtomicWriteError) as err:  # a full disk, a permission changed mid-run: nothing is kept
            shutil.rmtree(tmp, ignore_errors=True)
            if final.is_dir():  # the commit happened; what failed came after it
                raise
            why = err.strerror if isinstance(err, atomic.AtomicWriteError) else (err.strerror or err)
            raise GammalensError(f"cannot write the run directory {final} ({why}); nothing was "
                                 "kept — free some space or pass another --out") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            lock.unlink(missing_ok=True)
        manifest.update(run_id=final.name)
        return final

    def _reserve(self, run_id: str) -> tuple[Path, Path]:
        """The first free name ``run_id``, ``run_id-2`` …, held by an exclusive lock file ``.<name>.lock`` (which
        holds our pid) until the rename, so two identical runs finishing in the same second never race."""
        n = 1
        while True:
            final = self.parent / (run_id if n == 1 else f"{run_id}-{n}")
            lock = self.parent / f".{final.name}.lock"
            if not final.exists():
                try:
                    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    fd = None
                except OSError as err:
                    raise GammalensError(f"cannot write in {self.parent} ({err.strerror}); pass another --out") from None
                if fd is not None:
                    with os.fdopen(fd, "w") as fh:
                        fh.write(str(os.getpid()))
                    if not final.exists():
                        return final, lock
                    lock.unlink(missing_ok=True)
            n += 1


_PARTIAL = re.compile(r"^\..+\.partial-(\d+)$")
_LOCK = re.compile(r"^\..+\.lock$")
_LOCK_GRACE_S = 60.0  # a lock without a pid (killed between create and write) is stale after this


def _owner(path: Path) -> int | None:
    """The pid owning a partial folder or lock; 0: unknown and old enough to be stale; None: not ours to judge."""
    m = _PARTIAL.match(path.name)
    if m:
        return int(m.group(1))
    if _LOCK.match(path.name) and path.is_file():
        try:
            text = path.read_text().strip()
            if text.isdigit():
                return int(text)
            return 0 if time.time() - path.stat().st_mtime > _LOCK_GRACE_S else None
        except OSError:
            return None
    return None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_partials(parent: Path) -> list[Path]:
    """Remove the hidden partial run folders (and name locks) in ``parent`` whose process is gone.

    A run killed by SIGKILL cannot clean up after itself; the next run written into the same folder does.
    Only entries named ``.<run>.partial-<pid>``, and name locks ``.<run>.lock`` holding a pid, whose process
    no longer exists on this machine are removed.

    Returns
    -------
    list of Path
        What was removed.
    """
    removed = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    for p in entries:
        pid = _owner(p)
        if pid is None or pid == os.getpid() or _alive(pid):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def write_fits_csv(path: Path, rows: list[dict]) -> None:
    """Write fits rows; the standard columns first, any extra (theory) columns after, in first-seen order."""
    extra = [k for r in rows for k in r if k not in FIT_COLUMNS]
    cols = FIT_COLUMNS + list(dict.fromkeys(extra))
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k)) for k in cols})
    atomic.write_text(path, buf.getvalue())


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if not math.isfinite(v) else repr(float(v))
    return v
