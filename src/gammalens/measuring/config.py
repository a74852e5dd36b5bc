"""The settings of a measurement and what it produced: :class:`MeasureConfig`, :class:`MeasureResult`.

Light to import (no torch): the CLI builds its options from :class:`MeasureConfig`'s fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gammalens.errors import FitError, GammalensError
from gammalens.probe.grid import parse_layout

DEFAULT_CONTEXT = 512


@dataclass
class MeasureConfig:
    """Every setting of a measurement; CLI flags map one-to-one onto these fields.

    Attributes
    ----------
    model : str or None
        Hub id, local directory or short name (``'gammalens-tiny'``, ``'minilm'``); None: the embedded default
        (``'gammalens-tiny'``).
    corpus : str
        Corpus spec (see :func:`gammalens.corpus.load_windows`): ``'stdlib'``, ``'random'``, a path, …
    context : int or None
        Tokens per window; None: 512, or the model's maximum positions if smaller.
    windows : int
        Number of windows (documents).
    sink_tokens : int
        The first K keys of each document are sinks, kept out of the profile (K ≥ 0).
    fit_range : str or None
        ``'A:B'``, the inclusive distance range of the fit, 1 ≤ A < B < context; None: ``1:context//2``.
    dtype : str
        ``'fp32'``, ``'bf16'`` or ``'fp16'`` weights; the probe computes in fp32, sums in fp64.
    device : str
        ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'auto'`` (device_map across GPUs).
    batch_size : int
        Windows per forward pass.
    chunk_size : int or None
        Queries per probe chunk; None: from a 32 MiB budget per chunk.
    backend : str
        The probe: ``'chunked'`` (exact, any device), ``'triton'`` (the fused kernel, CUDA; see
        :mod:`gammalens.probe.fused`) or ``'auto'`` (triton on CUDA when installed, else chunked).
    bootstrap : int
        Bootstrap resamples over documents for the 95% CI (0: none).
    seed : int
        Seed of the window selection, random corpora and bootstrap.
    allow_extrapolation : bool
        Allow a context beyond the model's maximum positions.
    eps : float
        ε of the KV window D_f: the fraction of non-sink mass allowed outside it, in (0, 1).
    estimator : str
        ``'null'``: gammalens's null-corrected estimator only; ``'taf'``: also the book's estimator
        (:mod:`gammalens.taf`), recorded under the manifest's ``taf`` key — ours always runs.
    taf_windows : int
        With ``estimator='taf'``: windows per distance d (each d + 50 tokens of the same corpus and seed).
    taf_max_distance : int or None
        With ``estimator='taf'``: the largest d of {10, 20, 30, 50, 100, 200, 500, 1000, 2000}; None: all that
        fit the model's positions.
    taf_fit_min_distance : int or None
        With ``estimator='taf'``: the smallest d in its fit (the book's atlas rows: 30); None: all.
    gguf_file : str or None
        With ``model`` a directory: the GGUF file inside it to load (dequantised, converted once and cached).
    profile_layout : str
        How ``profile.npz`` is stored (docs/run_format.md): ``'full'`` (every distance, exact float64 sums),
        ``'compact'`` / ``'compact:E'`` (distances ≤ E exact, default 512; log-spaced bin sums beyond, 32 per
        octave; per-document arrays float32) or ``'auto'`` (full up to 64 MiB, else compact). Fits, D_f and
        every fits.csv column come from the exact in-memory sums whatever the layout.
    """

    model: str | None = None
    corpus: str = "stdlib"
    context: int | None = None
    windows: int = 16
    sink_tokens: int = 1
    fit_range: str | None = None
    dtype: str = "fp32"
    device: str = "cpu"
    batch_size: int = 4
    chunk_size: int | None = None
    backend: str = "auto"  # the probe: 'auto', 'chunked' or 'triton'
    bootstrap: int = 200
    seed: int = 0
    allow_extrapolation: bool = False
    eps: float = 0.05
    estimator: str = "null"  # 'taf': also the book's estimator, next to ours
    taf_windows: int = 30
    taf_max_distance: int | None = None
    taf_fit_min_distance: int | None = None
    gguf_file: str | None = None  # a GGUF file inside the directory `model`
    profile_layout: str = "auto"  # profile.npz: 'full', 'compact', 'compact:E' or 'auto' (full up to 64 MiB)

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise GammalensError(msg)

        need(self.windows >= 1, f"--windows must be at least 1 (got {self.windows})")
        need(self.sink_tokens >= 0, f"--sink-tokens must be ≥ 0 (got {self.sink_tokens})")
        need(self.context is None or self.context >= 8, f"--context must be at least 8 tokens (got {self.context})")
        need(self.batch_size >= 1, f"--batch-size must be at least 1 (got {self.batch_size})")
        need(self.chunk_size is None or self.chunk_size >= 1, f"--chunk-size must be ≥ 1 (got {self.chunk_size})")
        need(self.backend in ("auto", "chunked", "triton"),
             f"--backend must be auto, chunked or triton (got {self.backend!r})")
        need(self.bootstrap >= 0, f"--bootstrap must be ≥ 0 (got {self.bootstrap})")
        need(0 < self.eps < 1, f"--eps must be in (0, 1) (got {self.eps})")
        need(self.dtype in {"fp32", "bf16", "fp16"}, f"--dtype must be fp32, bf16 or fp16 (got {self.dtype!r})")
        need(self.estimator in {"null", "taf"}, f"--estimator must be null or taf (got {self.estimator!r})")
        need(self.taf_windows >= 1, f"--taf-windows must be at least 1 (got {self.taf_windows})")
        need(self.taf_max_distance is None or self.taf_max_distance >= 1,
             f"--taf-max-distance must be at least 1 (got {self.taf_max_distance})")
        need(self.taf_fit_min_distance is None or self.taf_fit_min_distance >= 1,
             f"--taf-fit-min-distance must be at least 1 (got {self.taf_fit_min_distance})")
        if self.fit_range is not None:
            self.parse_fit_range(self.context or 10**9)

        try:
            parse_layout(self.profile_layout)
        except ValueError as err:
            raise GammalensError(str(err)) from None

    def resolve_context(self, max_positions: int | None) -> int:
        """The context to measure at: ``context`` if set, else 512 or the model's maximum positions if smaller.

        The one place the default is decided (``measure``, ``sinks`` and the sweep planner all call it).
        """
        return self.context or min(DEFAULT_CONTEXT, max_positions or DEFAULT_CONTEXT)

    def parse_fit_range(self, context: int) -> tuple[int, int]:
        """The fit range ``(A, B)`` for ``context``; raises :class:`FitError` if it is outside [1, context)."""
        if self.fit_range is None:
            return 1, context // 2
        try:
            a, b = (int(x) for x in str(self.fit_range).split(":"))
        except ValueError:
            raise FitError(f"--fit-range must look like A:B with integers, e.g. 1:256 (got {self.fit_range!r})") from None
        if not (1 <= a < b < context):
            raise FitError(f"--fit-range {a}:{b} is outside [1, context) = [1, {context}); need 1 ≤ A < B < {context}")
        if b - a < 3:
            raise FitError(f"--fit-range {a}:{b} spans fewer than 4 distances; widen it")
        return a, b


@dataclass(frozen=True)
class MeasureResult:
    """What a measurement produced.

    Attributes
    ----------
    fits : list of dict
        Rows of ``fits.csv``: one per head (``scope='head'``), per layer and one for the model.
    profile : DistanceProfile
        The exact distance profiles.
    manifest : dict
        Everything needed to re-run the measurement (``manifest.json``).
    run_dir : Path or None
        The run directory, if one was written.
    """

    fits: list[dict]
    profile: Any
    manifest: dict
    run_dir: Path | None = None

    def to_pandas(self) -> Any:
        """``fits`` as a DataFrame, one row per head / layer / model, indexed by nothing (``name`` is a column)."""
        import pandas as pd

        return pd.DataFrame(self.fits)

    @property
    def model_fit(self) -> dict:
        """The ``scope='model'`` row."""
        return next(r for r in self.fits if r["scope"] == "model")

    def __repr__(self) -> str:
        m = self.model_fit
        return (f"MeasureResult(model={self.manifest['model']['id']!r}, γ={m['gamma']:.3f} "
                f"[{m['gamma_ci_low']:.3f}, {m['gamma_ci_high']:.3f}], R²={m['r2']:.3f}, phase={m['phase']}, "
                f"sink={m['sink_mass']:.3f}, run_dir={str(self.run_dir) if self.run_dir else None!r})")
