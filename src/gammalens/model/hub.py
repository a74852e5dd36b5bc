"""Hugging Face Hub lookups that fail fast and quietly when the Hub cannot be reached.

Offline, ``huggingface_hub`` retries each request with back-off and logs a line per retry
("Retrying in 8s [Retry 5/5]") before failing — a dozen lines and half a minute for what is one fact:
the Hub is unreachable. :func:`reachable_or_raise` checks that once with a short TCP connect (skipped when
``HF_HUB_OFFLINE`` is set: the library then fails at once by itself), and :func:`quiet` silences the
retry lines of a lookup that does go ahead.

>>> with quiet():                              # doctest: +SKIP
...     reachable_or_raise()
...     snapshot_download("EleutherAI/pythia-70m")
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

CONNECT_TIMEOUT_S = 3.0


def _offline() -> bool:
    return any(os.environ.get(k, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def reachable_or_raise(timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ``ConnectionError`` in about ``timeout`` seconds if the Hub's host cannot be reached.

    The host is ``$HF_ENDPOINT``'s, else huggingface.co. Nothing is checked when the Hub is switched off
    (``HF_HUB_OFFLINE=1``): lookups then fail immediately without network traffic.
    """
    if _offline():
        return
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(f"the Hugging Face Hub ({host}) is unreachable ({err.strerror or err}); "
                              "offline? pass a local path instead") from None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence huggingface_hub's retry warnings for the block; restore its log level afterwards."""
    log = logging.getLogger("huggingface_hub")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
