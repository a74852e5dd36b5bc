"""The book's estimator: γ from the last query's weight on the key at position 49, as d grows.

Based on the companion tool of *How Transformers Attend* (tafagent, ``cli/diagnose_model.py``,
``measure_attn_distance`` and ``fit_power_law``), reproduced step for step:

1. for each distance d in {10, 20, 30, 50, 100, 200, 500, 1000, 2000} (those that fit), windows of
   n = d + 50 tokens; for random rows, ids drawn by ``random.Random(seed).randint(1000, V_high)`` with
   V_high = min(vocab_size − 1, 49000), the generator re-seeded for every d (the tool uses seed 42);
2. per window, the attention weight of the last query (position d + 49) on the key at position 49,
   i.e. d tokens back: the mean over the finite heads of each layer, then the mean over layers;
3. A(d) = the mean over windows; with several seeds, the mean of the per-seed means (the book's E4
   atlas rows: seeds 42, 123, 7 × 150 windows);
4. γ, ln A₀ from an ordinary (unweighted) least-squares fit ln A(d) = ln A₀ − γ ln d over the d with a
   finite positive A(d) (the E4 rows fit only d ≥ 30: ``fit_min_distance=30``); R² of that fit.

It is not null-corrected: the window grows with d, so uniform attention over the visible keys gives
A(d) = 1/(d + 50) and γ ≈ 0.69 over the default distances (``docs/taf_estimator.md``). gammalens's own
estimator gives 0 there; this one is here so users can reproduce the book's numbers and see the gap.

>>> r = taf_gamma("gammalens-tiny", windows=8)          # doctest: +SKIP
>>> r.gamma, r.r2                                       # doctest: +SKIP
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gammalens.corpus import load_windows
from gammalens.errors import FitError, GammalensError
from gammalens.model.load import arch_facts, execution_device, load_model, resolve_model
from gammalens.probe.backend import probing
from gammalens.probe.last_row import LastRowProbe

TAF_DISTANCES = (10, 20, 30, 50, 100, 200, 500, 1000, 2000)  # tokens
PREFIX = 50          # tokens before the probed distance: a window holds d + PREFIX tokens
TARGET = PREFIX - 1  # the probed key's position; the last query (d + 49) is d tokens after it
TOKEN_LOW, TOKEN_HIGH = 1000, 49_000  # the tool's id range for random windows


@dataclass
class TafSettings:
    """Settings of the book's estimator; the defaults are ``diagnose_model.py``'s except ``windows``.

    Attributes
    ----------
    distances : tuple of int
        Candidate distances d (tokens), increasing; those with d ≤ ``max_distance`` and d + 50 within the
        model's positions are measured.
    windows : int
        Windows per distance and seed (the issue's 30; the tool's full mode uses 80, its ``--fast`` 30).
    corpus : str
        ``'random'``: the tool's random ids; anything else: a corpus spec of :func:`gammalens.corpus.load_windows`
        (text windows of d + 50 tokens including the tokenizer's special tokens).
    seeds : tuple of int
        One seed per repetition; A(d) is the mean of the per-seed means (the tool: ``(42,)``).
    max_distance : int or None
        Largest d to measure (tokens); None: 2000, the tool's ``--N`` default.
    fit_min_distance : int or None
        Smallest d in the fit (the book's E4 atlas rows: 30); None: every measured d.
    batch_size : int
        Windows per forward pass.
    """

    distances: tuple[int, ...] = TAF_DISTANCES
    windows: int = 30
    corpus: str = "random"
    seeds: tuple[int, ...] = (42,)
    max_distance: int | None = None
    fit_min_distance: int | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        self.distances = tuple(int(d) for d in self.distances)
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.distances or any(d < 1 for d in self.distances) or list(self.distances) != sorted(
                set(self.distances)):
            raise TafError(f"taf distances must be distinct positive integers in increasing order (got {self.distances})")
        if self.windows < 1:
            raise TafError(f"--taf-windows must be at least 1 (got {self.windows})")
        if not self.seeds or any(s < 0 for s in self.seeds):
            raise TafError(f"taf seeds must be one or more non-negative integers (got {self.seeds})")
        if self.max_distance is not None and self.max_distance < 1:
            raise TafError(f"--taf-max-distance must be at least 1 (got {self.max_distance})")
        if self.fit_min_distance is not None and self.fit_min_distance < 1:
            raise TafError(f"--taf-fit-min-distance must be at least 1 (got {self.fit_min_distance})")
        if self.batch_size < 1:
            raise TafError(f"batch size must be at least 1 (got {self.batch_size})")

    def usable(self, max_positions: int | None, allow_extrapolation: bool = False) -> tuple[int, ...]:
        """The distances to measure: d ≤ ``max_distance`` and, unless extrapolating, d + 50 ≤ ``max_positions``.

        Raises :class:`TafError` when fewer than two remain or fewer than two would enter the fit.
        """
        top = self.max_distance if self.max_distance is not None else max(TAF_DISTANCES)
        fits_positions = max_positions is None or allow_extrapolation
        ds = tuple(d for d in self.distances if d <= top and (fits_positions or d + PREFIX <= max_positions))
        lo = self.fit_min_distance or 1
        if sum(d >= lo for d in ds) < 2:
            limit = f"the model's {max_positions} positions (d + {PREFIX} tokens per window)" if (
                max_positions and not fits_positions) else "--taf-max-distance"
            raise TafError(f"the taf estimator needs at least two distances to fit, but only {list(ds)} of "
                           f"{list(self.distances)} fit {limit} with fit minimum d ≥ {lo}; raise the maximum "
                           "or lower --taf-fit-min-distance")
        return ds


class TafError(GammalensError):
    """Settings of the book's estimator that cannot be measured (too few distances, bad values)."""


@dataclass(frozen=True)
class TafResult:
    """What the book's estimator returns.

    Attributes
    ----------
    distances : tuple of int
        Measured distances d (tokens).
    attention : tuple of float
        A(d): the last query's mean weight on the key d tokens back (probability), per distance.
    layer_attention : tuple of tuple of float
        (layers, distances): the same per layer (mean over heads, then windows and seeds).
    fit_distances : tuple of int
        The distances that entered the fit (finite, positive A(d), d ≥ the fit minimum).
    gamma : float
        γ_taf, minus the OLS slope of ln A on ln d (dimensionless).
    log_a : float
        The fit's intercept ln A₀.
    r2 : float
        R² of the unweighted log-log fit.
    n_windows : int
        Windows per distance and seed.
    corpus : str
        ``'random'`` or the corpus spec.
    seeds : tuple of int
        Seeds of the windows.
    token_range : tuple of int or None
        Inclusive id range of random windows; None for text.
    n_nonfinite : int
        Head weights that were NaN/inf and left out of the means (the tool drops them the same way).
    seconds : float
        Wall time of the forward passes and the fit (s); 0 for synthetic attention.
    """

    distances: tuple[int, ...]
    attention: tuple[float, ...]
    layer_attention: tuple[tuple[float, ...], ...]
    fit_distances: tuple[int, ...]
    gamma: float
    log_a: float
    r2: float
    n_windows: int
    corpus: str = "synthetic"
    seeds: tuple[int, ...] = ()
    token_range: tuple[int, int] | None = None
    n_nonfinite: int = 0
    seconds: float = 0.0
    estimator: str = field(default="taf", init=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the manifest's ``taf`` entry); NaN becomes None."""
        def clean(x: Any) -> Any:
            if isinstance(x, float):
                return x if math.isfinite(x) else None
            if isinstance(x, (tuple, list)):
                return [clean(v) for v in x]
            return x

        return {k: clean(getattr(self, k)) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TafResult:
        """Inverse of :meth:`to_dict`."""
        def num(x: Any) -> float:
            return float("nan") if x is None else float(x)

        return cls(
            distances=tuple(int(d) for d in data["distances"]),
            attention=tuple(num(a) for a in data["attention"]),
            layer_attention=tuple(tuple(num(a) for a in row) for row in data["layer_attention"]),
            fit_distances=tuple(int(d) for d in data["fit_distances"]), gamma=num(data["gamma"]),
            log_a=num(data["log_a"]), r2=num(data["r2"]), n_windows=int(data["n_windows"]), corpus=data["corpus"],
            seeds=tuple(int(s) for s in data["seeds"]),
            token_range=tuple(data["token_range"]) if data.get("token_range") else None,  # type: ignore[arg-type]
            n_nonfinite=int(data.get("n_nonfinite", 0)), seconds=float(data.get("seconds", 0.0)),
        )

    def __repr__(self) -> str:
        return (f"TafResult(γ_taf={self.gamma:.3f}, R²={self.r2:.3f}, d={list(self.distances)}, "
                f"windows={self.n_windows}, corpus={self.corpus!r})")


def window_weight(w: np.ndarray) -> float:
    """One window's value: the mean over layers of each layer's mean over its finite heads.

    ``w`` is (layers, heads); layers without a finite head are skipped; NaN when none is left.

    >>> window_weight(np.array([[0.1, 0.3], [0.5, np.nan]]))
    0.35
    """
    w = np.asarray(w, dtype=np.float64)
    ok = np.isfinite(w)
    n = ok.sum(-1)
    layer_means = np.where(ok, w, 0.0).sum(-1)[n > 0] / n[n > 0]  # (layers with a finite head,)
    return float(layer_means.mean()) if layer_means.size else float("nan")


def _mean_finite(x: np.ndarray, axis: int = 0) -> np.ndarray:
    ok = np.isfinite(x)
    n = ok.sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, x, 0.0).sum(axis) / n, np.nan)


def fit_loglog(distances: Sequence[int], attention: Sequence[float],
               min_distance: int | None = None) -> tuple[float, float, float, tuple[int, ...]]:
    """OLS of ln A on ln d over the d ≥ ``min_distance`` with finite, positive A: ``(γ, ln A₀, R², used d)``.

    NaN γ when fewer than two points are usable (the tool's behaviour).

    >>> g, _, r2, _ = fit_loglog([10, 100, 1000], [1e-1, 1e-2, 1e-3])
    >>> round(g, 12), round(r2, 12)
    (1.0, 1.0)
    """
    d = np.asarray(distances, dtype=np.float64)
    a = np.asarray(attention, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(a) & (a > 0) & (d >= (min_distance or 1))
    used = tuple(int(x) for x in d[keep])
    if keep.sum() < 2:
        return float("nan"), float("nan"), float("nan"), used
    x, y = np.log(d[keep]), np.log(a[keep])
    design = np.stack([np.ones_like(x), -x], axis=1)
    (log_a, gamma), *_ = np.linalg.lstsq(design, y, rcond=None)
    ss_res = float(((y - design @ np.array([log_a, gamma])) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return float(gamma), float(log_a), 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0, used


def estimate(weights: Mapping[int, Sequence[np.ndarray]], *, fit_min_distance: int | None = None,
             n_windows: int | None = None, **meta: Any) -> TafResult:
    """The estimator from the target weights: ``weights[d][s]`` is (windows, layers, heads) for seed s.

    Parameters
    ----------
    weights : mapping of int to sequence of np.ndarray
        Per distance d, one (windows, layers, heads) array per seed: the last query's weight on key 49.
    fit_min_distance : int, optional
        Smallest d in the fit.
    n_windows : int, optional
        Recorded windows per distance and seed; default: the first array's length.
    **meta
        ``corpus``, ``seeds``, ``token_range``, ``seconds`` for the result.
    """
    ds = sorted(weights)
    attention, layers, n_bad = [], [], 0
    for d in ds:
        per_seed, per_seed_layers = [], []
        for w in weights[d]:
            w = np.asarray(w, dtype=np.float64)  # (windows, layers, heads)
            n_bad += int((~np.isfinite(w)).sum())
            per_seed.append(_mean_finite(np.array([window_weight(x) for x in w])))
            per_seed_layers.append(_mean_finite(_mean_finite(w, axis=2), axis=0))  # (layers,)
        attention.append(float(np.mean(per_seed)))
        layers.append(np.mean(per_seed_layers, axis=0))
    gamma, log_a, r2, used = fit_loglog(ds, attention, fit_min_distance)
    first = np.asarray(weights[ds[0]][0])
    return TafResult(
        distances=tuple(ds), attention=tuple(attention),
        layer_attention=tuple(tuple(float(v) for v in row) for row in np.array(layers).T),
        fit_distances=used, gamma=gamma, log_a=log_a, r2=r2,
        n_windows=int(n_windows if n_windows is not None else len(first)), n_nonfinite=n_bad, **meta)


def random_windows(distance: int, windows: int, seed: int, vocab_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The tool's random windows for one distance: (windows, d + 50) int64 ids and the inclusive id range.

    ``random.Random(seed).randint(1000, min(vocab_size − 1, 49000))`` token by token, window by window.
    Vocabularies of ≤ 1001 tokens (where the tool's range would be empty) draw from [0, vocab_size − 1].
    """
    high = min(vocab_size - 1, TOKEN_HIGH)
    low = TOKEN_LOW if high > TOKEN_LOW else 0
    rng = random.Random(seed)
    n = distance + PREFIX
    ids = np.array([[rng.randint(low, high) for _ in range(n)] for _ in range(windows)], dtype=np.int64)
    return ids, (low, high)


def taf_gamma(model: Any = None, *, settings: TafSettings | None = None, loaded: tuple[Any, Any] | None = None,
              dtype: str = "fp32", device: str = "cpu", allow_extrapolation: bool = False,
              **kwargs: Any) -> TafResult:
    """Measure γ_taf of a model with the book's estimator (see the module docstring).

    Parameters
    ----------
    model : str, optional
        Hub id, local directory or short name; None with ``loaded``, or the default ``'gammalens-tiny'``.
    settings : TafSettings, optional
        All settings at once; otherwise ``kwargs`` (``windows``, ``corpus``, ``seeds``, ``distances``,
        ``max_distance``, ``fit_min_distance``, ``batch_size``) build one.
    loaded : (model, tokenizer), optional
        An already loaded model and its tokenizer.
    dtype, device : str
        Used when loading ``model``.
    allow_extrapolation : bool
        Measure d + 50 beyond the model's maximum positions.

    Returns
    -------
    TafResult

    Examples
    --------
    >>> taf_gamma("minilm", windows=8, max_distance=200)     # doctest: +SKIP
    TafResult(γ_taf=…, R²=…, d=[10, 20, 30, 50, 100, 200], windows=8, corpus='random')
    """
    import torch


    if settings is None:
        settings = TafSettings(**kwargs)
    elif kwargs:
        raise GammalensError("pass either settings= or keyword settings, not both")
    if loaded is None:
        loaded = load_model(resolve_model(model), dtype, device)
    net, tokenizer = loaded
    arch = arch_facts(net)
    ds = settings.usable(arch["max_positions"], allow_extrapolation)
    t0 = time.perf_counter()
    dev = execution_device(net)
    body = net.base_model  # the LM head is not needed: its (batch, n, vocab) logits would dominate memory
    probe = LastRowProbe()
    weights: dict[int, list[np.ndarray]] = {}
    token_range = None
    with torch.inference_mode(), probing(net, probe):
        for d in ds:
            weights[d] = []
            for seed in settings.seeds:
                if settings.corpus == "random":
                    ids, token_range = random_windows(d, settings.windows, seed, tokenizer.vocab_size)
                else:
                    ids = load_windows(settings.corpus, tokenizer, d + PREFIX, settings.windows, seed=seed).input_ids
                rows = []
                for b0 in range(0, len(ids), settings.batch_size):
                    batch = torch.tensor(ids[b0:b0 + settings.batch_size], dtype=torch.long).to(dev)  # a copy: the windows are read-only
                    body(input_ids=batch, attention_mask=torch.ones_like(batch))
                    if len(probe.rows) != arch["n_layers"]:
                        raise GammalensError(f"{arch['model_type']}: the probe saw {len(probe.rows)} of "
                                             f"{arch['n_layers']} attention layers")
                    # layers may sit on several GPUs (device_map='auto'): each row to the cpu before stacking
                    target = torch.stack([probe.rows[i][:, :, TARGET].cpu() for i in range(arch["n_layers"])], 1)
                    rows.append(target.float().numpy())  # (batch, layers, heads)
                weights[d].append(np.concatenate(rows))
    result = estimate(weights, fit_min_distance=settings.fit_min_distance, n_windows=settings.windows,
                      corpus=settings.corpus, seeds=settings.seeds, token_range=token_range,
                      seconds=round(time.perf_counter() - t0, 4))
    if not math.isfinite(result.gamma):
        raise FitError(f"the taf fit failed: fewer than two distances of {list(ds)} have a finite positive A(d)")
    return result
