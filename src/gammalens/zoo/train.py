"""Training one zoo model: a small ``LlamaForCausalLM`` on the shared stdlib token stream.

Every zoo model has the same size, initial weights (one seed; θ only sets the ``inv_freq`` buffer, not a
parameter), data order and step budget: only the RoPE base θ and the training context T differ. Each step
reads the same ``tokens_per_step // segment`` segments of the stream, drawn in one seeded order
(:func:`gammalens.zoo.data.segment_rows`), so a T = 128 model sees them as 4× more, 4× shorter rows than a
T = 512 model. AdamW, linear warm-up, cosine decay to 10% of the
peak learning rate, gradient clipping at 1. Deterministic on CPU for a seed (``torch.use_deterministic_algorithms``).

The model directory is an ordinary Hugging Face directory — ``config.json``, ``model.safetensors``,
``generation_config.json``, the tokenizer — plus ``training.csv`` (the loss curves) and ``zoo.json`` (how it
was trained).

>>> cfg = TrainConfig(theta=1e4, context=512, steps=300)                           # doctest: +SKIP
>>> summary = train_model(cfg, tokenizer, stream, heldout, Path("zoo/theta1e4-T512"))   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gammalens.errors import GammalensError
from gammalens.model.load import quiet_transformers
from gammalens.zoo.data import segment_order, segment_rows
from gammalens.zoo.tokenizer import save_tokenizer


@dataclass
class TrainConfig:
    """Everything that defines one zoo model; the grid varies ``theta`` and ``context`` only.

    Attributes
    ----------
    theta : float
        RoPE base θ (dimensionless), > 1.
    context : int
        Training context T (tokens per row, ``<|bos|>`` included); also ``max_position_embeddings``.
    hidden_size, n_layers, n_heads, intermediate_size : int
        Model size: 128 hidden, 4 layers × 4 heads (head_dim 32: 16 RoPE pairs), SwiGLU width 384.
    vocab_size : int
        BPE vocabulary (must match the tokenizer); embeddings are tied to the output layer.
    steps : int
        Optimizer steps.
    tokens_per_step : int
        Stream tokens read per step, a multiple of ``segment`` (the batch is ``tokens_per_step // context`` rows).
    segment : int
        Tokens per data segment, a multiple of ``context``: the unit of the shuffled data order, the same for
        every context so that every model reads the same text at the same step.
    lr : float
        Peak AdamW learning rate.
    warmup : int
        Linear warm-up steps.
    weight_decay : float
        AdamW weight decay on matrices (not on norms).
    eval_every : int
        Held-out loss every this many steps (and at the last step).
    eval_tokens : int
        Held-out tokens per evaluation (the same ones every time, for every model).
    seed : int
        Seed of the initial weights (the data order is fixed by the stream).
    device : str
        ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.
    threads : int
        CPU threads for torch (``torch.set_num_threads``), restored afterwards.
    """

    theta: float = 10_000.0
    context: int = 512
    hidden_size: int = 128
    n_layers: int = 4
    n_heads: int = 4
    intermediate_size: int = 384
    vocab_size: int = 4096
    steps: int = 400
    tokens_per_step: int = 2048
    segment: int = 512
    lr: float = 3e-3
    warmup: int = 20
    weight_decay: float = 0.1
    eval_every: int = 50
    eval_tokens: int = 16_384
    seed: int = 0
    device: str = "cpu"
    threads: int = 1

    def __post_init__(self) -> None:
        checks = [
            (self.theta > 1, f"theta must be > 1 (got {self.theta})"),
            (self.context >= 8, f"context must be at least 8 tokens (got {self.context})"),
            (self.hidden_size % self.n_heads == 0, "hidden_size must be a multiple of n_heads"),
            ((self.hidden_size // max(self.n_heads, 1)) % 2 == 0, "head_dim must be even for RoPE"),
            (self.steps >= 1 and self.warmup >= 0, f"steps must be ≥ 1 (got {self.steps})"),
            (self.segment % self.context == 0, f"segment ({self.segment}) must be a multiple of the context"),
            (self.tokens_per_step % self.segment == 0 and self.tokens_per_step > 0,
             f"tokens_per_step ({self.tokens_per_step}) must be a positive multiple of segment ({self.segment})"),
            (self.eval_every >= 1 and self.eval_tokens >= self.segment, "eval_tokens must hold one segment"),
        ]
        for ok, msg in checks:
            if not ok:
                raise GammalensError(msg)

    @property
    def name(self) -> str:
        """Directory name, e.g. ``theta1e4-T512``."""
        exp = math.log10(self.theta)
        theta = f"1e{round(exp)}" if abs(exp - round(exp)) < 1e-9 else f"{self.theta:g}"
        return f"theta{theta}-T{self.context}"

    def llama_config(self, tokenizer: Any) -> Any:
        """The ``LlamaConfig`` of this model (max positions = the training context)."""
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.n_layers, num_attention_heads=self.n_heads, num_key_value_heads=self.n_heads,
            max_position_embeddings=self.context, rope_parameters={"rope_type": "default", "rope_theta": self.theta},
            tie_word_embeddings=True, initializer_range=0.02, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            architectures=["LlamaForCausalLM"],
        )


@contextlib.contextmanager
def deterministic_torch(threads: int, device: str) -> Iterator[None]:
    """Deterministic kernels and a fixed thread count for the block; both restored afterwards.

    CUDA's cuBLAS is deterministic only with a fixed workspace (``CUBLAS_WORKSPACE_CONFIG``), which must be
    set before its first use; on CPU every op used here has a deterministic kernel.
    """
    import torch

    if device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=device.startswith("cuda"))
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up, then cosine decay to 10% of ``cfg.lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def build_model(cfg: TrainConfig, tokenizer: Any) -> Any:
    """A freshly initialised ``LlamaForCausalLM`` (fp32, sdpa); the same weights for a seed whatever θ and T."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM._from_config(cfg.llama_config(tokenizer), attn_implementation="sdpa")


def heldout_loss(model: Any, rows: np.ndarray, batch: int, device: str) -> float:
    """Mean next-token cross-entropy (nats per token) of ``model`` on ``rows`` ``(n, context)``."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for b0 in range(0, len(rows), batch):
            ids = torch.from_numpy(rows[b0 : b0 + batch]).to(device)
            out = model(input_ids=ids, labels=ids)
            n = ids[:, 1:].numel()
            total += float(out.loss) * n
            count += n
    model.train()
    return total / count


def train_model(cfg: TrainConfig, tokenizer: Any, stream: np.ndarray, heldout: np.ndarray, out_dir: Path,
                meta: dict[str, Any] | None = None, log: Any = None) -> dict[str, Any]:
    """Train one model on ``stream`` and save it to ``out_dir``; returns the summary written to ``zoo.json``.

    Parameters
    ----------
    cfg : TrainConfig
    tokenizer : transformers.PreTrainedTokenizerFast
        The zoo tokenizer; saved into ``out_dir``.
    stream : numpy.ndarray
        Training token stream, shape ``(n,)``, at least ``steps × tokens_per_step`` tokens; its segments are
        visited in the order ``segment_order(stream, segment, seed)``.
    heldout : numpy.ndarray
        Held-out token stream, shape ``(m,)``, at least one segment.
    out_dir : Path
        Created (parents too); existing files are overwritten.
    meta : dict, optional
        Extra facts for ``zoo.json`` (corpus, tokenizer hash, stream hash).
    log : callable, optional
        Called with one progress line per evaluation.
    """
    import torch
    import transformers

    per_step = cfg.tokens_per_step // cfg.segment
    order = segment_order(stream, cfg.segment, cfg.seed)  # (n_segments,)
    if len(order) < cfg.steps * per_step:
        raise GammalensError(f"the token stream has {len(stream):,} tokens; {cfg.steps} steps × "
                             f"{cfg.tokens_per_step:,} need {cfg.steps * cfg.tokens_per_step:,}")
    if len(tokenizer) > cfg.vocab_size:
        raise GammalensError(f"the tokenizer has {len(tokenizer)} tokens but vocab_size is {cfg.vocab_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bos = tokenizer.bos_token_id
    # the same held-out segments for every model: evenly spaced over the held-out stream
    n_held = len(heldout) // cfg.segment
    picks = np.unique(np.linspace(0, n_held - 1, min(cfg.eval_tokens // cfg.segment, n_held)).astype(np.int64))
    eval_rows = segment_rows(heldout, picks, cfg.segment, cfg.context, bos)  # (n_eval, context)
    eval_batch = max(1, cfg.tokens_per_step // cfg.context)
    curve: list[dict[str, Any]] = []
    with deterministic_torch(cfg.threads, cfg.device):
        model = build_model(cfg, tokenizer).to(cfg.device)
        model.train()
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95),
                                foreach=False)
        t0 = time.perf_counter()
        for step in range(cfg.steps):
            lr = lr_at(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            rows = segment_rows(stream, order[step * per_step : (step + 1) * per_step], cfg.segment, cfg.context, bos)
            ids = torch.from_numpy(rows).to(cfg.device)  # (tokens_per_step // context, context)
            loss = model(input_ids=ids, labels=ids).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            row: dict[str, Any] = {"step": step + 1, "tokens": (step + 1) * cfg.tokens_per_step, "lr": lr,
                                   "train_loss": float(loss.detach()), "heldout_loss": None}
            if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                row["heldout_loss"] = heldout_loss(model, eval_rows, eval_batch, cfg.device)
                if log is not None:
                    log(f"{cfg.name} step {step + 1}/{cfg.steps} train {row['train_loss']:.3f} "
                        f"held-out {row['heldout_loss']:.3f} ({time.perf_counter() - t0:.0f} s)")
            row["elapsed_s"] = round(time.perf_counter() - t0, 2)
            curve.append(row)
        wall = time.perf_counter() - t0
        model.eval()
        with quiet_transformers():
            model.save_pretrained(out_dir)
    save_tokenizer(tokenizer, out_dir)
    _write_curve(curve, out_dir / "training.csv")
    n_params = int(sum(p.numel() for p in model.parameters()))
    summary = {
        "name": cfg.name,
        "train_config": asdict(cfg),
        "n_params": n_params,
        "weights_bytes": (out_dir / "model.safetensors").stat().st_size,
        "final_train_loss": curve[-1]["train_loss"],
        "final_heldout_loss": curve[-1]["heldout_loss"],
        "heldout_eval_tokens": int(eval_rows[:, 1:].size),
        "train_tokens": cfg.steps * cfg.tokens_per_step,
        "wall_s": round(wall, 1),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        **(meta or {}),
    }
    (out_dir / "zoo.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _write_curve(curve: list[dict[str, Any]], path: Path) -> None:
    cols = ["step", "tokens", "lr", "train_loss", "heldout_loss", "elapsed_s"]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for row in curve:
            w.writerow({k: ("" if row[k] is None else (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]))
                        for k in cols})
