"""The config card: "will this model work for me at this context, and will it fit?" from a config alone.

:func:`build_card` reads a ``config.json`` (file, directory or hub id) and returns a :class:`ConfigCard`:
architecture and attention type, RoPE scales, γ_Padé and d_horizon at the context T, the predicted
regime and KV window, KV-cache and weight bytes, whether weights + KV + an activation allowance fit in
the GPU and the largest context that does, each verdict ✅ / ⚠ / ❌ with its reason. Nothing is
measured: every number is a prediction from the config and the framework's formulas.

The activation allowance defaults to 10% of the GPU memory (the share vLLM leaves free by default,
``gpu_memory_utilization=0.9``), for activations, the CUDA context and allocator fragmentation.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gammalens import terminal
from gammalens.card import kv_cache
from gammalens.card.params import parameter_count
from gammalens.errors import TheoryError
from gammalens.model.architecture import Architecture, architecture, load_config
from gammalens.theory import kv_window, pade, phases, rope

GIB = 2**30
ACTIVATION_FRACTION = 0.10  # default activation allowance, as a share of GPU memory
SYMBOLS = {"ok": "✅", "warn": "⚠", "fail": "❌"}


@dataclass(frozen=True)
class Verdict:
    """One judgement of the card: ``status`` is ``'ok'`` (✅), ``'warn'`` (⚠) or ``'fail'`` (❌)."""

    name: str
    status: str
    reason: str

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.status]

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "symbol": self.symbol, "reason": self.reason}


@dataclass(frozen=True)
class ConfigCard:
    """A model's card at one context: sections of facts and predictions, and the verdicts.

    Attributes
    ----------
    source : str
        Where the config came from.
    architecture : dict
        Shapes, attention type, layer kinds, positions.
    rope : dict or None
        RoPE settings and scales (tokens); None without RoPE.
    prediction : dict or None
        γ_Padé, d_horizon, θ_eff^Padé, predicted phase, regime and D_f at T; None without RoPE.
    memory : dict
        Parameters, weight / KV / total bytes, the activation allowance (GiB), the fit and the largest
        context that fits; ``kv_bytes_per_token`` is what one more token costs while no window is full.
    verdicts : tuple of Verdict
    """

    source: str
    architecture: dict[str, Any]
    rope: dict[str, Any] | None
    prediction: dict[str, Any] | None
    memory: dict[str, Any]
    verdicts: tuple[Verdict, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "architecture": self.architecture, "rope": self.rope,
                "prediction": self.prediction, "memory": self.memory,
                "verdicts": [v.to_dict() for v in self.verdicts]}


def _arch_section(arch: Architecture) -> dict[str, Any]:
    return {
        "model_type": arch.model_type, "architectures": arch.config.get("architectures"),
        "known_to_transformers": arch.known_to_transformers, "n_layers": arch.n_layers,
        "hidden_size": arch.hidden_size, "n_heads": arch.n_heads, "n_kv_heads": arch.n_kv_heads,
        "head_dim": arch.head_dim, "intermediate_size": arch.intermediate_size, "vocab_size": arch.vocab_size,
        "max_positions": arch.max_positions, "tie_embeddings": arch.tie_embeddings, "attention": arch.attention,
        "layer_kinds": dict(Counter(arch.layer_kinds)), "sliding_window": arch.sliding_window,
        "positions": arch.positions, "mla": arch.mla is not None,
    }


def _rope_section(arch: Architecture, context: int) -> tuple[dict[str, Any], list[Verdict]]:
    spec = arch.main_rope()
    freqs = rope.inv_freq(spec, seq_len=context)  # (rotary_dim/2,)
    lam = rope.wavelengths(freqs)
    n_act = rope.n_active(context, freqs)
    geo = rope.effective_geometry(spec, freqs)  # the closed forms below use θ_eff at distances T/s
    theta, s = geo.theta, geo.position_scale
    section = {
        "theta": spec.theta, "rope_type": spec.rope_type, "factor": spec.factor,
        "original_max_position_embeddings": spec.parameters.get("original_max_position_embeddings"),
        "theta_effective": theta, "position_scale": s, "geometry_defined": geo.defined, "geometry_note": geo.note,
        "rotary_dim": spec.rotary_dim, "n_pairs": spec.n_pairs, "t_cross": s * rope.t_cross(theta),
        "t_max": s * rope.t_max(theta), "wavelength_min": float(lam.min()), "wavelength_max": float(lam.max()),
        "n_active_at_T": n_act, "n_active_closed_form_at_T": rope.n_active_closed_form(context / s, theta,
                                                                                         spec.rotary_dim),
        "critical_dim_at_T": rope.critical_dim(context / s, theta, spec.rotary_dim),
        "theta_by_layer_type": {k: v.theta for k, v in arch.rope.items()} if len(arch.rope) > 1 else None,
    }
    aliased = f"{spec.n_pairs - n_act}/{spec.n_pairs} RoPE pairs have completed a turn by T"
    if context <= section["t_cross"]:
        status, reason = "ok", f"T ≤ T_cross = 2π√θ = {section['t_cross']:,.0f}; {aliased}"
    elif context < section["wavelength_max"]:
        status, reason = "warn", (f"T > T_cross = 2π√θ = {section['t_cross']:,.0f}: {aliased}; the framework "
                                  "expects degradation to start (the slowest pair still resolves T)")
    else:
        status, reason = "fail", (f"T ≥ the longest real wavelength {section['wavelength_max']:,.0f} "
                                  f"(T_max = 2πθ = {section['t_max']:,.0f}): every pair has aliased")
    verdicts = [Verdict("aliasing", status, reason)]
    if not geo.defined:
        verdicts.append(Verdict("geometry", "warn", geo.note))
    orig = section["original_max_position_embeddings"]
    if spec.rope_type != "default" and orig and context > orig and context <= (arch.max_positions or context):
        factor = "" if spec.factor is None else f" ×{spec.factor:g}"
        verdicts.append(Verdict("scaling", "warn", f"T is beyond the pretraining length {orig:,}: it relies on "
                                f"{spec.rope_type} scaling{factor}"))
    return section, verdicts


def _prediction(arch: Architecture, context: int, eps: float) -> dict[str, Any]:
    spec = arch.main_rope()
    geo = rope.effective_geometry(spec, rope.inv_freq(spec, seq_len=context))
    theta, s = geo.theta, geo.position_scale  # linear scaling by s: exactly T → T/s (lengths back × s)
    gamma = pade.gamma_pade(theta, context / s)
    attending = [k for k in arch.layer_kinds if k != "none"]
    windowed = arch.sliding_window is not None and arch.sliding_window < context
    if windowed and all(k == "sliding" for k in attending):
        regime = "SWA"
    elif windowed:
        regime = "Normal (full layers), SWA (sliding layers)"
    else:
        regime = "Normal"
    return {
        "context": context, "gamma_pade": gamma, "d_horizon": s * pade.d_horizon(theta, gamma),
        "theta_eff_pade": pade.theta_eff_pade(theta, context / s), "phase": phases.phase(gamma),
        "geometry_defined": geo.defined,
        "regime": regime, "regime_note": "predicted from the config; η needs a measured γ (gammalens measure)",
        "eps": eps, **_d_f(gamma, context, eps, arch),
    }


def _d_f(gamma: float, context: int, eps: float, arch: Architecture) -> dict[str, Any]:
    """D_f at γ_Padé over the distances of a context of T tokens (:func:`kv_window.d_f_at_context`), capped by
    the sliding window where every attending layer slides (a window cannot keep more than it sees)."""
    d = kv_window.d_f_at_context(gamma, context, eps)
    window = arch.sliding_window
    attending = [k for k in arch.layer_kinds if k != "none"]
    if window is not None and d > window and attending and all(k == "sliding" for k in attending):
        return {"D_f": window, "D_f_uncapped": d, "D_f_capped_by_window": True}
    return {"D_f": d, "D_f_uncapped": d, "D_f_capped_by_window": False}


def _largest_context(arch: Architecture, weights: int, allowance: float, gpu: float, kv_bytes: float,
                     batch: int, cap: int) -> tuple[int, str]:
    def fits(t: int) -> bool:
        return weights + kv_cache.kv_cache_bytes(arch, t, batch=batch, element_bytes=kv_bytes) + allowance <= gpu

    if not fits(1):
        return 0, "memory (nothing fits)"
    if fits(cap):
        return cap, "max_position_embeddings" if cap == arch.max_positions else "the requested context"
    lo, hi = 1, cap  # fits(lo), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo, "GPU memory"


def _memory(arch: Architecture, context: int, *, weight_dtype: str, kv_dtype: str, batch: int,
            gpu_mem_gib: float, activation_gib: float) -> tuple[dict[str, Any], Verdict]:
    w_bytes, kv_bytes = kv_cache.dtype_bytes(weight_dtype), kv_cache.dtype_bytes(kv_dtype)
    kv = kv_cache.kv_cache_bytes(arch, context, batch=batch, element_bytes=kv_bytes)
    gpu, allowance = gpu_mem_gib * GIB, activation_gib * GIB
    section: dict[str, Any] = {
        "weight_dtype": weight_dtype, "kv_dtype": kv_dtype, "batch": batch, "gpu_mem_gib": gpu_mem_gib,
        "activation_gib": activation_gib, "kv_bytes": kv,
        "kv_bytes_per_token": round(kv_cache.bytes_per_token(arch, kv_bytes)
                                    * sum(k != "none" for k in arch.layer_kinds)),
        "params": None, "params_method": None, "weight_bytes": None, "total_bytes": None, "fits": None,
        "largest_context": None, "largest_context_limit": None,
    }
    try:
        count = parameter_count(arch)
    except TheoryError as err:
        return section, Verdict("memory", "warn", f"{err}; KV cache alone is {kv / GIB:.2f} GiB")
    weights = round(count.total * w_bytes)
    total = weights + kv + allowance
    largest, limit = _largest_context(arch, weights, allowance, gpu, kv_bytes, batch,
                                      max(arch.max_positions or context, 1))
    section |= {"params": count.total, "params_method": count.method, "weight_bytes": weights,
                "total_bytes": int(total), "fits": total <= gpu, "largest_context": largest,
                "largest_context_limit": limit}
    sizes = (f"weights {weights / GIB:.2f} + KV {kv / GIB:.2f} (T={context:,}, batch {batch}) + activations "
             f"{activation_gib:.2f} = {total / GIB:.2f} GiB")
    if weights > gpu:
        return section, Verdict("memory", "fail", f"weights alone ({weights / GIB:.2f} GiB) exceed "
                                f"{gpu_mem_gib:g} GiB")
    if weights + kv > gpu:
        return section, Verdict("memory", "fail", f"{sizes} > {gpu_mem_gib:g} GiB; the largest context that "
                                f"fits is {largest:,} tokens")
    if total > gpu:
        return section, Verdict("memory", "warn", f"{sizes} > {gpu_mem_gib:g} GiB: fits only without the "
                                "activation allowance")
    return section, Verdict("memory", "ok", f"{sizes} ≤ {gpu_mem_gib:g} GiB; largest context that fits: "
                            f"{largest:,} (limited by {limit})")


def _structure_verdicts(arch: Architecture, context: int) -> list[Verdict]:
    kinds = Counter(arch.layer_kinds)
    n_attn = arch.n_layers - kinds["none"]
    if arch.attention == "none":
        out = [Verdict("attention", "fail", f"no softmax attention ({arch.model_type}): γ, γ_Padé and D_f do "
                       "not apply, and no KV cache grows with T")]
    elif kinds["none"]:
        out = [Verdict("attention", "warn", f"hybrid: {n_attn}/{arch.n_layers} layers use softmax attention; "
                       "γ and D_f apply to those only")]
    else:
        out = [Verdict("attention", "ok", f"softmax attention in all {arch.n_layers} layers ({arch.attention})")]
    if kinds["sliding"] and arch.sliding_window is not None:
        if arch.sliding_window < context:
            out.append(Verdict("sliding window", "warn", f"{kinds['sliding']}/{arch.n_layers} layers see only "
                               f"the last {arch.sliding_window:,} tokens: beyond that they attend to nothing"))
        else:
            out.append(Verdict("sliding window", "ok", f"window {arch.sliding_window:,} ≥ T: no effect here"))
    if arch.positions == "rope":
        out.append(Verdict("positions", "ok", f"RoPE (θ = {arch.rope_theta:g}): γ_Padé applies"))
    elif arch.positions != "none":
        out.append(Verdict("positions", "warn", f"{arch.positions} positions: γ_Padé does not apply (it needs "
                           "RoPE)"))
    if arch.max_positions is None:
        out.append(Verdict("context", "warn", "the config sets no max_position_embeddings: trained range unknown"))
    elif context <= arch.max_positions:
        out.append(Verdict("context", "ok", f"T = {context:,} ≤ max_position_embeddings = {arch.max_positions:,}"))
    elif arch.positions == "learned":
        out.append(Verdict("context", "fail", f"T = {context:,} exceeds the {arch.max_positions:,} learned "
                           "position rows: the model cannot run there"))
    elif arch.positions == "rope" and arch.main_rope().rope_type == "dynamic":
        out.append(Verdict("context", "warn", f"T = {context:,} > max_position_embeddings = "
                           f"{arch.max_positions:,}: dynamic NTK rescales θ there"))
    elif arch.positions != "none":
        out.append(Verdict("context", "fail", f"T = {context:,} > max_position_embeddings = "
                           f"{arch.max_positions:,}: beyond the trained range (extrapolation)"))
    return out


def build_card(source: str | Path, *, context: int | None = None, dtype: str | None = None,
               kv_dtype: str | None = None, batch: int = 1, gpu_mem_gib: float = 80.0,
               activation_gib: float | None = None, eps: float = 0.05) -> ConfigCard:
    """The config card of a model at context T.

    Parameters
    ----------
    source : str or Path
        ``config.json``, a directory holding one, or a hub id (needs network).
    context : int, optional
        T (tokens); default the config's ``max_position_embeddings``.
    dtype, kv_dtype : str, optional
        Weight and KV-cache dtypes (``bf16``, ``fp16``, ``fp32``, ``fp8``, ``int8``, ``int4``); default
        the config's ``torch_dtype`` (else bf16), and the weight dtype for the cache.
    batch : int
        Sequences held in the KV cache at once.
    gpu_mem_gib, activation_gib : float
        GPU memory and the activation allowance (GiB); the allowance defaults to 10% of the GPU.
    eps : float
        Mass fraction outside the predicted KV window D_f.

    Examples
    --------
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "config.json"
    >>> _ = path.write_text(json.dumps({"model_type": "mistral", "num_hidden_layers": 32, "hidden_size": 4096,
    ...     "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 32000,
    ...     "max_position_embeddings": 32768, "sliding_window": 4096, "rope_theta": 10000.0}))
    >>> card = build_card(path, context=32768, gpu_mem_gib=24)
    >>> card.memory["kv_bytes"] / 2**30, card.prediction["regime"], [v.symbol for v in card.verdicts][:2]
    (0.5, 'SWA', ['✅', '⚠'])
    """
    raw = load_config(source)
    arch = architecture(raw)
    if context is None:
        if arch.max_positions is None:
            raise TheoryError("the config sets no max_position_embeddings; pass --context T")
        context = arch.max_positions
    if not (isinstance(context, int) and context >= 1):
        raise TheoryError(f"the context T must be at least 1 token (got {context})")
    if not (gpu_mem_gib > 0 and math.isfinite(gpu_mem_gib)):
        raise TheoryError(f"--gpu-mem must be a positive, finite number of GiB (got {gpu_mem_gib})")
    eps = kv_window.check_eps(eps)
    declared = str(raw.get("torch_dtype") or raw.get("dtype") or "").lower().removeprefix("torch.")
    weight_dtype = dtype or (declared if declared in kv_cache.DTYPE_BYTES else "bf16")  # e.g. "auto" → bf16
    activation_gib = ACTIVATION_FRACTION * gpu_mem_gib if activation_gib is None else float(activation_gib)
    if not (0 <= activation_gib < gpu_mem_gib):
        raise TheoryError(f"the activation allowance must be ≥ 0 GiB and below --gpu-mem {gpu_mem_gib:g} GiB "
                          f"(got {activation_gib})")
    verdicts = _structure_verdicts(arch, context)
    rope_section = prediction = None
    if arch.positions == "rope" and arch.attention != "none":
        rope_section, rope_verdicts = _rope_section(arch, context)
        verdicts += rope_verdicts
        prediction = _prediction(arch, context, eps)
    memory, memory_verdict = _memory(arch, context, weight_dtype=weight_dtype, kv_dtype=kv_dtype or weight_dtype,
                                     batch=batch, gpu_mem_gib=float(gpu_mem_gib), activation_gib=activation_gib)
    verdicts.append(memory_verdict)
    return ConfigCard(source=str(source), architecture=_arch_section(arch), rope=rope_section,
                      prediction=prediction, memory=memory, verdicts=tuple(verdicts))


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else ("yes" if value else "no")
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def _gib(n: int | None) -> str:
    return "—" if n is None else f"{n / GIB:,.2f} GiB"


def _negative_pade(gamma: float) -> str:
    """What a negative γ_Padé means (T > √2·θ); its phase label alone (A: looks far) does not say."""
    if not gamma < 0:
        return ""
    return ("; γ_Padé < 0 is outside the power-law regime: the Padé approximation predicts attention that grows "
            "with distance, i.e. T is beyond the RoPE horizon (T > √2·θ)")


def render(card: ConfigCard, console: Any = None) -> None:
    """Print the card as rich tables: facts and predictions, then the verdicts."""
    from rich.table import Table


    console = console or terminal.console()
    a, r, p, m = card.architecture, card.rope, card.prediction, card.memory
    facts = Table(title=f"gammalens card · {card.source}", show_header=False, title_justify="left")
    facts.add_column(style="bold")
    facts.add_column()
    rows = [
        ("model", " ".join([a["model_type"], *(a["architectures"] or [])])),
        ("layers · hidden · vocab", f"{a['n_layers']} · {a['hidden_size']:,} · {a['vocab_size']:,}"),
        ("heads · KV heads · head dim", f"{_fmt(a['n_heads'])} · {_fmt(a['n_kv_heads'])} · {_fmt(a['head_dim'])}"),
        ("attention", f"{a['attention']} ({_fmt(a['layer_kinds'])}); window {_fmt(a['sliding_window'])}"),
        ("positions · max", f"{a['positions']} · {_fmt(a['max_positions'])}"),
    ]
    for name, value in rows:
        facts.add_row(name, value)
    if r is not None:
        facts.add_section()
        scaling = "" if r["rope_type"] == "default" else (
            f" ×{_fmt(r['factor'])} from {_fmt(r['original_max_position_embeddings'])}")
        facts.add_row("RoPE θ · type", f"{r['theta']:,g} · {r['rope_type']}{scaling}")
        if r["rope_type"] != "default":
            facts.add_row("geometry of the closed forms", r["geometry_note"])
        facts.add_row("rotary dims · pairs", f"{r['rotary_dim']} · {r['n_pairs']}")
        label = "T_cross = 2π√θ · T_max = 2πθ" if r["position_scale"] == 1 else "T_cross = 2πs√θ · T_max = 2πsθ"
        facts.add_row(label, f"{_fmt(r['t_cross'])} · {_fmt(r['t_max'])} tokens")
        facts.add_row("wavelengths (real)", f"{_fmt(r['wavelength_min'])} … {_fmt(r['wavelength_max'])} tokens")
        facts.add_row("active pairs at T (exact · closed form)",
                      f"{r['n_active_at_T']} · {r['n_active_closed_form_at_T']:.1f}; critical dim {r['critical_dim_at_T']}")
    if p is None and a["attention"] != "none":
        facts.add_section()
        facts.add_row("γ_Padé", f"does not apply: {a['positions']} positions, not RoPE")
    if p is not None:
        facts.add_section()
        facts.add_row("γ_Padé at T", f"{p['gamma_pade']:.4f} (phase {p['phase']}) at T = {p['context']:,}"
                      + _negative_pade(p["gamma_pade"]))
        facts.add_row("d_horizon · θ_eff^Padé", f"{_fmt(p['d_horizon'])} tokens · {_fmt(p['theta_eff_pade'])}")
        facts.add_row("regime (predicted)", p["regime"])
        capped = f", capped by the sliding window (uncapped {p['D_f_uncapped']:,})" if p["D_f_capped_by_window"] else ""
        facts.add_row(f"D_f at γ_Padé, ε = {p['eps']:g}", f"{p['D_f']:,} tokens (provisional{capped})")
    facts.add_section()
    facts.add_row("parameters", f"{_fmt(m['params'])} ({_fmt(m['params_method'])})")
    facts.add_row("weights · KV cache", f"{_gib(m['weight_bytes'])} ({m['weight_dtype']}) · {_gib(m['kv_bytes'])} "
                  f"({m['kv_dtype']}, batch {m['batch']})")
    facts.add_row("activation allowance · GPU", f"{m['activation_gib']:.2f} GiB · {m['gpu_mem_gib']:g} GiB")
    facts.add_row("largest context that fits", f"{_fmt(m['largest_context'])} (limited by {_fmt(m['largest_context_limit'])})")
    console.print(facts)
    verdicts = Table(show_header=True, header_style="bold")
    verdicts.add_column("")
    verdicts.add_column("check")
    verdicts.add_column("reason")
    for v in card.verdicts:
        verdicts.add_row(v.symbol, v.name, v.reason)
    console.print(verdicts)
