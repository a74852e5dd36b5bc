"""``gammalens measure``: corpus → model → probe → profile → fit, with a manifest that re-runs it.

The pipeline is a row of steps on typed values — :func:`load_step` (model, architecture, windows),
:func:`forward_step` (the probe's exact sums over the windows), :func:`fit_step` (profile → fits with the
theory columns) and :func:`manifest_step` — composed by :func:`measure`. Kinds of measurement ride on it
as observers and interventions (:mod:`gammalens.sinks`) or run next to it (the book's estimator,
``estimator='taf'``). Nothing here writes a run directory: publishing is :mod:`gammalens.publish`.

>>> import gammalens
>>> r = gammalens.measure("minilm", context=128, windows=4)          # doctest: +SKIP
>>> r.to_pandas().query("scope == 'layer'")[["name", "gamma", "r2", "phase"]]   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import inspect
import platform
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from gammalens.corpus import TokenWindows, load_windows
from gammalens.errors import FitError, GammalensError
from gammalens.fit.heads import FitSettings, fit_profile
from gammalens.measuring.config import DEFAULT_CONTEXT, MeasureConfig, MeasureResult
from gammalens.model.load import ModelSource, arch_facts, execution_device, load_model, resolve_device, resolve_model
from gammalens.probe.accumulate import BatchLayout, ProfileAccumulator
from gammalens.probe.backend import DistanceProbe, probing
from gammalens.probe.profile import DistanceProfile, resolve_layout
from gammalens.runs.schema import FORMAT
from gammalens.taf.alongside import run_alongside
from gammalens.theory.annotate import annotate
from gammalens.version import __version__

__all__ = ["DEFAULT_CONTEXT", "Loaded", "MeasureConfig", "MeasureResult", "Probed", "measure"]


@dataclass
class _Timer:
    marks: dict[str, float] = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)
    last: float = field(default_factory=time.perf_counter)

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.marks[name] = round(now - self.last, 4)
        self.last = now


@dataclass(frozen=True)
class Loaded:
    """The inputs of a measurement once resolved: the model, its facts, the windows and the fit range."""

    source: ModelSource
    net: Any
    tokenizer: Any
    arch: dict[str, Any]
    context: int
    fit_range: tuple[int, int]
    windows: TokenWindows


@dataclass(frozen=True)
class Probed:
    """What the forward passes left: the accumulator's sums, and what the probe learnt about the layers."""

    accumulator: ProfileAccumulator
    probe: DistanceProbe
    n_tokens: int


def measure(model: str | None = None, *, config: MeasureConfig | None = None, progress: bool = False,
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
    progress : bool
        Show a progress bar (tokens/s, ETA) on stderr.
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
        With ``run_dir`` None: :func:`gammalens.publish.publish` writes it (``gammalens.measure(out=...)``
        composes both).

    Examples
    --------
    >>> r = measure("minilm", context=64, windows=4, bootstrap=50)   # doctest: +SKIP
    >>> r.model_fit["gamma"]                                         # doctest: +SKIP
    """
    if config is None:
        config = MeasureConfig(model=model, **settings)
    elif model is not None or settings:
        raise GammalensError("pass either config= or model/settings, not both")
    timer = _Timer()
    inputs = load_step(config, loaded, token_windows)
    timer.mark("load_s")
    taf = None
    if config.estimator == "taf":  # the book's estimator next to ours (gammalens.taf); fails before any output
        taf = run_alongside((inputs.net, inputs.tokenizer), config)
        timer.mark("taf_s")
    probed = forward_step(config, inputs, observers, intervention, progress)
    timer.mark("forward_s")
    profile, fits = fit_step(config, inputs, probed)
    timer.mark("fit_s")
    timer.marks["total_s"] = round(time.perf_counter() - timer.t0, 4)
    timer.marks["tokens_per_s"] = round(probed.n_tokens / max(timer.marks["forward_s"], 1e-9), 1)
    manifest = manifest_step(config, inputs, probed, profile, fits, timer.marks)
    if taf is not None:
        manifest["taf"] = taf
    return MeasureResult(fits=fits, profile=profile, manifest=manifest)


def load_step(config: MeasureConfig, loaded: tuple[Any, Any] | None = None, token_windows: Any = None) -> Loaded:
    """Resolve and load the model (unless ``loaded``), check the context and fit range, cut the windows."""
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
    return Loaded(src, net, tokenizer, arch, context, (d_min, d_max), tw)


def forward_step(config: MeasureConfig, inputs: Loaded, observers: Sequence[Callable[..., None]] = (),
                 intervention: Callable[[Any], AbstractContextManager[Any]] | None = None,
                 progress: bool = False) -> Probed:
    """Run the windows through the model in batches with the probe attached; its sums are exact (float64)."""
    net, arch, context = inputs.net, inputs.arch, inputs.context
    dev = execution_device(net)  # not next(parameters()): with device_map offload those sit on meta
    L = arch["n_layers"]
    acc = ProfileAccumulator(L, arch["n_heads"], len(inputs.windows.input_ids), context - 1, inputs.fit_range[1],
                             config.sink_tokens, dev)
    probe = DistanceProbe(acc, chunk_size=config.chunk_size, observers=observers, backend=config.backend)
    if probe.resolve(dev) and probe.note_:
        print(f"gammalens: note: {probe.note_}", file=sys.stderr)
    ids = torch.tensor(inputs.windows.input_ids, dtype=torch.long)
    extra = only_last_logits(net)
    bar = _progress(progress, int(ids.numel()))
    try:
        hooks = intervention(net) if intervention is not None else contextlib.nullcontext()
        with torch.inference_mode(), probing(net, probe), hooks:
            for b0 in range(0, len(ids), config.batch_size):
                batch = ids[b0:b0 + config.batch_size].to(dev)
                probe.set_layout(BatchLayout.full(len(batch), context, first_doc=b0, device=dev))
                net(input_ids=batch, attention_mask=torch.ones_like(batch), **extra)
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
    return Probed(acc, probe, int(ids.numel()))


def fit_step(config: MeasureConfig, inputs: Loaded, probed: Probed) -> tuple[DistanceProfile, list[dict]]:
    """The exact distance profile, its per-head / layer / model fits, and the theory columns of every row."""
    windows = np.zeros(inputs.arch["n_layers"], dtype=np.int64)
    for i, w in probed.probe.layer_windows.items():
        windows[i] = w or 0
    profile = probed.accumulator.to_profile(windows)
    d_min, d_max = inputs.fit_range
    fits = fit_profile(profile, FitSettings(d_min, d_max, config.bootstrap, config.seed))
    _annotate(fits, profile, inputs.context, inputs.arch["rope_theta"], config.eps, inputs.arch.get("layer_rope_theta"))
    return profile, fits


def manifest_step(config: MeasureConfig, inputs: Loaded, probed: Probed, profile: DistanceProfile,
                  fits: list[dict], timings: dict[str, float]) -> dict[str, Any]:
    """Everything needed to re-run the measurement (``manifest.json``)."""
    import scipy
    import transformers

    d_min, d_max = inputs.fit_range
    settings_used = asdict(config) | {"context": inputs.context, "fit_range": f"{d_min}:{d_max}",
                                      "gguf_file": inputs.source.gguf_file}
    layout, exact_to = resolve_layout(config.profile_layout, profile.shape)  # 'auto' decided by the run's size
    return {
        "format": FORMAT,
        "model": inputs.source.to_manifest() | {"arch": inputs.arch},
        "corpus": inputs.windows.to_manifest(),
        "settings": settings_used,
        "seed": config.seed,
        "versions": {"gammalens": __version__, "python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__, "scipy": scipy.__version__},
        "timings": timings,
        "layer_modules": _module_names(inputs.net, probed.probe),
        "probe": {"backend": probed.probe.backend_, "note": probed.probe.note_, "kernel": probed.probe.kernel_summary()},
        "profile_layout": layout if layout == "full" else f"compact:{exact_to}",
        "result": {k: fits[-1][k] for k in ("gamma", "gamma_ci_low", "gamma_ci_high", "r2", "phase", "sink_mass")}
        | ({"ci_note": fits[-1]["ci_note"]} if fits[-1].get("ci_note") else {}),
    }


def _annotate(fits: list[dict], profile: Any, context: int, rope_theta: float | None, eps: float,
              layer_theta: list[float] | None = None) -> None:
    """Add the theory columns (D_f, χ, lenses, γ_Padé …) to every row, from its null-corrected profile.

    ``layer_theta``: each layer's θ where layer kinds differ (Gemma-3); layer and head rows use their layer's,
    the model row the full-attention θ (``rope_theta``).
    """
    mass = profile.mass_cs  # (L, H, cs_horizon+1)
    for row in fits:
        layer, head = row["layer"], row["head"]
        m = mass[layer, head] if head is not None else (mass[layer].sum(0) if layer is not None else mass.sum((0, 1)))
        window = int(profile.layer_window[layer]) if layer is not None else 0
        theta = layer_theta[layer] if layer_theta and layer is not None else rope_theta
        row.update(annotate(row["gamma"], row["gamma_ci_low"], row["gamma_ci_high"], context=context,
                            rope_theta=theta, mass=m, eps=eps, sliding_window=window or None))
        if head is not None:
            # the η regime judges how a model or layer uses its context; one local head (γ ≥ 1) is not "Fraud"
            row["regime"] = None


def only_last_logits(net: Any) -> dict[str, int]:
    """``{'logits_to_keep': 1}`` for a language-model head that takes it: the probe needs attention, not logits,
    and the vocabulary projection of every position is up to 60% of a small model's forward (Gemma-3-270M:
    262,144 × 640)."""
    try:
        takes = "logits_to_keep" in inspect.signature(net.forward).parameters
    except (TypeError, ValueError):
        takes = False
    return {"logits_to_keep": 1} if takes else {}


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
