"""``gammalens sinks``: sink measures, massive activations and the causal test, in one pipeline.

The model is loaded once and measured in up to three passes over the same windows, each a full
:func:`gammalens.measuring.pipeline.measure` (probe, γ fits) with the sink observer riding on the probe's exact
probabilities:

1. **baseline** — the windows as the tokenizer makes them, with the massive-activation detector hooked.
2. **ablated** — the massive activations replaced where they arise (:mod:`gammalens.sinks.ablation`);
   Δsink and Δγ per layer and head are ablated − baseline.
3. **BOS variant** — the same content without the BOS (dropped, when the tokenizer adds one) or with one
   (prepended, when the tokenizer adds none but has a BOS token; the last token then drops out so the
   width stays).

The baseline is written as an ordinary run directory (``gammalens verify`` re-measures its γ), with the
sink columns added to ``fits.csv`` and everything else in ``sinks.json`` (``docs/sinks.md``).

>>> from gammalens.sinks import measure_sinks
>>> r = measure_sinks("minilm", context=64, windows=4)          # doctest: +SKIP
>>> r.to_pandas()[["name", "sink_mass_k1", "peak_key_share", "sink_kind"]].head()   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gammalens.corpus import load_windows, special_tokens
from gammalens.errors import GammalensError
from gammalens.measuring.config import MeasureConfig, MeasureResult
from gammalens.measuring.pipeline import measure
from gammalens.model.load import arch_facts, execution_device, load_model, resolve_model
from gammalens.sinks.ablation import AblationLog, ablating
from gammalens.sinks.config import SinkConfig
from gammalens.sinks.correlation import across_heads
from gammalens.sinks.massive import MassiveDetector
from gammalens.sinks.measures import SinkObserver
from gammalens.sinks.result import SINK_FILE, SinkResult, summarise
from gammalens.sinks.token_kinds import TokenNamer


def measure_sinks(model: Any = None, *, config: Any = None, sinks: SinkConfig | None = None, tokenizer: Any = None,
                  progress: bool = False, **settings: Any) -> SinkResult:
    """Measure sinks, massive activations and the effect of ablating them, per head, with γ alongside.

    Parameters
    ----------
    model : str, PreTrainedModel or None
        Hub id, local directory or short name (None: the embedded default); or a model already loaded
        with ``from_pretrained`` (pass its ``tokenizer``; the manifest records its directory's weights —
        hooks you installed on it are not recorded).
    config : MeasureConfig, optional
        The measurement settings; otherwise the :class:`~gammalens.measuring.config.MeasureConfig` fields among
        ``settings`` (``corpus``, ``context``, ``windows``, ``sink_tokens`` …).
    sinks : SinkConfig, optional
        The sink settings; otherwise the :class:`SinkConfig` fields among ``settings``.
    tokenizer : PreTrainedTokenizerBase, optional
        The tokenizer of a loaded ``model``.
    progress : bool
        As for :func:`gammalens.measuring.pipeline.measure`.

    Returns
    -------
    SinkResult
        With ``run_dir`` None: :func:`gammalens.publish.publish_sinks` writes the run directory.

    Raises
    ------
    GammalensError
        Bad settings (k not smaller than the context, thresholds ≤ 0, …), before any forward pass.

    Examples
    --------
    >>> r = measure_sinks("minilm", context=64, windows=4)                          # doctest: +SKIP
    >>> r.baseline.sink_kind[1], r.massive.first_layer                              # doctest: +SKIP
    """
    net, config, sinks = _settings(model, config, sinks, settings)
    ks = tuple(sorted({*sinks.ks, *([config.sink_tokens] if config.sink_tokens else [])}))
    if config.context is not None:
        _check_ks(ks, config.context, "the context")
    if net is None:
        net, tokenizer = load_model(resolve_model(config.model, config.gguf_file), config.dtype, config.device)
    elif tokenizer is None:
        raise GammalensError("a loaded model needs its tokenizer: measure_sinks(model, tokenizer=...)")
    passes = _Passes.prepare(net, tokenizer, config, sinks, ks, progress)
    base, baseline = passes.run("baseline", passes.windows, passes.prefix_len, passes.config, passes.detector.attached)
    massive = passes.detector.result()
    ablated, log = None, AblationLog()
    if sinks.ablate is not None and massive.any:
        targets = massive.arising()
        _, ablated = passes.run("ablated", passes.windows, passes.prefix_len,
                                dataclasses.replace(passes.config, bootstrap=0),
                                lambda m: ablating(m, targets, mode=sinks.ablate, abs_threshold=sinks.massive_abs,
                                                   ratio=sinks.massive_ratio, log=log))
    bos, note = None, _bos_note(passes.prefix, tokenizer, sinks.bos_variant)
    if passes.variant is not None:
        windows, prefix_len, label = passes.variant
        cfg = dataclasses.replace(passes.config, context=windows.input_ids.shape[1], bootstrap=0)
        _, bos = passes.run(label, windows, prefix_len, cfg)
    result = SinkResult(
        model=base.manifest["model"]["id"],
        settings={**asdict(sinks), "ks": list(ks), "sink_tokens": config.sink_tokens},
        baseline=baseline, bos=bos, bos_note=note, massive=massive, ablated=ablated,
        ablated_count=[int(log.count.get(i, 0)) for i in range(passes.n_layers)],
        correlation=across_heads(base.fits),
    )
    fits = [dict(r) for r in base.fits]
    result.annotate(fits)
    manifest = {**base.manifest, "sinks": {**result.settings, "file": SINK_FILE}}
    return dataclasses.replace(result, measurement=dataclasses.replace(base, fits=fits, manifest=manifest))


def _settings(model: Any, config: Any, sinks: SinkConfig | None,
              settings: dict[str, Any]) -> tuple[Any, MeasureConfig, SinkConfig]:
    """``(loaded model or None, MeasureConfig, SinkConfig)`` from what :func:`measure_sinks` was given."""
    if model is None or isinstance(model, (str, Path)):
        net, model_id = None, None if model is None else str(model)
    else:
        net, model_id = model, _model_dir(model)
    sink_fields = set(SinkConfig.__dataclass_fields__)
    unknown = set(settings) - sink_fields - set(MeasureConfig.__dataclass_fields__)
    if unknown:
        raise GammalensError(f"unknown setting(s) {', '.join(sorted(unknown))} for measure_sinks")
    sinks = sinks or SinkConfig(**{k: v for k, v in settings.items() if k in sink_fields})
    rest = {k: v for k, v in settings.items() if k not in sink_fields}
    if config is None:
        config = MeasureConfig(model=model_id, **rest)
    elif rest or (net is None and model is not None):
        raise GammalensError("pass either config= or model/settings, not both")
    elif net is not None:
        config = dataclasses.replace(config, model=model_id)
    return net, config, sinks


@dataclass
class _Passes:
    """The shared state of a sinks measurement's passes: one model, one set of windows, one observer shape."""

    loaded: tuple[Any, Any]
    config: MeasureConfig
    windows: Any
    prefix: list[int]
    prefix_len: int
    variant: tuple[Any, int, str] | None
    ks: tuple[int, ...]
    namer: TokenNamer
    detector: MassiveDetector
    n_layers: int
    n_heads: int
    device: Any
    progress: bool

    @classmethod
    def prepare(cls, net: Any, tokenizer: Any, config: MeasureConfig, sinks: SinkConfig, ks: tuple[int, ...],
                progress: bool) -> _Passes:
        """Check the settings against the model and cut the windows (and their BOS variant), before any pass."""
        arch = arch_facts(net)
        context = config.resolve_context(arch["max_positions"])
        _check_ks(ks, context, "the context")
        d_min, d_max = config.parse_fit_range(context)
        base_cfg = dataclasses.replace(config, context=context, fit_range=f"{d_min}:{d_max}")
        tw = load_windows(config.corpus, tokenizer, context, config.windows, seed=config.seed)
        prefix, _ = special_tokens(tokenizer)
        variant = _bos_windows(tw, prefix, tokenizer) if sinks.bos_variant else None
        if variant is not None:
            _check_ks(ks, variant[0].input_ids.shape[1], f"the window {variant[2]}")
            if config.sink_tokens >= variant[0].input_ids.shape[1] - d_max:
                raise GammalensError(f"--sink-tokens {config.sink_tokens} leaves no query that sees distances up to "
                                     f"{d_max} in the window {variant[2]}; lower it or the fit range's upper end")
        return cls((net, tokenizer), base_cfg, tw, prefix, len(prefix), variant, ks, TokenNamer(tokenizer),
                   MassiveDetector(sinks.massive_abs, sinks.massive_ratio), arch["n_layers"], arch["n_heads"],
                   execution_device(net), progress)

    def run(self, label: str, windows: Any, prefix_len: int, cfg: MeasureConfig,
            intervention: Any = None) -> tuple[MeasureResult, Any]:
        """One pass of the pipeline with the sink observer on the probe; its result and the pass's summary."""
        obs = SinkObserver(self.n_layers, self.n_heads, len(self.windows.input_ids), self.ks, self.device)
        res = measure(config=cfg, observers=[obs], intervention=intervention, loaded=self.loaded,
                      token_windows=windows, progress=self.progress)
        return res, summarise(label, obs.result(), res.fits, windows.input_ids, self.namer, prefix_len)


def _model_dir(model: Any) -> str:
    path = getattr(model, "name_or_path", "") or getattr(getattr(model, "config", None), "_name_or_path", "")
    if not path:
        raise GammalensError("the loaded model does not say where it was loaded from; load it with from_pretrained "
                             "(a local directory or hub id) or pass the directory instead")
    return str(path)


def _check_ks(ks: tuple[int, ...], width: int, what: str) -> None:
    if ks and ks[-1] >= width:
        raise GammalensError(f"--sink-tokens {ks[-1]} is not smaller than {what} ({width} tokens): no query would "
                             "be left to attend to the sink; lower it or raise --context")


def _bos_windows(tw: Any, prefix: list[int], tokenizer: Any) -> tuple[Any, int, str] | None:
    """The BOS variant of the windows: ``(windows, prefix_len, label)``, or None when there is none."""
    import numpy as np

    if prefix:
        ids, prefix_len, label, how = tw.input_ids[:, len(prefix):], 0, "no_bos", "BOS dropped"
    else:
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is None:
            return None
        ids = np.concatenate([np.full((len(tw.input_ids), 1), bos, dtype=np.int64), tw.input_ids[:, :-1]], axis=1)
        prefix_len, label, how = 1, "with_bos", "BOS prepended, last token dropped"
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    ids.setflags(write=False)
    name = f"{tw.name} ({how})"
    digest = hashlib.sha256(f"{name}\0{ids.shape}\0".encode())
    digest.update(ids.astype("<i8").tobytes())
    windows = dataclasses.replace(tw, name=name, input_ids=ids, sha256=digest.hexdigest(), n_tokens=int(ids.size),
                                  selection=f"{tw.selection}; {how}")
    return windows, prefix_len, label


def _bos_note(prefix: list[int], tokenizer: Any, asked: bool) -> str:
    if not asked:
        return "BOS variant not measured"
    if prefix:
        names = ", ".join(tokenizer.convert_ids_to_tokens(prefix))
        return f"the tokenizer starts every window with {names}; the variant drops it (the window is shorter by " \
               f"{len(prefix)})"
    bos = getattr(tokenizer, "bos_token", None)
    if bos is None:
        return "the tokenizer adds no BOS and has no BOS token: the first content token is the only candidate " \
               "first-position sink, so there is no variant"
    return f"the tokenizer adds no BOS; the variant prepends its BOS token {bos} (and drops the last token)"
