"""``gammalens sinks``: sink measures, massive activations and the causal test, in one pipeline.

The model is loaded once and measured in up to three passes over the same windows, each a full
:func:`gammalens.measurement.measure` (probe, γ fits) with the sink observer riding on the probe's exact
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
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gammalens.errors import GammalensError
from gammalens.sinks.result import SINK_FILE, SinkResult


@dataclass
class SinkConfig:
    """Settings of the sink measures; CLI flags map one-to-one onto these fields.

    Attributes
    ----------
    ks : tuple of int
        The k of "attention mass on the first k tokens" (each ≥ 1); the fit's ``sink_tokens`` is added.
    eps : float
        ε of the sink rate: a head sinks when its first-key share exceeds ε (Gu et al. 2024: 0.3).
    massive_abs : float
        Smallest |value| of a massive activation (Sun et al. 2024: 100).
    massive_ratio : float
        Smallest multiple of the layer's median |value| for a massive activation (Sun et al.: 1000).
    ablate : str or None
        ``'zero'`` or ``'mean'``: ablate the massive activations where they arise and re-measure;
        None: no causal test.
    bos_variant : bool
        Also measure the windows without the BOS (or with one, for a tokenizer that adds none).
    """

    ks: tuple[int, ...] = (1, 4)
    eps: float = 0.3
    massive_abs: float = 100.0
    massive_ratio: float = 1000.0
    ablate: str | None = "zero"
    bos_variant: bool = True

    def __post_init__(self) -> None:
        self.ks = tuple(sorted({int(k) for k in self.ks}))
        if not self.ks or self.ks[0] < 1:
            raise GammalensError(f"sink token counts k must be ≥ 1 (got {list(self.ks)})")
        if not 0 < self.eps < 1:
            raise GammalensError(f"--sink-eps must be in (0, 1) (got {self.eps})")
        if not self.massive_abs > 0:
            raise GammalensError(f"--massive-abs must be > 0 (got {self.massive_abs}); Sun et al. use 100")
        if not self.massive_ratio > 0:
            raise GammalensError(f"--massive-ratio must be > 0 (got {self.massive_ratio}); Sun et al. use 1000")
        if self.ablate == "none":
            self.ablate = None
        if self.ablate not in (None, "zero", "mean"):
            raise GammalensError(f"--ablate-massive must be zero, mean or none (got {self.ablate!r})")


def measure_sinks(model: Any = None, *, config: Any = None, sinks: SinkConfig | None = None, tokenizer: Any = None,
                  out: Path | str | None = None, progress: bool = False, report: bool = True, record: bool = False,
                  atlas: Path | str | None = None, **settings: Any) -> SinkResult:
    """Measure sinks, massive activations and the effect of ablating them, per head, with γ alongside.

    Parameters
    ----------
    model : str, PreTrainedModel or None
        Hub id, local directory or short name (None: the embedded default); or a model already loaded
        with ``from_pretrained`` (pass its ``tokenizer``; the manifest records its directory's weights —
        hooks you installed on it are not recorded).
    config : MeasureConfig, optional
        The measurement settings; otherwise the :class:`~gammalens.measurement.MeasureConfig` fields among
        ``settings`` (``corpus``, ``context``, ``windows``, ``sink_tokens`` …).
    sinks : SinkConfig, optional
        The sink settings; otherwise the :class:`SinkConfig` fields among ``settings``.
    tokenizer : PreTrainedTokenizerBase, optional
        The tokenizer of a loaded ``model``.
    out : Path or str, optional
        Parent directory of the run directory; None: nothing is written.
    progress, report, record, atlas
        As for :func:`gammalens.measurement.measure`.

    Returns
    -------
    SinkResult

    Raises
    ------
    GammalensError
        Bad settings (k not smaller than the context, thresholds ≤ 0, …), before any forward pass.

    Examples
    --------
    >>> r = measure_sinks("minilm", context=64, windows=4)                          # doctest: +SKIP
    >>> r.baseline.sink_kind[1], r.massive.first_layer                              # doctest: +SKIP
    """
    from gammalens.corpus import load_windows, special_tokens
    from gammalens.measurement import MeasureConfig, measure
    from gammalens.models import arch_facts, execution_device, load_model, resolve_model
    from gammalens.publish import write_run
    from gammalens.runs.writer import RunWriter
    from gammalens.sinks.ablation import AblationLog, ablating
    from gammalens.sinks.correlation import across_heads
    from gammalens.sinks.massive import MassiveDetector
    from gammalens.sinks.measures import SinkObserver
    from gammalens.sinks.result import summarise
    from gammalens.sinks.token_kinds import TokenNamer

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
    ks = tuple(sorted({*sinks.ks, *([config.sink_tokens] if config.sink_tokens else [])}))
    if config.context is not None:
        _check_ks(ks, config.context, "the context")
    # checks writability before any work; the folder itself is made only when the run is written
    writer = RunWriter(Path(out), lazy=True) if out is not None else None

    if net is None:
        net, tokenizer = load_model(resolve_model(config.model, config.gguf_file), config.dtype, config.device)
    elif tokenizer is None:
        raise GammalensError("a loaded model needs its tokenizer: measure_sinks(model, tokenizer=...)")
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

    L, H, N = arch["n_layers"], arch["n_heads"], len(tw.input_ids)
    dev = execution_device(net)
    namer = TokenNamer(tokenizer)
    loaded = (net, tokenizer)

    def run(label: str, windows: Any, prefix_len: int, cfg: Any, intervention: Any = None) -> tuple[Any, Any]:
        obs = SinkObserver(L, H, N, ks, dev)
        res = measure(config=cfg, observers=[obs], intervention=intervention, loaded=loaded, token_windows=windows,
                      progress=progress)
        return res, summarise(label, obs.result(), res.fits, windows.input_ids, namer, prefix_len)

    detector = MassiveDetector(sinks.massive_abs, sinks.massive_ratio)
    base, baseline = run("baseline", tw, len(prefix), base_cfg, detector.attached)
    massive = detector.result()

    ablated, log = None, AblationLog()
    if sinks.ablate is not None and massive.any:
        targets = massive.arising()
        _, ablated = run("ablated", tw, len(prefix), dataclasses.replace(base_cfg, bootstrap=0),
                         lambda m: ablating(m, targets, mode=sinks.ablate, abs_threshold=sinks.massive_abs,
                                            ratio=sinks.massive_ratio, log=log))

    bos, note = None, _bos_note(prefix, tokenizer, sinks.bos_variant)
    if variant is not None:
        windows, prefix_len, label = variant
        cfg = dataclasses.replace(base_cfg, context=windows.input_ids.shape[1], bootstrap=0)
        _, bos = run(label, windows, prefix_len, cfg)

    result = SinkResult(
        model=base.manifest["model"]["id"],
        settings={**asdict(sinks), "ks": list(ks), "sink_tokens": config.sink_tokens},
        baseline=baseline, bos=bos, bos_note=note, massive=massive, ablated=ablated,
        ablated_count=[int(log.count.get(i, 0)) for i in range(L)], correlation=across_heads(base.fits),
    )
    fits = [dict(r) for r in base.fits]
    result.annotate(fits)
    manifest = {**base.manifest, "sinks": {**result.settings, "file": SINK_FILE}}
    run_dir = None
    if writer is not None:
        sinks_json = json.dumps(result.to_dict(), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
        run_dir = write_run(writer, manifest, fits, base.profile, report=report, record=record, atlas=atlas,
                            files={SINK_FILE: sinks_json})
    measured = dataclasses.replace(base, fits=fits, manifest=manifest, run_dir=run_dir)
    return dataclasses.replace(result, run_dir=run_dir, measurement=measured)


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
