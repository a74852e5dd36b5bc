"""The KV plan: a window per (layer, KV head) from a run's exact profiles (``gammalens kv plan RUN_DIR``).

Every KV head keeps its ``sink_tokens`` first tokens and its last ``window`` tokens (distances
0..window−1, the query's own key included; the empirical D_f is ``window − 1``). Two modes:

- **ε mode** — each query head gets the smallest window whose non-sink mass outside it is ≤ ε at the
  target context (measured profile up to the run's horizon, the fitted law beyond it: see
  :mod:`gammalens.kv.tails`); a KV head takes the **max** over the query heads that share it (GQA), so
  every query head meets ε.
- **budget mode** — a total token budget (or a compression ratio of the full cache at the target context)
  is split across KV heads to minimise the total expected attention mass lost, Σ over query heads of
  (1 − sink mass)·tail (water-filling, :mod:`gammalens.kv.allocate`). A KV head's loss is the sum over
  its query heads: the GQA rule in this mode is mass-weighted by construction.

- **hybrid policy** (``--policy hybrid``, budget mode) — the retrieval heads a run measured
  (``gammalens measure --retrieval``: echo and induction attention on repeated random tokens, docs/retrieval.md)
  keep every key of the target context; every other KV head gets sinks + a γ window by the same water-filling
  over what is left. ``retrieval_share`` is the share of the budget offered to retrieval heads: k =
  ⌊share · budget / T⌋ KV heads, the highest-scoring first (a KV head scores the max over its query heads of
  echo + induction; ``retrieval_by='far_mass'`` ranks by the far mass instead, ``'random'`` at random: the
  ablation). A retrieval head's window is T − sinks: it holds the whole target context, and beyond T it
  becomes a T-token window, so memory stays bounded over unbounded decoding.

Budgets count every token a head holds: sinks plus window. Bytes are keys + values of every held token.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gammalens.card.kv_cache import dtype_bytes
from gammalens.kv.allocate import allocate
from gammalens.kv.tails import HeadTails, KVError, head_tails
from gammalens.retrieval.scores import RETRIEVAL_COLUMNS
from gammalens.runs.reader import read_fits_csv, read_manifest

FORMAT = "gammalens.kvplan/1"  # the hybrid's fields are optional: its windows alone define the cache
POLICIES = ("gamma", "hybrid")
RANKINGS = ("score", "far_mass", "random")


@dataclass
class PlanConfig:
    """Settings of a KV plan; CLI flags of ``gammalens kv plan`` map one-to-one onto these fields.

    Attributes
    ----------
    eps : float
        ε mode: largest non-sink mass fraction each query head may lose, in (0, 1).
    budget : int or None
        Budget mode: total tokens held over all layers and KV heads (sinks included).
    ratio : float or None
        Budget mode: compression ratio in [0, 1); budget = (1 − ratio) × the full cache at ``context``.
    context : int or None
        Target context T (tokens); None: the run's measured context.
    dtype : str
        Element type of the served cache, for the byte totals (``'bf16'``, ``'fp32'``, …).
    policy : str
        ``'gamma'`` (every head a γ window) or ``'hybrid'`` (retrieval heads keep all keys; budget mode only).
    retrieval_share : float
        Hybrid: share of the budget, in [0, 1], offered to retrieval heads (each costs T tokens).
    retrieval_by : str
        Hybrid: how retrieval heads are ranked: ``'score'`` (echo + induction), ``'far_mass'``, ``'random'``.
    seed : int
        Hybrid with ``retrieval_by='random'``: the draw.
    """

    eps: float = 0.05
    budget: int | None = None
    ratio: float | None = None
    context: int | None = None
    dtype: str = "bf16"
    policy: str = "gamma"
    retrieval_share: float = 0.5
    retrieval_by: str = "score"
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.eps, (int, float)) and 0.0 < self.eps < 1.0):
            raise KVError(f"--eps must lie strictly between 0 and 1 (got {self.eps})")
        if self.budget is not None and self.ratio is not None:
            raise KVError("pass either --budget (tokens) or --ratio (compression), not both")
        if self.ratio is not None and not 0.0 <= self.ratio < 1.0:
            raise KVError(f"--ratio must lie in [0, 1): the fraction of the cache removed (got {self.ratio})")
        if self.budget is not None and self.budget < 1:
            raise KVError(f"--budget must be a positive number of tokens (got {self.budget})")
        if self.context is not None and self.context < 2:
            raise KVError(f"--context must be at least 2 tokens (got {self.context})")
        if self.policy not in POLICIES:
            raise KVError(f"--policy must be one of {', '.join(POLICIES)} (got {self.policy!r})")
        if self.retrieval_by not in RANKINGS:
            raise KVError(f"--retrieval-by must be one of {', '.join(RANKINGS)} (got {self.retrieval_by!r})")
        if not (isinstance(self.retrieval_share, (int, float)) and 0.0 <= self.retrieval_share <= 1.0):
            raise KVError(f"--retrieval-share must lie in [0, 1]: the share of the budget offered to retrieval "
                          f"heads (got {self.retrieval_share})")
        if self.policy == "hybrid" and self.mode != "budget":
            raise KVError("--policy hybrid splits a budget: pass --budget (tokens) or --ratio (compression)")

    @property
    def mode(self) -> str:
        return "eps" if self.budget is None and self.ratio is None else "budget"


@dataclass(frozen=True)
class KVPlan:
    """Per-(layer, KV head) windows and what they cost and lose.

    Attributes
    ----------
    model : dict
        ``id``, ``model_type``, ``n_layers``, ``n_heads``, ``n_kv_heads``, ``head_dim``, ``rope_theta``.
    run_id : str
        The run the profiles came from.
    mode : str
        ``'eps'`` or ``'budget'``.
    eps : float or None
        ε of an ε plan.
    context : int
        Target context T (tokens) of the totals.
    sink_tokens : int
        Sink tokens every KV head keeps.
    window : np.ndarray, shape (L, Hkv), int
        Recent tokens kept per KV head (distances 0..window−1).
    gamma : np.ndarray, shape (L, Hq)
        Fitted γ per query head.
    lost : np.ndarray, shape (L, Hq)
        Expected attention mass lost per query at T (0–1).
    tail : np.ndarray, shape (L, Hq)
        Fraction of non-sink mass outside the window at T (0–1).
    dtype_bytes : float
        Bytes per cached element.
    policy : str
        ``'gamma'`` or ``'hybrid'``.
    retrieval : np.ndarray, shape (L, Hkv), bool, or None
        Hybrid: the KV heads that keep every key of the target context.
    retrieval_by : str or None
        Hybrid: how they were ranked (``'score'``, ``'far_mass'``, ``'random'``).
    """

    model: dict
    run_id: str
    mode: str
    eps: float | None
    context: int
    sink_tokens: int
    window: np.ndarray
    gamma: np.ndarray
    lost: np.ndarray
    tail: np.ndarray
    dtype_bytes: float
    policy: str = "gamma"
    retrieval: np.ndarray | None = field(default=None)
    retrieval_by: str | None = None

    @property
    def tokens(self) -> np.ndarray:
        """(L, Hkv) tokens held per KV head at the target context: sinks + window, at most T."""
        return np.minimum(self.sink_tokens + self.window, self.context)

    @property
    def bytes_per_token(self) -> float:
        """Bytes of one token of one KV head (keys + values)."""
        return 2 * self.model["head_dim"] * self.dtype_bytes

    def totals(self) -> dict[str, float]:
        """Tokens and bytes against the full cache at T, one sequence; mean lost mass per query head."""
        tokens = int(self.tokens.sum())
        full = int(self.model["n_layers"] * self.model["n_kv_heads"] * self.context)
        retrieval = self.retrieval if self.retrieval is not None else np.zeros(self.window.shape, bool)
        return {"tokens": tokens, "full_tokens": full, "bytes": round(tokens * self.bytes_per_token),
                "full_bytes": round(full * self.bytes_per_token), "kept_fraction": tokens / full,
                "compression_ratio": 1.0 - tokens / full, "lost_mean": float(self.lost.mean()),
                "tail_max": float(self.tail.max()), "retrieval_heads": int(retrieval.sum()),
                "retrieval_tokens_share": float(self.tokens[retrieval].sum() / tokens) if tokens else 0.0}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: settings, per-KV-head rows, totals."""
        group = self.model["n_heads"] // self.model["n_kv_heads"]
        heads = []
        for layer, kv in np.ndindex(self.window.shape):
            q = slice(kv * group, (kv + 1) * group)
            heads.append({"name": f"layers.{layer}.kv_heads.{kv}", "layer": layer, "kv_head": kv,
                          "q_heads": list(range(q.start, q.stop)), "gamma": self.gamma[layer, q].tolist(),
                          "window": int(self.window[layer, kv]), "tokens": int(self.tokens[layer, kv]),
                          "lost": float(self.lost[layer, q].sum()), "tail_max": float(self.tail[layer, q].max()),
                          "retrieval": bool(self.retrieval is not None and self.retrieval[layer, kv])})
        return {"format": FORMAT, "run_id": self.run_id, "model": self.model, "mode": self.mode, "eps": self.eps,
                "policy": self.policy, "retrieval_by": self.retrieval_by,
                "context": self.context, "sink_tokens": self.sink_tokens, "dtype_bytes": self.dtype_bytes,
                "heads": heads, "totals": self.totals(),
                "gamma": self.gamma.tolist(), "lost_q": self.lost.tolist(), "tail_q": self.tail.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KVPlan:
        if d.get("format") != FORMAT:
            raise KVError(f"not a gammalens KV plan (format {d.get('format')!r}, expected {FORMAT!r})")
        m = d["model"]
        window = np.zeros((m["n_layers"], m["n_kv_heads"]), dtype=np.int64)
        retrieval = np.zeros(window.shape, dtype=bool)
        for h in d["heads"]:
            window[h["layer"], h["kv_head"]] = h["window"]
            retrieval[h["layer"], h["kv_head"]] = bool(h.get("retrieval", False))
        policy = d.get("policy", "gamma")
        return cls(model=m, run_id=d["run_id"], mode=d["mode"], eps=d["eps"], context=int(d["context"]),
                   sink_tokens=int(d["sink_tokens"]), window=window, gamma=np.asarray(d["gamma"], np.float64),
                   lost=np.asarray(d["lost_q"], np.float64), tail=np.asarray(d["tail_q"], np.float64),
                   dtype_bytes=float(d["dtype_bytes"]), policy=policy,
                   retrieval=retrieval if policy == "hybrid" else None, retrieval_by=d.get("retrieval_by"))

    def save(self, path: Path | str) -> Path:
        """Write the plan as JSON atomically (temp file, then rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
        try:
            tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise KVError(f"cannot write the plan to {path} ({err.strerror})") from None
        return path

    @classmethod
    def load(cls, path: Path | str) -> KVPlan:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise KVError(f"{path} is not a readable KV plan ({type(err).__name__}: {err})") from None

    def to_pandas(self) -> Any:
        """One row per KV head (``heads`` of :meth:`to_dict`)."""
        import pandas as pd

        return pd.DataFrame(self.to_dict()["heads"]).set_index("name")

    def __repr__(self) -> str:
        t = self.totals()
        mode = f"hybrid ({t['retrieval_heads']} retrieval heads)" if self.policy == "hybrid" else self.mode
        return (f"KVPlan({self.model.get('id')}, {mode}, T={self.context}, tokens {t['tokens']}/"
                f"{t['full_tokens']} ({t['kept_fraction']:.1%}), lost {t['lost_mean']:.4f}/query head)")


def _check_arch(manifest: dict) -> dict:
    arch = manifest.get("model", {}).get("arch") or {}
    kind = arch.get("model_type", "?")
    if arch.get("position_encoding") != "rope":
        raise KVError(f"the run measured a {kind} model without RoPE (position encoding "
                      f"{arch.get('position_encoding')!r}); the γ-window KV cache serves causal RoPE decoders")
    if not arch.get("causal", False):
        raise KVError(f"the run measured a bidirectional {kind} model; a KV cache needs a causal decoder")
    n_heads, n_kv = arch.get("n_heads"), arch.get("n_kv_heads") or arch.get("n_heads")
    if not n_heads or not n_kv or n_heads % n_kv:
        raise KVError(f"the run's model has {n_heads} query heads and {n_kv} KV heads; need a multiple")
    head_dim = arch.get("head_dim") or (arch.get("hidden_size") or 0) // int(n_heads)
    if not head_dim:
        raise KVError(f"the run's manifest gives neither model.arch.head_dim nor hidden_size for {kind}; the KV "
                      "bytes need the head size")
    return {"id": manifest["model"].get("id"), "model_type": kind, "n_layers": int(arch["n_layers"]),
            "n_heads": int(n_heads), "n_kv_heads": int(n_kv), "head_dim": int(head_dim),
            "rope_theta": arch.get("rope_theta")}


def load_run(run_dir: Path | str) -> tuple[dict, HeadTails, dict]:
    """(model facts, tails, manifest) of a run directory, checked for a causal RoPE decoder."""

    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    model = _check_arch(manifest)
    gamma = np.full((model["n_layers"], model["n_heads"]), np.nan)
    for row in read_fits_csv(run_dir / "fits.csv"):
        if row.get("scope") == "head" and row.get("gamma") is not None:
            if row["layer"] >= gamma.shape[0] or row["head"] >= gamma.shape[1]:
                raise KVError(f"fits.csv has head {row['name']} outside the manifest's {gamma.shape} heads")
            gamma[row["layer"], row["head"]] = row["gamma"]
    if not (run_dir / "profile.npz").is_file():
        raise KVError(f"{run_dir} has no profile.npz; the plan needs the run's exact profiles")
    sink_tokens = int((manifest.get("settings") or {}).get("sink_tokens", 1))
    return model, head_tails(run_dir / "profile.npz", gamma, sink_tokens), manifest


def load_retrieval(run_dir: Path | str, model: dict) -> dict[str, np.ndarray] | None:
    """The run's per-head retrieval columns, each (L, Hq) float; None if the run did not measure them."""
    shape = (model["n_layers"], model["n_heads"])
    out = {c: np.full(shape, np.nan) for c in RETRIEVAL_COLUMNS}
    for row in read_fits_csv(Path(run_dir) / "fits.csv"):
        if row.get("scope") == "head" and row["layer"] < shape[0] and row["head"] < shape[1]:
            for c in RETRIEVAL_COLUMNS:
                if row.get(c) is not None:
                    out[c][row["layer"], row["head"]] = row[c]
    if np.isnan(out["echo"]).all() or np.isnan(out["induction"]).all():
        return None
    return out


def rank_retrieval(retrieval: dict[str, np.ndarray] | None, by: str, shape: tuple[int, int],
                   seed: int = 0) -> np.ndarray:
    """(L, Hkv) ranking key of every KV head, higher first: the max over its query heads of the criterion.

    ``by='score'``: echo + induction (two disjoint attention masses on repeated random tokens, so at most 1);
    ``'far_mass'``: the share of non-sink mass beyond the run's far distance; ``'random'``: a uniform draw
    (needs no measurement). ``shape``: (layers, KV heads).
    """
    if by == "random":
        return np.random.default_rng(seed).random(shape)
    if retrieval is None:
        raise KVError("the hybrid policy needs the run's retrieval measurement (echo, induction, far mass): "
                      "measure the model with `gammalens measure MODEL --retrieval`")
    per_q = retrieval["echo"] + retrieval["induction"] if by == "score" else retrieval["far_mass"]
    if np.isnan(per_q).any():
        raise KVError(f"the run's retrieval columns miss {int(np.isnan(per_q).sum())} heads; measure again with "
                      "--retrieval")
    return per_q.reshape(shape[0], shape[1], -1).max(-1)


def plan_from_tails(model: dict, tails: HeadTails, config: PlanConfig, *, run_id: str = "",
                    measured_context: int | None = None,
                    retrieval: dict[str, np.ndarray] | None = None) -> KVPlan:
    """Build the plan (see the module docstring) from tail curves and model facts.

    ``retrieval``: the run's per-head retrieval columns (:func:`load_retrieval`), needed by the hybrid policy.
    """

    context = config.context or measured_context
    if context is None:
        raise KVError("pass --context: the target context of the plan")
    s = tails.sink_tokens
    if context <= s:
        raise KVError(f"the context ({context}) must exceed the {s} sink tokens")
    n_layers, n_heads, n_kv = model["n_layers"], model["n_heads"], model["n_kv_heads"]
    if tails.profile.shape[:2] != (n_layers, n_heads):
        raise KVError(f"profiles cover {tails.profile.shape[:2]} (layers, heads); the model has {(n_layers, n_heads)}")
    group = n_heads // n_kv
    tail = tails.tail(context)  # (L, Hq, n+1)
    lost = tails.lost(context)
    n = context - s
    if config.mode == "eps":
        per_q = np.argmax(tail <= config.eps + 1e-12, axis=-1)  # smallest w (tail[..., n] = 0 always holds)
        window = np.maximum(per_q, 1).reshape(n_layers, n_kv, group).max(-1)
    else:
        full = n_layers * n_kv * context
        budget = config.budget if config.budget is not None else math.floor((1.0 - config.ratio) * full)
        floor = n_layers * n_kv * (s + 1)
        if budget < floor:
            raise KVError(f"a budget of {budget} tokens is smaller than the sinks plus the current token of every "
                          f"KV head ({n_layers}×{n_kv}×({s}+1) = {floor}); raise --budget or lower --ratio")
        budget = min(budget, full)
        per_kv = lost.reshape(n_layers, n_kv, group, n + 1).sum(2).reshape(n_layers * n_kv, n + 1)
        chosen = np.zeros(n_layers * n_kv, dtype=bool)
        if config.policy == "hybrid":
            key = rank_retrieval(retrieval, config.retrieval_by, (n_layers, n_kv), config.seed).reshape(-1)
            # a retrieval head costs T tokens instead of the floor s + 1; the others keep their floor
            fits = (budget - floor) // max(1, context - s - 1)
            k = int(min(math.floor(config.retrieval_share * budget / context), fits, n_layers * n_kv))
            chosen[np.argsort(-key, kind="stable")[:k]] = True
        windows = np.full(n_layers * n_kv, n, dtype=np.int64)
        rest = ~chosen
        if rest.any():
            left = budget - int(chosen.sum()) * context - int(rest.sum()) * s
            windows[rest] = allocate([per_kv[i] for i in np.flatnonzero(rest)], left, w_min=1)
        window = windows.reshape(n_layers, n_kv)
    w_q = np.repeat(window, group, axis=1)  # (L, Hq)
    pick = w_q[..., None]
    hybrid = config.policy == "hybrid"
    return KVPlan(model=model, run_id=run_id, mode=config.mode, eps=config.eps if config.mode == "eps" else None,
                  context=int(context), sink_tokens=s, window=window.astype(np.int64), gamma=tails.gamma,
                  lost=np.take_along_axis(lost, pick, -1)[..., 0], tail=np.take_along_axis(tail, pick, -1)[..., 0],
                  dtype_bytes=dtype_bytes(config.dtype), policy=config.policy,
                  retrieval=chosen.reshape(n_layers, n_kv) if hybrid else None,
                  retrieval_by=config.retrieval_by if hybrid else None)


def plan_run(run_dir: Path | str, config: PlanConfig | None = None) -> KVPlan:
    """The KV plan of a run directory.

    >>> plan = plan_run("runs/smollm2-…", PlanConfig(ratio=0.75, context=4096))   # doctest: +SKIP
    >>> plan.totals()["bytes"], plan.window.shape
    """
    config = config or PlanConfig()
    model, tails, manifest = load_run(run_dir)
    retrieval = load_retrieval(run_dir, model) if config.policy == "hybrid" else None
    if config.policy == "hybrid" and retrieval is None and config.retrieval_by != "random":
        raise KVError(f"{run_dir} has no retrieval measurement (fits.csv's echo and induction columns are empty), "
                      "which --policy hybrid ranks heads by: measure with `gammalens measure MODEL --retrieval`")
    return plan_from_tails(model, tails, config, run_id=manifest.get("run_id", ""),
                           measured_context=(manifest.get("settings") or {}).get("context"), retrieval=retrieval)
