"""Issue 25, item 1: corpus text that is not plain UTF-8 is read (with a notice naming the file and the encoding) or
refused (in one line naming the encoding); a folder never drops a file without a word — skipped files are counted,
with their reason, in the corpus manifest and in one line on stderr.

Files are written here in each encoding and read through ``load_windows`` with gammalens-tiny's tokenizer; a file
that is read must give exactly the windows of the same text written as UTF-8.
"""

from __future__ import annotations

import codecs
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gammalens.corpus import load_windows
from gammalens.corpus.sources import decode_file, single_byte_reading
from gammalens.errors import CorpusError

TINY_DIR = Path(__file__).resolve().parents[1] / "src" / "gammalens" / "zoo" / "gammalens-tiny"
# Latin-1 text every plausible single-byte reading agrees on (ä ö ü ß are the same bytes in the Western and Central
# European encodings; Cyrillic, Greek and Mac Roman readings are not text: 'GrцЯe', 'Grφίe', 'Grˆﬂe')
GERMAN = "Die Größe der Übermäßigen ist schön, über alle Maßen höflich und groß. " * 12
# Latin-1 text the encodings disagree on: Latin-1 'très', Windows-1250 'trčs'
FRENCH = "Il était très tôt à côté de la forêt, où l'élève gèle. " * 12
# beyond any single-byte encoding: Greek, CJK, an emoji (only the UTF encodings can hold it)
WIDE = "γ = 0.5 · 注意力の減衰 · attention decays 🙂 with distance d. " * 12


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY_DIR)


def _write(folder: Path, name: str, text: str, encoding: str) -> Path:
    """``text`` in ``encoding`` as the file ``folder/name``; 'utf-16-be+bom' and 'utf-32-be+bom' add the mark."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if encoding.endswith("+bom"):
        codec = encoding.removesuffix("+bom")
        bom = {"utf-16-be": codecs.BOM_UTF16_BE, "utf-32-be": codecs.BOM_UTF32_BE}[codec]
        path.write_bytes(bom + text.encode(codec))
    else:
        path.write_bytes(text.encode(encoding))
    return path


def _stderr_lines(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


@pytest.mark.parametrize(("encoding", "text", "named"), [
    ("utf-8-sig", WIDE, "UTF-8 with a byte-order mark"),
    ("utf-16", WIDE, "UTF-16-LE (byte-order mark)"),           # Python's utf-16 writes the mark, little-endian
    ("utf-16-be+bom", WIDE, "UTF-16-BE (byte-order mark)"),
    ("utf-32", WIDE, "UTF-32-LE (byte-order mark)"),
    ("utf-32-be+bom", WIDE, "UTF-32-BE (byte-order mark)"),
    ("latin-1", GERMAN, "Latin-1 (ISO-8859-1)"),
])
def test_each_encoding_reads_as_its_utf8_text_with_one_notice(tmp_path, tok, capsys, encoding, text, named):
    reference = load_windows(str(_write(tmp_path / "utf8", "doc.txt", text, "utf-8")), tok, context=64, windows=3)
    assert _stderr_lines(capsys) == []  # plain UTF-8: nothing to say
    path = _write(tmp_path / "other", "doc.txt", text, encoding)
    tw = load_windows(str(path), tok, context=64, windows=3)
    np.testing.assert_array_equal(tw.input_ids, reference.input_ids)
    assert tw.sha256 == reference.sha256  # same name, same tokens: the byte-order mark is not text
    lines = _stderr_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("gammalens: note:"), lines
    assert str(path) in lines[0] and named in lines[0], lines[0]
    manifest = json.loads(json.dumps(tw.to_manifest()))
    assert manifest["n_decoded_files"] == 1 and manifest["decoded_files"] == [{"file": "doc.txt", "encoding": named}]
    assert manifest["n_skipped_files"] == 0 and manifest["skipped_reasons"] == {}


@pytest.mark.parametrize(("data", "needles"), [
    (FRENCH.encode("latin-1"), ("not UTF-8", "ambiguous", "Latin-1", "'très'", "Windows-1250", "'trčs'", "iconv")),
    ("Привет, как дела? " * 20, ("ambiguous", "Latin-1", "'Ïðèâåò,'")),   # Windows-1251, read as Latin-1 too
    (codecs.BOM_UTF16_LE + "abc".encode("utf-16-le") + b"\x00", ("UTF-16-LE byte-order mark", "not valid UTF-16-LE")),
    (codecs.BOM_UTF8 + b"caf\xe9 " * 40, ("UTF-8 byte-order mark", "not valid UTF-8")),
    ("no mark, UTF-16 all the same".encode("utf-16-le") * 20, ("NUL bytes", "byte-order mark")),
])
def test_a_single_file_that_is_not_text_is_refused_in_one_line_naming_the_encoding(tmp_path, tok, data, needles):
    if isinstance(data, str):
        data = data.encode("cp1251")
    path = tmp_path / "doc.txt"
    path.write_bytes(data)
    with pytest.raises(CorpusError) as err:
        load_windows(str(path), tok, context=64, windows=1)
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    for needle in needles:
        assert needle in message, (needle, message)


def test_a_folder_counts_every_skipped_file_with_its_reason(tmp_path, tok, capsys):
    root = tmp_path / "corpus"
    _write(root, "a.txt", GERMAN, "utf-8")
    _write(root, "b/wide.txt", WIDE, "utf-16")
    _write(root, "c/german.txt", GERMAN, "latin-1")
    _write(root, "d/french.txt", FRENCH, "latin-1")                    # ambiguous single-byte: skipped
    (root / "e.bin").write_bytes(bytes(range(256)) * 8)                # NUL bytes: binary
    (root / "f.txt").write_bytes(codecs.BOM_UTF16_BE + b"\xd8\x00")    # a lone surrogate after the mark
    # three readable documents, each long enough for two windows: a fourth window makes every document be read
    tw = load_windows(str(root), tok, context=64, windows=4)
    assert set(tw.doc_ids) == {"a.txt", "b/wide.txt", "c/german.txt"}
    manifest = json.loads(json.dumps(tw.to_manifest()))
    assert manifest["n_skipped_files"] == 3
    assert manifest["skipped_reasons"] == {"binary": 1, "undecodable": 2}
    skipped = {s["file"]: s for s in manifest["skipped_files"]}
    assert set(skipped) == {"d/french.txt", "e.bin", "f.txt"}
    assert skipped["e.bin"]["reason"] == "binary" and "NUL" in skipped["e.bin"]["detail"]
    assert "ambiguous" in skipped["d/french.txt"]["detail"] and "UTF-16-BE" in skipped["f.txt"]["detail"]
    assert {d["file"]: d["encoding"] for d in manifest["decoded_files"]} == {
        "b/wide.txt": "UTF-16-LE (byte-order mark)", "c/german.txt": "Latin-1 (ISO-8859-1)"}
    lines = _stderr_lines(capsys)
    assert len(lines) == 3 and all(ln.startswith("gammalens: note:") for ln in lines), lines
    assert sum("is not plain UTF-8: read as" in ln for ln in lines) == 2
    summary = next(ln for ln in lines if "skipped" in ln)
    assert "3 files skipped as not text (1 binary, 2 undecodable)" in summary and "manifest" in summary


def test_a_folder_with_nothing_readable_says_what_it_skipped(tmp_path, tok):
    root = tmp_path / "corpus"
    _write(root, "french.txt", FRENCH, "latin-1")
    (root / "blob.bin").write_bytes(b"\0\1\2" * 100)
    with pytest.raises(CorpusError, match=r"empty.*2 files skipped as not text \(1 binary, 1 undecodable\)"):
        load_windows(str(root), tok, context=64, windows=1)


def test_unreadable_files_are_counted(tmp_path, tok, capsys, monkeypatch):
    root = tmp_path / "corpus"
    _write(root, "a.txt", GERMAN, "utf-8")
    _write(root, "locked.txt", GERMAN, "utf-8")
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "locked.txt":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    tw = load_windows(str(root), tok, context=64, windows=3)
    assert tw.to_manifest()["skipped_reasons"] == {"unreadable": 1}
    assert tw.skipped == (("locked.txt", "unreadable", "Permission denied"),)
    assert any("1 file skipped as not text (1 unreadable)" in ln for ln in _stderr_lines(capsys))


def test_jsonl_with_a_byte_order_mark(tmp_path, tok, capsys):
    records = "\n".join(json.dumps({"text": WIDE}, ensure_ascii=False) for _ in range(3))
    plain = _write(tmp_path / "utf8", "docs.jsonl", records, "utf-8")
    marked = _write(tmp_path / "utf16", "docs.jsonl", records, "utf-16")
    a = load_windows(str(plain), tok, context=64, windows=3)
    b = load_windows(str(marked), tok, context=64, windows=3)
    np.testing.assert_array_equal(a.input_ids, b.input_ids)
    lines = _stderr_lines(capsys)
    assert len(lines) == 1 and "UTF-16-LE" in lines[0] and str(marked) in lines[0]


def test_plain_utf8_and_random_manifests_have_the_new_fields_at_zero(tmp_path, tok, capsys):
    for spec in (str(_write(tmp_path, "doc.txt", GERMAN, "utf-8")), "random"):
        m = load_windows(spec, tok, context=64, windows=2).to_manifest()
        assert (m["n_skipped_files"], m["skipped_reasons"], m["skipped_files"]) == (0, {}, [])
        assert (m["n_decoded_files"], m["decoded_files"]) == (0, [])
    assert _stderr_lines(capsys) == []


def test_single_byte_reading_rules():
    assert single_byte_reading("Größe".encode("latin-1"))[:2] == ("Größe", "Latin-1 (ISO-8859-1)")
    # Windows-1252's smart quotes are C1 controls in Latin-1, so Windows-1252 is named; Mac Roman reads them as the
    # letters 'ì…î', which is text, but its 'Grˆﬂe' is not: one reading
    assert single_byte_reading("“quoted” Größe".encode("cp1252"))[:2] == ("“quoted” Größe", "Windows-1252")
    text, _, why = single_byte_reading("“quoted” café".encode("cp1252"))  # Mac Roman's 'ìquotedî cafÈ' is text too
    assert text is None and "Windows-1252" in why and "Mac Roman" in why
    # Czech in Windows-1250: the Western readings hold undefined bytes or controls, the others mix scripts
    czech = "Příliš žluťoučký kůň úpěl ďábelské ódy"
    assert single_byte_reading(czech.encode("cp1250"))[:2] == (czech, "Windows-1250")
    assert single_byte_reading(bytes(range(1, 32)) + b"\x81\x8d")[0] is None


def test_the_measure_manifest_and_stderr_carry_the_skipped_files(tmp_path, capsys):
    """Through `gammalens measure` with gammalens-tiny: the run's manifest.json counts the skipped files."""
    from gammalens.cli import main

    root = tmp_path / "corpus"
    for k in range(3):
        _write(root, f"doc{k}.txt", GERMAN, "utf-8")
    (root / "blob.bin").write_bytes(b"\0" * 64)
    _write(root, "fr.txt", FRENCH, "latin-1")
    with pytest.raises(SystemExit) as done:
        main(["measure", "gammalens-tiny", "--corpus", str(root), "--context", "64", "--windows", "6",
              "--bootstrap", "10", "--out", str(tmp_path / "runs"), "--no-atlas", "--no-report", "--quiet"])
    cap = capsys.readouterr()
    assert done.value.code in (0, None), cap.err
    notes = [ln for ln in cap.err.splitlines() if "corpus" in ln]
    assert len(notes) == 1 and "2 files skipped as not text (1 binary, 1 undecodable)" in notes[0], cap.err
    run = next((tmp_path / "runs").iterdir())
    corpus = json.loads((run / "manifest.json").read_text())["corpus"]
    assert corpus["n_skipped_files"] == 2 and corpus["skipped_reasons"] == {"binary": 1, "undecodable": 1}
    assert decode_file(root / "doc0.txt").encoding == "UTF-8"
    shutil.rmtree(tmp_path / "runs")
