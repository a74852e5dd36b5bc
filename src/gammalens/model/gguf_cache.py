"""GGUF checkpoints (the llama.cpp format): read their header, convert them once, keep the result cached.

transformers loads a ``.gguf`` with ``from_pretrained(dir, gguf_file=name)``, dequantising every tensor and
rebuilding the tokenizer from the file's vocabulary (about 45 s for SmolLM2-135M on 2 cores). gammalens does
that once per file content: the converted model (fp32 safetensors, config, tokenizer) is saved under
``<cache>/gguf/<sha256 of the .gguf>-transformers-<version>/`` and later measurements load it as an ordinary
local directory (~1 s). The entry is tied to the transformers version that wrote it: the tokenizer files one
version saves are not read back alike by another (SmolLM2's, saved by 5.2, load in 5.24 as a CodeLlama
tokenizer that maps most whitespace to the unknown token), so each version converts once for itself, and a
conversion whose tokenizer does not read back to the same ids is refused.

The cache directory is ``$GAMMALENS_CACHE`` if set, else ``$XDG_CACHE_HOME/gammalens``, else
``~/.cache/gammalens``. An entry is built in a hidden sibling folder and renamed into place, and carries a
``gammalens-cache.json`` listing every file with its size and sha256, written last: an entry that is missing
files, holds a truncated or altered file, or lacks the marker is detected, removed and rebuilt.

>>> gguf_cache_root().name                                  # doctest: +SKIP
'gammalens'
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from gammalens.errors import ModelError, first_line
from gammalens.model.architecture import quiet_transformers
from gammalens.model.gguf_vocab import read_spm_vocab
from gammalens.model.hashing import file_sha256, sha256_now

GGUF_MAGIC = b"GGUF"
MARKER = "gammalens-cache.json"
CACHE_FORMAT = "gammalens.gguf-cache/2"  # /2: entries keyed and marked by the transformers version
# tokenized by the GGUF's tokenizer and by the saved one: code, indentation, tabs, newlines, accents, a dash
ROUND_TRIP_TEXT = "def f(x):\n    return x + 1  # héllo wörld\n\n\tclass A: pass  \u2014 tabs,\ttoo\n"
INSTALL_HINT = "pip install 'gammalens[gguf]'  (the gguf and accelerate packages)"


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF file's header says, recorded in the run manifest.

    Attributes
    ----------
    file : str
        File name of the ``.gguf``.
    sha256 : str
        sha256 of the whole file (hex); also the cache key.
    size_bytes : int
        File size in bytes.
    architecture : str
        ``general.architecture`` (e.g. ``'llama'``).
    name : str or None
        ``general.name``.
    file_type : str or None
        The quantisation of the file as a whole (``general.file_type``, e.g. ``'MOSTLY_Q4_1'``).
    tensor_types : dict of str to int
        Number of tensors per storage type (e.g. ``{'Q4_1': 210, 'F32': 61, 'Q8_0': 1}``).
    dequantised : bool
        Always True: transformers dequantises every tensor to a float dtype before the forward pass, so the
        measured model is the dequantised one (same weights as llama.cpp's, not its integer kernels).
    """

    file: str
    sha256: str
    size_bytes: int
    architecture: str
    name: str | None
    file_type: str | None
    tensor_types: dict[str, int] = field(default_factory=dict)
    dequantised: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def gguf_cache_root() -> Path:
    """The cache directory: ``$GAMMALENS_CACHE``, else the platform's user cache folder for gammalens
    (``platformdirs``: ``$XDG_CACHE_HOME/gammalens`` or ``~/.cache/gammalens`` on Linux, ``~/Library/Caches``
    on macOS, ``%LOCALAPPDATA%`` on Windows)."""
    if os.environ.get("GAMMALENS_CACHE"):
        return Path(os.environ["GAMMALENS_CACHE"]).expanduser()
    return Path(platformdirs.user_cache_dir("gammalens", appauthor=False))


def is_gguf(path: Path) -> bool:
    """True when ``path`` is a file that starts with the GGUF magic bytes."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


def read_gguf_info(path: Path) -> GGUFInfo:
    """Read and check a GGUF file's header and tensor table (no tensor data is dequantised).

    Raises
    ------
    ModelError
        Not a GGUF file, a truncated or corrupt one, or the ``gguf`` package is missing.
    """
    path = Path(path)
    if not is_gguf(path):
        raise ModelError(f"{path} is not a GGUF file (it does not start with the bytes 'GGUF')")
    try:
        import gguf
    except ImportError:
        raise ModelError(f"reading GGUF files needs the gguf package: {INSTALL_HINT}") from None
    try:
        reader = gguf.GGUFReader(str(path))
        fields = reader.fields
        arch = _field(fields, "general.architecture")
        name = _field(fields, "general.name")
        ftype = _field(fields, "general.file_type")
        types = Counter(t.tensor_type.name for t in reader.tensors)
        # a truncated file can still parse its header; its last tensor then ends past the end of the file
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except ModelError:
        raise
    except Exception as err:
        raise ModelError(f"{path} is not a readable GGUF file (truncated or corrupt?): {first_line(err)}") from None
    size = path.stat().st_size
    if end > size or arch is None:
        raise ModelError(f"{path} is truncated or corrupt: its tensors need {end:,} bytes, the file has {size:,}")
    try:
        ftype_name = gguf.LlamaFileType(int(ftype)).name if ftype is not None else None
    except ValueError:
        ftype_name = str(ftype)
    return GGUFInfo(file=path.name, sha256=file_sha256(path), size_bytes=size, architecture=str(arch),
                    name=None if name is None else str(name), file_type=ftype_name, tensor_types=dict(types))


def converted_dir(path: Path, info: GGUFInfo, *, quiet: bool = False) -> Path:
    """The cached, converted Hugging Face directory of a GGUF file; built (atomically) if absent or broken.

    Parameters
    ----------
    path : Path
        The ``.gguf`` file.
    info : GGUFInfo
        Its header, from :func:`read_gguf_info` (gives the cache key).
    quiet : bool
        Do not announce a conversion on stderr.

    Returns
    -------
    Path
        A directory with ``config.json``, ``model.safetensors`` (fp32) and the tokenizer files.
    """
    import transformers

    root = gguf_cache_root() / "gguf"
    entry = root / f"{info.sha256}-transformers-{transformers.__version__}"
    legacy = root / info.sha256  # written by an unknown transformers version (cache format 1): not reusable
    if legacy.is_dir():
        shutil.rmtree(legacy, ignore_errors=True)
    if entry.exists():
        problem = check_entry(entry)
        if problem is None:
            return entry
        print(f"gammalens: cache entry {entry} is unusable ({problem}); rebuilding it", file=sys.stderr)
        shutil.rmtree(entry, ignore_errors=True)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelError(f"cannot create the GGUF cache {root}: {err.strerror or err}; set GAMMALENS_CACHE "
                         "to a writable directory") from None
    _remove_stale_partials(root)
    _check_loadable(path)
    partial = root / f".partial-{info.sha256[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if not quiet:
        print(f"gammalens: converting {path.name} ({info.file_type or 'GGUF'}) once; cached in {entry}",
              file=sys.stderr)
    try:
        _convert(path, partial)
        _write_marker(partial, info)
        try:
            os.rename(partial, entry)
        except OSError:
            if check_entry(entry) is not None:  # not a finished twin from a concurrent run: a real failure
                raise
            shutil.rmtree(partial, ignore_errors=True)
    except BaseException as err:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(err, OSError):
            raise ModelError(f"cannot write the GGUF cache {root}: {err.strerror or err}") from None
        raise
    return entry


def check_entry(entry: Path) -> str | None:
    """``None`` if the cache entry is complete, unaltered and written by this transformers version, else what is
    wrong with it (one phrase)."""
    import transformers

    try:
        marker = json.loads((entry / MARKER).read_text(encoding="utf-8"))
        files = marker["files"]
        if marker.get("format") != CACHE_FORMAT or not files:
            return "unknown cache format"
    except (OSError, ValueError, KeyError, TypeError):
        return "no completion marker"
    if marker.get("transformers") != transformers.__version__:
        return f"written by transformers {marker.get('transformers')}, this is {transformers.__version__}"
    for name, want in files.items():
        f = entry / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != want["size"]:
            return f"{name} has {f.stat().st_size:,} bytes, not {want['size']:,}"
        if sha256_now(f) != want["sha256"]:
            return f"{name} does not match its recorded sha256"
    return None


def _check_loadable(path: Path) -> None:
    """Read the config from the GGUF's metadata (no tensors): an architecture transformers cannot load fails
    here, before any conversion is announced or written."""
    try:
        import accelerate  # noqa: F401  (transformers needs it to dequantise GGUF tensors)
        import gguf  # noqa: F401
    except ImportError:
        raise ModelError(f"loading GGUF models needs the gguf and accelerate packages: {INSTALL_HINT}") from None
    from transformers import AutoConfig


    try:
        with quiet_transformers():
            AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as err:
        raise ModelError(f"transformers cannot load {path.name} from GGUF: {first_line(err)}") from None


def _convert(path: Path, dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer


    kw = {"gguf_file": path.name}
    try:
        # transformers' per-tensor dequantisation bar is a bare tqdm (no switch reaches it once tqdm is imported)
        with quiet_transformers(), open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
            tokenizer = AutoTokenizer.from_pretrained(path.parent, **kw)
            model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kw)
    except Exception as err:
        raise ModelError(f"transformers cannot load {path.name} from GGUF: {first_line(err)}") from None
    if getattr(model, "hf_quantizer", None) is not None:
        # transformers ≥ 5.3 keeps a GGUF load marked as quantized and refuses to save it; its weights are
        # already dequantised fp32, so it is saved as the plain model it is
        model.hf_quantizer = None
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
    check_tokenizer_against_vocab(tokenizer, path)
    dest.mkdir()
    with quiet_transformers():
        model.save_pretrained(dest)
        tokenizer.save_pretrained(dest)
    check_tokenizer_round_trip(tokenizer, dest, path.name)


# plain text, code and a tab: what a corpus holds (long runs of spaces are left out: transformers 5.24 splits a
# 34-space run 16 + 18 where llama.cpp splits it 31 + 3, an ambiguity of the vocabulary, not a wrong tokenizer)
VOCAB_PROBES = ("The capital of France is Paris.", "def hello(world):\n    return 42\n", ROUND_TRIP_TEXT)


def check_tokenizer_against_vocab(tokenizer: Any, path: Path) -> None:
    """Raise :class:`ModelError` when a SentencePiece GGUF's tokenizer gives other ids than its own vocabulary.

    The reference is :class:`~gammalens.model.gguf_vocab.SpmVocab` (llama.cpp's algorithm on the file's tokens
    and scores); BPE vocabularies (``gpt2``: Qwen2, SmolLM2) carry their merges and are checked by round trip only.
    """
    vocab = read_spm_vocab(path)
    if vocab is None:
        return
    for text in VOCAB_PROBES:
        want, got = vocab.encode(text), list(tokenizer(text)["input_ids"])
        if got != want:
            import transformers

            raise ModelError(
                f"transformers {transformers.__version__} builds a tokenizer for {path.name} that disagrees with the "
                f"file's own vocabulary ({text[:24]!r} → {len(got)} ids, the vocabulary gives {len(want)}"
                f"{', and no BOS' if vocab.add_bos and got[:1] != [vocab.bos] else ''}): it would measure other tokens; "
                "use transformers ≥ 5.24")


def check_tokenizer_round_trip(tokenizer: Any, saved: Path, name: str) -> None:
    """Raise :class:`ModelError` unless the tokenizer saved in ``saved`` gives ``tokenizer``'s ids.

    Measurements load the saved copy, so a copy that reads back differently would silently measure other
    tokens; this compares both on :data:`ROUND_TRIP_TEXT`.
    """
    from transformers import AutoTokenizer


    with quiet_transformers():
        reloaded = AutoTokenizer.from_pretrained(saved)
    want, got = tokenizer(ROUND_TRIP_TEXT)["input_ids"], reloaded(ROUND_TRIP_TEXT)["input_ids"]
    if got != want:
        import transformers

        raise ModelError(f"transformers {transformers.__version__} saves the tokenizer of {name} in a form it reads "
                         f"back differently ({type(reloaded).__name__}: {len(got)} ids instead of {len(want)}); "
                         "try another transformers version")


def _write_marker(partial: Path, info: GGUFInfo) -> None:
    files = {f.name: {"size": f.stat().st_size, "sha256": sha256_now(f)}
             for f in sorted(partial.iterdir()) if f.is_file()}
    import transformers

    body = {"format": CACHE_FORMAT, "transformers": transformers.__version__, "source": info.to_dict(), "files": files}
    (partial / MARKER).write_text(json.dumps(body, indent=2), encoding="utf-8")


def _remove_stale_partials(root: Path) -> None:
    """Remove ``.partial-*`` folders whose converting process is gone (killed mid-conversion)."""
    for p in root.glob(".partial-*"):
        try:
            pid = int(p.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if not _alive(pid):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _field(fields: dict, key: str) -> object:
    f = fields.get(key)
    if f is None:
        return None
    value = f.contents()
    return value
