"""The zoo grid: one tokenizer, one token stream, and a model per (θ, T) — ``gammalens zoo train``.

Layout of the output folder::

    zoo/
      data.json                 how the text was split and tokenized (hashes of the tokenizer and streams)
      tokenizer/                the BPE tokenizer (PreTrainedTokenizerFast)
      heldout/                  the held-out stdlib files: a corpus spec for ``gammalens measure``
      theta1e4-T512/            one Hugging Face model directory per grid point (+ training.csv, zoo.json)
      ...

Every model gets the same tokenizer, stream, seed, size and step budget (:class:`~gammalens.zoo.train.TrainConfig`
with only ``theta`` and ``context`` changed). A model whose ``zoo.json`` already records the same training
settings is kept, so an interrupted grid resumes where it stopped.

>>> train_grid(GridConfig(out=Path("zoo"), thetas=(1e4,), contexts=(512,)))   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gammalens.errors import GammalensError
from gammalens.zoo.data import HELDOUT_FRACTION, split_stdlib, token_stream, write_heldout_folder
from gammalens.zoo.tokenizer import save_tokenizer, train_tokenizer
from gammalens.zoo.train import TrainConfig, train_model

THETAS = (1e2, 1e3, 1e4, 1e5, 1e6)  # RoPE bases of the grid
CONTEXTS = (128, 512)  # training contexts of the grid (tokens)


@dataclass
class GridConfig:
    """Settings of ``gammalens zoo train``; CLI flags map one-to-one onto these fields.

    Attributes
    ----------
    out : Path
        Output folder (created).
    thetas : tuple of float
        RoPE bases θ of the grid.
    contexts : tuple of int
        Training contexts T (tokens).
    base : TrainConfig
        Everything else about a model (size, steps, tokens per step, learning rate, seed, device, threads);
        its ``theta`` and ``context`` are replaced per grid point.
    tokenizer_chars : int or None
        Characters of training text the BPE tokenizer learns from (the first files of the seeded shuffle);
        None: every training file.
    heldout_fraction : float
        Share of stdlib files held out (by path hash).
    limit_files : int or None
        Use only the first N training and held-out files (sorted); for smoke tests.
    force : bool
        Retrain models even when ``zoo.json`` records the same settings.
    """

    out: Path = Path("zoo")
    thetas: tuple[float, ...] = THETAS
    contexts: tuple[int, ...] = CONTEXTS
    base: TrainConfig = field(default_factory=TrainConfig)
    tokenizer_chars: int | None = None
    heldout_fraction: float = HELDOUT_FRACTION
    limit_files: int | None = None
    force: bool = False

    def __post_init__(self) -> None:
        if not self.thetas or not self.contexts:
            raise GammalensError("the grid needs at least one θ and one context")

    def points(self) -> list[TrainConfig]:
        """The TrainConfig of every grid point, contexts outer, θ inner."""
        return [replace(self.base, theta=float(th), context=int(t)) for t in self.contexts for th in self.thetas]


@dataclass(frozen=True)
class ZooData:
    """What every model of a grid shares: tokenizer, token streams and the held-out corpus folder."""

    tokenizer: Any
    stream: np.ndarray  # (n_train_tokens,) uint16
    heldout: np.ndarray  # (n_heldout_tokens,) uint16
    heldout_dir: Path
    meta: dict[str, Any]


def prepare_data(cfg: GridConfig, log: Callable[[str], None] = print) -> ZooData:
    """Split the stdlib, train the tokenizer, tokenize the streams, write ``tokenizer/``, ``heldout/``, ``data.json``."""

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    split = split_stdlib(cfg.heldout_fraction, limit=cfg.limit_files)
    if not split.train or not split.heldout:
        raise GammalensError("the stdlib split has no training or no held-out files; raise limit_files")
    order = np.random.default_rng(cfg.base.seed).permutation(len(split.train))
    texts, chars = [], 0
    for i in order:
        text = split.text(split.train[i])
        texts.append(text)
        chars += len(text)
        if cfg.tokenizer_chars is not None and chars >= cfg.tokenizer_chars:
            break
    tokenizer = train_tokenizer(texts, vocab_size=cfg.base.vocab_size)
    tok_dir = out / "tokenizer"
    if tok_dir.exists():
        shutil.rmtree(tok_dir)
    save_tokenizer(tokenizer, tok_dir)
    log(f"tokenizer: {len(tokenizer)} tokens from {chars / 1e6:.1f} M characters "
        f"({time.perf_counter() - t0:.0f} s)")
    stream = token_stream(split, tokenizer, split.train, seed=cfg.base.seed)
    heldout = token_stream(split, tokenizer, split.heldout, seed=None)
    heldout_dir = out / "heldout"
    if heldout_dir.exists():
        shutil.rmtree(heldout_dir)
    write_heldout_folder(split, heldout_dir)
    meta = {
        "corpus": split.description,
        "n_train_files": len(split.train),
        "n_heldout_files": len(split.heldout),
        "tokenizer_chars": chars,
        "tokenizer_sha256": _sha256((tok_dir / "tokenizer.json").read_bytes()),
        "stream_tokens": len(stream),
        "stream_sha256": _sha256(stream.astype("<u2").tobytes()),
        "heldout_sha256": _sha256(heldout.astype("<u2").tobytes()),
    }
    (out / "data.json").write_text(json.dumps(meta, indent=2) + "\n")
    log(f"stream: {len(stream):,} training tokens from {len(split.train)} files, held-out corpus "
        f"{len(split.heldout)} files ({time.perf_counter() - t0:.0f} s)")
    return ZooData(tokenizer, stream, heldout, heldout_dir, meta)


def train_grid(cfg: GridConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train every grid point of ``cfg`` into ``cfg.out``; returns each model's ``zoo.json`` summary."""
    data = prepare_data(cfg, log)
    summaries = []
    for point in cfg.points():
        model_dir = Path(cfg.out) / point.name
        done = _finished(model_dir, point)
        if done is not None and not cfg.force:
            log(f"{point.name}: already trained with these settings, kept")
            summaries.append(done)
            continue
        summary = train_model(point, data.tokenizer, data.stream, data.heldout, model_dir,
                              meta={"data": data.meta}, log=log)
        log(f"{point.name}: held-out loss {summary['final_heldout_loss']:.3f} in {summary['wall_s']:.0f} s")
        summaries.append(summary)
    return summaries


def zoo_models(zoo_dir: Path) -> list[Path]:
    """Model directories of a zoo folder (those holding ``zoo.json``), sorted by context then θ."""
    found = [p.parent for p in Path(zoo_dir).glob("*/zoo.json")]
    if not found:
        raise GammalensError(f"no zoo models under {zoo_dir}; train them with `gammalens zoo train --out {zoo_dir}`")

    def key(p: Path) -> tuple[int, float]:
        tc = json.loads((p / "zoo.json").read_text())["train_config"]
        return int(tc["context"]), float(tc["theta"])

    return sorted(found, key=key)


def _finished(model_dir: Path, point: TrainConfig) -> dict[str, Any] | None:
    path = model_dir / "zoo.json"
    if not (path.is_file() and (model_dir / "model.safetensors").is_file()):
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("train_config") == json.loads(json.dumps(asdict(point))) else None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
