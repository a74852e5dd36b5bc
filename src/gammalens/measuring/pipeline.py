"""``gammalens measure``: corpus → model → probe → profile → fit, with a manifest that re-runs it.

>>> import gammalens
>>> r = gammalens.measure("minilm", context=128, windows=4)          # doctest: +SKIP
>>> r.to_pandas().query("scope == 'layer'")[["name", "gamma", "r2", "phase"]]   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gammalens.errors import FitError, GammalensError
from gammalens.runs.schema import FORMAT

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
        from gammalens.probe.grid import parse_layout

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


@dataclass
class _Timer:
    marks: dict[str, float] = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)

    def mark(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.marks[name] = round(now - since, 4)
        return now


def measure(model: str | None = None, *, config: MeasureConfig | None = None, out: Path | str | None = None,
            progress: bool = False, report: bool = True, record: bool = False, atlas: Path | str | None = None,
            observers: Sequence[Callable[..., None]] = (),
            intervention: Callable[[Any], AbstractContextManager[Any]] | None = None,
            loaded: tuple[Any, Any] | None = None, token_windows: Any = None,
            **settings: Any) -> MeasureResult:
    """Measure per-head γ, its CI, fit quality, sink mass and phase of a model.

    Parameters
    ----------
    model : str or None
        Hub id, local directory or short name; None: the embedded default (``'gammalens-tiny'``).
    config : MeasureConfig, optional
        All settings at once; otherwise ``settings`` are passed to :class:`MeasureConfig`.
    out : Path or str, optional
        Parent directory for the run directory; None: nothing is written.
    progress : bool
        Show a progress bar (tokens/s, ETA) on stderr.
    report : bool
        With ``out``: write the self-contained ``report.html`` into the run directory.
    record : bool
        With ``out``: record the finished run in the atlas (``atlas``, else ``$GAMMALENS_ATLAS`` or the
        user's data directory). A busy or unusable atlas only warns: the run is safe on disk.
    atlas : Path or str, optional
        The atlas file to record into and to draw the report's atlas map from.
    observers : sequence of callables, optional
        Further measurements on the probe's exact fp32 probabilities, passed to
        :class:`~gammalens.probe.backend.DistanceProbe` (e.g. the sink measures of :mod:`gammalens.sinks`).
    intervention : callable, optional
        ``intervention(model)`` returns a context manager entered around the forward passes (inside the
        probe), e.g. forward hooks that record or ablate massive activations; it must remove what it
        installs on exit. γ is then the γ of the intervened model.
    loaded : (model, tokenizer), optional
        The already loaded model and tokenizer of ``config.model`` (which still names it in the manifest),
        so a pipeline that measures one model several times loads it once.
    token_windows : TokenWindows, optional
        The windows to measure instead of loading ``config.corpus``; their width must be the context.
    **settings
        Fields of :class:`MeasureConfig` (``corpus``, ``context``, ``windows``, ``fit_range`` …).

    Returns
    -------
    MeasureResult

    Examples
    --------
    >>> r = measure("minilm", context=64, windows=4, bootstrap=50)   # doctest: +SKIP
    >>> r.model_fit["gamma"]                                         # doctest: +SKIP
    """
    import numpy as np
    import torch

    from gammalens.corpus import load_windows
    from gammalens.fit.heads import FitSettings, fit_profile
    from gammalens.models import arch_facts, execution_device, load_model, resolve_device, resolve_model
    from gammalens.probe.accumulate import BatchLayout, ProfileAccumulator
    from gammalens.probe.backend import DistanceProbe, probing
    from gammalens.probe.profile import DistanceProfile, resolve_layout
    from gammalens.runs.writer import RunWriter
    from gammalens.version import __version__

    if config is None:
        config = MeasureConfig(model=model, **settings)
    elif model is not None or settings:
        raise GammalensError("pass either config= or model/settings, not both")
    timer = _Timer()
    # checks writability before any work; the folder itself is made only when the run is written
    writer = RunWriter(Path(out), lazy=True) if out is not None else None

    t = timer.t0
    src = resolve_model(config.model, config.gguf_file)
    if config.device != "auto":
        resolve_device(config.device)
    net, tokenizer = loaded if loaded is not None else load_model(src, config.dtype, config.device)
    arch = arch_facts(net)
    if arch["n_layers"] < 1:
        raise GammalensError(f"{src.id} has no layers (num_hidden_layers = {arch['n_layers']}): nothing to measure")
    context = config.resolve_context(arch["max_positions"])
    if arch["max_positions"] and context > arch["max_positions"] and not config.allow_extrapolation:
        raise GammalensError(
            f"--context {context} exceeds the model's maximum positions ({arch['max_positions']}); "
            "lower it or pass --allow-extrapolation"
        )
    d_min, d_max = config.parse_fit_range(context)
    if config.sink_tokens >= context - d_max:
        raise FitError(f"--sink-tokens {config.sink_tokens} leaves no query that sees distances up to {d_max}; "
                       f"lower it or the fit range's upper end")
    tw = token_windows if token_windows is not None else load_windows(config.corpus, tokenizer, context,
                                                                        config.windows, seed=config.seed)
    if tw.input_ids.shape[1] != context:
        raise GammalensError(f"the token windows hold {tw.input_ids.shape[1]} tokens each, not the context {context}")
    t = timer.mark("load_s", t)
    taf = None
    if config.estimator == "taf":  # the book's estimator next to ours (gammalens.taf); fails before any output
        from gammalens.taf.alongside import run_alongside

        taf = run_alongside((net, tokenizer), config)
        t = timer.mark("taf_s", t)

    dev = execution_device(net)  # not next(parameters()): with device_map offload those sit on meta
    L = arch["n_layers"]
    acc = ProfileAccumulator(L, arch["n_heads"], len(tw.input_ids), context - 1, d_max, config.sink_tokens, dev)
    probe = DistanceProbe(acc, chunk_size=config.chunk_size, observers=observers, backend=config.backend)
    if probe.resolve(dev) and probe.note_:
        import sys

        print(f"gammalens: note: {probe.note_}", file=sys.stderr)
    ids = torch.tensor(tw.input_ids, dtype=torch.long)
    n_tok = int(ids.numel())
    bar = _progress(progress, n_tok)
    try:
        hooks = intervention(net) if intervention is not None else contextlib.nullcontext()
        with torch.inference_mode(), probing(net, probe), hooks:
            for b0 in range(0, len(ids), config.batch_size):
                batch = ids[b0:b0 + config.batch_size].to(dev)
                probe.set_layout(BatchLayout.full(len(batch), context, first_doc=b0, device=dev))
                net(input_ids=batch, attention_mask=torch.ones_like(batch))
                if bar is not None:
                    bar[0].update(bar[1], advance=int(batch.numel()))
    finally:
        if bar is not None:
            bar[0].stop()
    if len(probe.layer_of) != L:
        raise GammalensError(
            f"{arch['model_type']}: the probe saw {len(probe.layer_of)} of {L} attention layers; this architecture "
            "does not route all its attention through transformers' AttentionInterface"
        )
    t = timer.mark("forward_s", t)

    windows = np.zeros(L, dtype=np.int64)
    for i, w in probe.layer_windows.items():
        windows[i] = w or 0
    profile = DistanceProfile(
        mass=acc.mass.cpu().numpy(), pairs=acc.pairs.cpu().numpy(), doc_mass_cs=acc.doc_mass_cs.cpu().numpy(),
        doc_queries_cs=acc.doc_queries_cs.cpu().numpy(), doc_sink_sum=acc.doc_sink_sum.cpu().numpy(),
        doc_sink_queries=acc.doc_sink_queries.cpu().numpy(), layer_window=windows, cs_horizon=d_max,
        sink_tokens=config.sink_tokens,
    )
    fits = fit_profile(profile, FitSettings(d_min, d_max, config.bootstrap, config.seed))
    _annotate(fits, profile, context, arch["rope_theta"], config.eps)
    t = timer.mark("fit_s", t)
    timer.marks["total_s"] = round(time.perf_counter() - timer.t0, 4)
    timer.marks["tokens_per_s"] = round(n_tok / max(timer.marks["forward_s"], 1e-9), 1)

    settings_used = asdict(config) | {"context": context, "fit_range": f"{d_min}:{d_max}", "gguf_file": src.gguf_file}
    layout, exact_to = resolve_layout(config.profile_layout, profile.shape)  # 'auto' decided by the run's size
    import numpy
    import scipy
    import transformers

    manifest = {
        "format": FORMAT,
        "model": src.to_manifest() | {"arch": arch},
        "corpus": tw.to_manifest(),
        "settings": settings_used,
        "seed": config.seed,
        "versions": {"gammalens": __version__, "python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "numpy": numpy.__version__, "scipy": scipy.__version__},
        "timings": timer.marks,
        "layer_modules": _module_names(net, probe),
        "probe": {"backend": probe.backend_, "note": probe.note_},
        "profile_layout": layout if layout == "full" else f"compact:{exact_to}",
        "result": {k: fits[-1][k] for k in ("gamma", "gamma_ci_low", "gamma_ci_high", "r2", "phase", "sink_mass")},
    }
    if taf is not None:
        manifest["taf"] = taf
    run_dir = None
    if writer is not None:
        from gammalens.publish import write_run

        run_dir = write_run(writer, manifest, fits, profile, report=report, record=record, atlas=atlas)
    return MeasureResult(fits=fits, profile=profile, manifest=manifest, run_dir=run_dir)


def _annotate(fits: list[dict], profile: Any, context: int, rope_theta: float | None, eps: float) -> None:
    """Add the theory columns (D_f, χ, lenses, γ_Padé …) to every row, from its null-corrected profile."""
    from gammalens.theory.annotate import annotate

    mass = profile.mass_cs  # (L, H, cs_horizon+1)
    for row in fits:
        layer, head = row["layer"], row["head"]
        m = mass[layer, head] if head is not None else (mass[layer].sum(0) if layer is not None else mass.sum((0, 1)))
        window = int(profile.layer_window[layer]) if layer is not None else 0
        row.update(annotate(row["gamma"], row["gamma_ci_low"], row["gamma_ci_high"], context=context,
                            rope_theta=rope_theta, mass=m, eps=eps, sliding_window=window or None))
        if head is not None:
            # the η regime judges how a model or layer uses its context; one local head (γ ≥ 1) is not "Fraud"
            row["regime"] = None


def _module_names(net: Any, probe: Any) -> list[str]:
    by_id = {id(m): name for name, m in net.named_modules()}
    order = sorted(probe.layer_of.items(), key=lambda kv: kv[1])
    return [by_id.get(mid, "?") for mid, _ in order]


def _progress(enabled: bool, total: int) -> tuple[Any, Any] | None:
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    class _Rate(TextColumn):
        def render(self, task: Any) -> Any:
            from rich.text import Text

            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} tok/s" if speed else "… tok/s")

    p = Progress(TextColumn("measuring"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} tokens"),
                 _Rate(""), TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    p.start()
    return p, p.add_task("forward", total=total)
