"""sha256 of files, remembered per (path, size, modification time): a multi-GB checkpoint is read once per process
(``gammalens sinks`` measures one model three times; a GGUF is hashed for its cache key and for the manifest)."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path


def file_sha256(path: Path | str) -> str:
    """sha256 (hex) of a file's bytes, computed once per (resolved path, size, mtime) in a process."""
    p = Path(path)
    st = p.stat()
    return _sha256(str(p.resolve()), st.st_size, st.st_mtime_ns)


def sha256_now(path: Path | str) -> str:
    """sha256 (hex) of a file's bytes read now, never from memory (for checking a cache entry on disk)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_now(path)
