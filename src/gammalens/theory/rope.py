"""RoPE geometry: frequencies, wavelengths, aliasing scales (glossary: RoPE, Aliasing; Ch. 8, 14).

RoPE rotates pair i of a head's rotated dimensions by the angle ω_i·d for a query–key distance d, with
ω_i = θ^(−2i/d_rot) in the unscaled ("default") form. Pair i completes a full turn, and can no longer
tell distances apart, at its wavelength λ_i = 2π/ω_i = 2π·θ^(2i/d_rot).

Counting convention used throughout: a pair is **active** at distance d when it has not completed a
turn yet, i.e. when λ_i > d strictly. The closed form n_active(d) = (d_rot/2)(1 − log_θ(d/2π)), clipped
to [0, d_rot/2], is the continuous version of that count for unscaled RoPE; :func:`n_active` counts it
exactly on the model's real frequencies (any rope type, any scaling).

Scales: T_cross = 2π√θ (half of the pairs have aliased: degradation starts), T_max = 2πθ (the slowest
unscaled pair has aliased: RoPE runs out), and the critical dimension 2⌈(d_rot/2)·log_θ(T/2π)⌉, the
number of rotated dimensions whose pairs have aliased within a context T.

Real frequencies for every transformers rope type (default, linear, dynamic, yarn, llama3, longrope)
come from transformers' own ``ROPE_INIT_FUNCTIONS`` (torch is imported lazily, only for scaled types),
or straight from a loaded model's ``inv_freq`` buffers with :func:`inv_freqs_from_model`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from gammalens.errors import TheoryError

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3", "longrope")


@dataclass(frozen=True)
class RopeSpec:
    """The RoPE settings of one attention layer type, as transformers reads them from a config.

    Attributes
    ----------
    theta : float
        Base θ (``rope_theta``), dimensionless.
    head_dim : int
        Dimensions per attention head.
    rotary_dim : int
        Rotated dimensions per head, ``int(head_dim × partial_rotary_factor)`` (transformers' rule);
        ``rotary_dim / 2`` pairs.
    rope_type : str
        One of :data:`ROPE_TYPES`.
    parameters : dict
        The full ``rope_parameters`` dict (``factor``, ``original_max_position_embeddings``, ...).
    max_position_embeddings : int or None
        The config's maximum positions (tokens); needed by dynamic, yarn and longrope.
    """

    theta: float
    head_dim: int
    rotary_dim: int
    rope_type: str = "default"
    parameters: dict[str, Any] = field(default_factory=dict)
    max_position_embeddings: int | None = None

    @property
    def n_pairs(self) -> int:
        """Number of rotated pairs, ``rotary_dim // 2``."""
        return self.rotary_dim // 2

    @property
    def factor(self) -> float | None:
        """The scaling factor of scaled rope types (``None`` for default RoPE).

        yarn and longrope configs may omit it; transformers then uses max_position_embeddings divided by
        original_max_position_embeddings, and so does this property.
        """
        value = self.parameters.get("factor")
        original = self.parameters.get("original_max_position_embeddings")
        if value is None and self.rope_type in ("yarn", "longrope") and original and self.max_position_embeddings:
            value = self.max_position_embeddings / original
        return None if value is None else float(value)


def _first(mapping: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if mapping.get(key) is not None:
            return mapping[key]
    return None


def rope_specs(config: Mapping[str, Any] | Any) -> dict[str, RopeSpec]:
    """The RoPE spec of each attention layer type of a model; ``{}`` when the model does not use RoPE.

    Parameters
    ----------
    config : dict or transformers.PretrainedConfig
        A ``config.json`` as a dict (old ``rope_scaling``/``rope_theta`` and new ``rope_parameters``
        layouts, ``rotary_pct``/``partial_rotary_factor``/``rotary_dim`` all understood), or a loaded
        transformers config (its standardized ``rope_parameters`` are used).

    Returns
    -------
    dict[str, RopeSpec]
        Keyed by layer type (``'full_attention'``, ``'sliding_attention'``) when the config sets RoPE per
        layer type, else by ``'all'``.

    Examples
    --------
    >>> rope_specs({"rope_theta": 5e5, "hidden_size": 4096, "num_attention_heads": 32})["all"].rotary_dim
    128
    """
    raw: Mapping[str, Any] = config if isinstance(config, Mapping) else config.to_dict()
    params = _first(raw, "rope_parameters", "rope_scaling")
    params = dict(params) if isinstance(params, Mapping) else {}
    theta = _first(params, "rope_theta")
    if theta is None:
        theta = _first(raw, "rope_theta", "rotary_emb_base", "rotary_base", "rope_embedding_base")
    # per-layer-type RoPE: nested dicts; transformers may leave flat leftovers beside them, which are ignored
    per_type = any(isinstance(v, Mapping) for v in params.values())
    if not (params or theta is not None or _first(raw, "rotary_pct", "rotary_dim") is not None):
        return {}
    n_heads = _first(raw, "num_attention_heads", "n_head", "num_heads")
    head_dim = _first(raw, "head_dim")
    if head_dim is None:
        hidden = _first(raw, "hidden_size", "n_embd", "d_model")
        if hidden is None or not n_heads:
            raise TheoryError("the config sets RoPE but not head_dim nor hidden_size and num_attention_heads; "
                              "add them to config.json")
        head_dim = int(hidden) // int(n_heads)
    max_pos = _first(raw, "max_position_embeddings", "n_positions", "max_sequence_length")
    groups = {k: dict(v) for k, v in params.items() if isinstance(v, Mapping)} if per_type else {"all": params}
    specs = {}
    for layer_type, group in groups.items():
        base = group.get("rope_theta", theta)
        if base is None:
            raise TheoryError("the config uses RoPE but sets no rope_theta; add 'rope_theta' to config.json")
        partial = _first(group, "partial_rotary_factor")
        if partial is None:
            partial = _first(raw, "partial_rotary_factor", "rotary_pct")
        rotary_dim = int(raw["rotary_dim"]) if raw.get("rotary_dim") else int(int(head_dim) * float(partial or 1.0))
        rope_type = str(group.get("rope_type", group.get("type", "default")))
        if rope_type not in ROPE_TYPES:
            raise TheoryError(f"unknown rope_type {rope_type!r}; gammalens knows {', '.join(ROPE_TYPES)}")
        group.setdefault("rope_theta", float(base))
        group["rope_type"] = rope_type
        if rope_type in ("yarn", "longrope", "llama3"):
            group.setdefault("original_max_position_embeddings",
                             raw.get("original_max_position_embeddings") or max_pos)
        specs[layer_type] = RopeSpec(theta=float(base), head_dim=int(head_dim), rotary_dim=rotary_dim,
                                     rope_type=rope_type, parameters=group,
                                     max_position_embeddings=None if max_pos is None else int(max_pos))
    return specs


def inv_freq_default(theta: float, rotary_dim: int) -> np.ndarray:
    """Unscaled RoPE frequencies ω_i = θ^(−2i/d_rot), i = 0..d_rot/2−1 (radians per token), float64.

    >>> inv_freq_default(10000.0, 4)
    array([1.  , 0.01])
    """
    if theta <= 1.0 or rotary_dim < 2:
        raise TheoryError(f"RoPE needs θ > 1 and at least 2 rotated dims (got θ={theta}, d_rot={rotary_dim})")
    return theta ** (-np.arange(0, rotary_dim, 2, dtype=np.float64) / rotary_dim)  # (d_rot/2,)


def inv_freq(spec: RopeSpec, seq_len: int | None = None) -> np.ndarray:
    """The real frequencies ω_i (radians per token) of a spec, as transformers computes them.

    Scaled types call transformers' own ``ROPE_INIT_FUNCTIONS[rope_type]`` (float32, like the model's
    buffer); ``seq_len`` matters for ``dynamic`` (rescales θ beyond the maximum positions) and
    ``longrope`` (long factors beyond the original length).

    Returns
    -------
    np.ndarray, shape (rotary_dim/2,)

    Examples
    --------
    >>> spec = RopeSpec(theta=10000.0, head_dim=4, rotary_dim=4, rope_type="linear", parameters={"factor": 2.0})
    >>> inv_freq(spec).round(4)
    array([0.5  , 0.005])
    """
    if spec.rope_type == "default":
        return inv_freq_default(spec.theta, spec.rotary_dim)
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    # transformers' init functions read these attributes only; a namespace avoids picking a model class.
    # head_dim = rotary_dim with factor 1 gives exactly int(head_dim × partial) rotated dims, no rounding.
    shim = SimpleNamespace(
        rope_parameters=dict(spec.parameters) | {"rope_theta": spec.theta, "partial_rotary_factor": 1.0},
        head_dim=spec.rotary_dim, hidden_size=spec.rotary_dim, num_attention_heads=1,
        max_position_embeddings=spec.max_position_embeddings, standardize_rope_params=lambda: None,
    )
    try:
        freqs, _ = ROPE_INIT_FUNCTIONS[spec.rope_type](shim, "cpu", seq_len=seq_len)
    except (KeyError, TypeError) as err:
        raise TheoryError(f"rope_type {spec.rope_type!r} needs the config field {err}; add it to rope_scaling") from None
    return freqs.double().numpy()


def inv_freqs_from_model(model: Any) -> dict[str, np.ndarray]:
    """A loaded model's real RoPE frequency buffers, keyed by buffer name (``...rotary_emb.inv_freq``).

    Empty for models without RoPE. Hybrid models register one buffer per layer type.
    """
    return {name: buf.detach().double().cpu().numpy() for name, buf in model.named_buffers()
            if name.endswith("inv_freq") and "original" not in name}


def wavelengths(freqs: np.ndarray) -> np.ndarray:
    """λ_i = 2π/ω_i (tokens): the distance at which pair i completes a full turn. Shape as ``freqs``.

    >>> wavelengths(np.array([1.0, 0.01])).round(2)
    array([  6.28, 628.32])
    """
    return 2.0 * math.pi / np.asarray(freqs, dtype=np.float64)


def n_active(distance: float, freqs: np.ndarray) -> int:
    """Exact number of active pairs at a distance: pairs whose wavelength exceeds it (λ_i > d).

    >>> n_active(100.0, inv_freq_default(10000.0, 128))
    44
    """
    return int(np.count_nonzero(wavelengths(freqs) > distance))


def n_active_closed_form(distance: float, theta: float, rotary_dim: int) -> float:
    """n_active(d) = (d_rot/2)·(1 − log_θ(d/2π)), clipped to [0, d_rot/2] (pairs; unscaled RoPE).

    >>> round(n_active_closed_form(2 * math.pi * 100.0, 10000.0, 128), 6)
    32.0
    """
    if distance <= 0:
        return rotary_dim / 2
    value = (rotary_dim / 2) * (1.0 - math.log(distance / (2 * math.pi)) / math.log(theta))
    return min(max(value, 0.0), rotary_dim / 2)


def t_cross(theta: float) -> float:
    """T_cross = 2π√θ (tokens): half of the unscaled pairs have aliased, degradation starts.

    >>> round(t_cross(10000.0), 2)
    628.32
    """
    return 2 * math.pi * math.sqrt(theta)


def t_max(theta: float) -> float:
    """T_max = 2πθ (tokens): the slowest unscaled pair has aliased, RoPE runs out.

    >>> round(t_max(10000.0))
    62832
    """
    return 2 * math.pi * theta


def critical_dim(context: float, theta: float, rotary_dim: int) -> int:
    """2⌈(d_rot/2)·log_θ(T/2π)⌉, clipped to [0, d_rot]: rotated dims whose pairs alias within T.

    >>> critical_dim(4096, 10000.0, 128)
    92
    """
    if context < 1:
        raise TheoryError(f"context T must be at least 1 token (got {context})")
    x = (rotary_dim / 2) * math.log(context / (2 * math.pi)) / math.log(theta)
    return int(min(max(2 * math.ceil(x), 0), rotary_dim))


@dataclass(frozen=True)
class Geometry:
    """The RoPE geometry the closed forms (γ_Padé, d_horizon, θ_eff, T_cross, T_max, n_active) should use.

    Attributes
    ----------
    theta : float
        Effective base θ of the real frequencies (dimensionless).
    position_scale : float
        s such that the model rotates position p as an unscaled RoPE of base ``theta`` rotates p/s: the closed
        forms apply at distance d/s, and lengths they return (T_cross, T_max, d_horizon) are s times longer.
    defined : bool
        False when the frequencies are not a geometric series (llama3, YaRN, longrope scale by frequency band):
        then ``theta`` is the raw rope_theta, ``position_scale`` 1, and the closed forms are only indicative.
    note : str
        How the geometry was obtained, for the card.
    """

    theta: float
    position_scale: float
    defined: bool
    note: str


def effective_geometry(spec: RopeSpec, freqs: np.ndarray) -> Geometry:
    """The effective (θ, s) of ``freqs`` (rotary_dim/2,), the real frequencies of ``spec`` at the context.

    Unscaled RoPE is ω_i = θ^(−2i/d); ``linear`` scaling by s divides every ω_i by s (exactly T → T/s);
    ``dynamic`` NTK replaces θ above the original context. Both stay geometric, ω_i = θ'^(−2i/d)/s, so θ' and
    s are read off the real frequencies; any other series (scaling by frequency band) has no single θ.

    >>> spec = RopeSpec(theta=10000.0, head_dim=8, rotary_dim=8, rope_type="linear", parameters={"factor": 4.0})
    >>> g = effective_geometry(spec, inv_freq(spec))
    >>> round(g.theta), g.position_scale, g.defined
    (10000, 4.0, True)
    """
    freqs = np.asarray(freqs, dtype=np.float64)
    if spec.rope_type == "default":
        return Geometry(spec.theta, 1.0, True, "unscaled RoPE")
    n = len(freqs)
    ratios = freqs[1:] / freqs[:-1]
    if n >= 2 and np.allclose(ratios, ratios[0], rtol=1e-4) and freqs[0] > 0:
        theta = float(np.exp(-np.log(ratios).mean() * n))   # ω_{i+1}/ω_i = θ^(−2/d), d = 2n
        scale = float(1.0 / freqs[0])
        if math.isclose(theta, spec.theta, rel_tol=1e-4):
            theta = spec.theta
        if math.isclose(scale, round(scale), rel_tol=1e-5):
            scale = float(round(scale))
        note = (f"{spec.rope_type} scaling: effective θ = {theta:,.6g}" + (f", positions / {scale:g}" if scale != 1 else ""))
        return Geometry(theta, scale, True, note)
    return Geometry(spec.theta, 1.0, False, f"{spec.rope_type} scaling changes frequencies by band: no single θ; "
                    "the closed forms use the raw rope_theta and are indicative only")
