"""Results of a sink measurement: one :class:`PassSinks` per forward pass, gathered in :class:`SinkResult`.

Stable dotted names key every per-head quantity (``layers.3.heads.5``), as in ``fits.csv``; the
columns added to ``fits.csv`` (and so to the atlas's ``fit_extras``) are listed in ``docs/sinks.md``.
Only NumPy is needed here, so the report can read ``sinks.json`` without torch.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gammalens.errors import GammalensError
from gammalens.runs.schema import SINKS_FILE, SINKS_FORMAT
from gammalens.sinks.correlation import Correlation
from gammalens.sinks.massive import MassiveActivations
from gammalens.sinks.token_kinds import KINDS, TokenNamer

# the file and its format tag are defined once, with the file's schema (gammalens.runs.schema)
FORMAT, SINK_FILE = SINKS_FORMAT, SINKS_FILE


def _num(x: Any) -> Any:
    """JSON-ready: NaN/inf → None, NumPy scalars → Python."""
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def _lists(a: np.ndarray) -> Any:
    if a.ndim == 0:
        return _num(a.item())
    return [_lists(v) for v in a]


def _array(v: Any, dtype: Any = float) -> np.ndarray:
    if dtype is float:
        return np.array(v, dtype=object).astype(float) if v is not None else np.array([])
    return np.array(v, dtype=dtype)


@dataclass(frozen=True)
class PassSinks:
    """Per-head sink measures and γ of one forward pass over the windows (L layers, H heads, K values of k).

    Attributes
    ----------
    label : str
        ``'baseline'``, ``'no_bos'`` (the BOS dropped), ``'with_bos'`` (a BOS prepended) or ``'ablated'``.
    context : int
        Tokens per window in this pass.
    prefix_len : int
        Special tokens before the content (1 for ``[CLS]``/``<s>``; 0 without BOS).
    ks : tuple of int
        The k of ``mass``.
    mass : np.ndarray
        (L, H, K) mean attention on the first k tokens per query q ≥ k (probability).
    first_key_share : np.ndarray
        (L, H) α_0: mean attention the first token receives from the queries that see it (probability).
    peak_key_share : np.ndarray
        (L, H) largest key share of a document, averaged over documents (probability).
    sink_kind : np.ndarray
        (L, H) str the most frequent kind of the documents' peak keys: ``bos``, ``first_content``,
        ``delimiter`` or ``other`` (:mod:`gammalens.sinks.token_kinds`).
    sink_kind_share : np.ndarray
        (L, H) fraction of documents whose peak key is of that kind.
    sink_position : np.ndarray
        (L, H) int64 the most frequent peak-key position among those documents (−1: none).
    sink_token : np.ndarray
        (L, H) str the most frequent peak-key token among those documents.
    gamma : np.ndarray
        (L, H) γ of each head (the sink keys are outside the fit).
    layer_gamma : np.ndarray
        (L,) γ of each layer, heads pooled.
    model_gamma : float
        γ of the model, all heads pooled.
    """

    label: str
    context: int
    prefix_len: int
    ks: tuple[int, ...]
    mass: np.ndarray
    first_key_share: np.ndarray
    peak_key_share: np.ndarray
    sink_position: np.ndarray
    sink_token: np.ndarray
    sink_kind: np.ndarray
    sink_kind_share: np.ndarray
    gamma: np.ndarray
    layer_gamma: np.ndarray
    model_gamma: float

    @property
    def n_layers(self) -> int:
        return int(self.mass.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.mass.shape[1])

    def mass_k(self, k: int) -> np.ndarray:
        """(L, H) mean attention on the first ``k`` tokens."""
        return self.mass[..., self.ks.index(k)]

    def sink_rate(self, eps: float) -> np.ndarray:
        """(L,) fraction of each layer's heads with α_0 > ``eps`` (Gu et al. 2024)."""
        return (self.first_key_share > eps).mean(-1)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "context": self.context, "prefix_len": self.prefix_len,
                               "ks": list(self.ks), "model_gamma": _num(self.model_gamma)}
        for name in ("mass", "first_key_share", "peak_key_share", "sink_position", "sink_kind_share", "gamma",
                     "layer_gamma"):
            out[name] = _lists(np.asarray(getattr(self, name)))
        out["sink_token"] = self.sink_token.tolist()
        out["sink_kind"] = self.sink_kind.tolist()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PassSinks:
        return cls(label=d["label"], context=int(d["context"]), prefix_len=int(d["prefix_len"]), ks=tuple(d["ks"]),
                   mass=_array(d["mass"]), first_key_share=_array(d["first_key_share"]),
                   peak_key_share=_array(d["peak_key_share"]), sink_position=_array(d["sink_position"], np.int64),
                   sink_token=np.array(d["sink_token"], dtype=object), sink_kind=np.array(d["sink_kind"], dtype=object),
                   sink_kind_share=_array(d["sink_kind_share"]), gamma=_array(d["gamma"]),
                   layer_gamma=_array(d["layer_gamma"]),
                   model_gamma=math.nan if d["model_gamma"] is None else float(d["model_gamma"]))


def summarise(label: str, measures: Any, fits: list[dict[str, Any]], input_ids: np.ndarray, namer: TokenNamer,
              prefix_len: int) -> PassSinks:
    """Condense a pass's :class:`~gammalens.sinks.measures.SinkMeasures` and fits into a :class:`PassSinks`.

    Parameters
    ----------
    label : str
        Name of the pass.
    measures : SinkMeasures
        The observer's exact sums.
    fits : list of dict
        The pass's ``fits.csv`` rows.
    input_ids : np.ndarray
        (N, n) the windows of the pass (to name the token at each document's peak key).
    namer : TokenNamer
        Decodes and classifies tokens.
    prefix_len : int
        Special tokens before the content in these windows.
    """
    N, L, H = measures.doc_peak_position.shape
    pos = np.zeros((L, H), dtype=np.int64)
    token = np.empty((L, H), dtype=object)
    kind = np.empty((L, H), dtype=object)
    share = np.zeros((L, H))
    for layer in range(L):
        for h in range(H):
            p = [int(x) for x in measures.doc_peak_position[:, layer, h] if x >= 0]
            if not p:
                pos[layer, h], token[layer, h], kind[layer, h], share[layer, h] = -1, "", "", math.nan
                continue
            docs = [d for d in range(N) if measures.doc_peak_position[d, layer, h] >= 0]
            ids = [int(input_ids[d, x]) for d, x in zip(docs, p, strict=True)]
            each = [namer.kind(x, t, prefix_len) for x, t in zip(p, ids, strict=True)]
            kinds = Counter(each)
            top = max(KINDS, key=lambda k: (kinds[k], -KINDS.index(k)))
            # the position and token most often at the peak among the documents of the winning kind
            pos[layer, h] = Counter(x for x, e in zip(p, each, strict=True) if e == top).most_common(1)[0][0]
            token[layer, h] = namer.text(Counter(t for t, e in zip(ids, each, strict=True) if e == top)
                                         .most_common(1)[0][0])
            kind[layer, h], share[layer, h] = top, kinds[top] / len(p)
    gamma = np.full((L, H), np.nan)
    layer_gamma = np.full(L, np.nan)
    model_gamma = math.nan
    for r in fits:
        if r["scope"] == "head":
            gamma[r["layer"], r["head"]] = r["gamma"]
        elif r["scope"] == "layer":
            layer_gamma[r["layer"]] = r["gamma"]
        else:
            model_gamma = float(r["gamma"])
    return PassSinks(label=label, context=int(input_ids.shape[1]), prefix_len=prefix_len, ks=measures.ks,
                     mass=measures.mass, first_key_share=measures.first_key_share,
                     peak_key_share=measures.peak_key_share, sink_position=pos, sink_token=token, sink_kind=kind,
                     sink_kind_share=share, gamma=gamma, layer_gamma=layer_gamma, model_gamma=model_gamma)


@dataclass(frozen=True)
class SinkResult:
    """Sinks, massive activations and the causal test of one model.

    Attributes
    ----------
    model : str
        The model measured.
    settings : dict
        The sink settings (``ks``, ``eps``, ``massive_abs``, ``massive_ratio``, ``ablate``, ``bos_variant``)
        and the fit's ``sink_tokens``.
    baseline : PassSinks
        The windows as the tokenizer makes them.
    bos : PassSinks or None
        The same content with the BOS dropped (``label='no_bos'``) or, for a tokenizer that adds none,
        prepended (``'with_bos'``); None when the tokenizer has no BOS token or the variant was skipped.
    bos_note : str
        What was done about the BOS, in words.
    massive : MassiveActivations
        Massive activations of the baseline pass.
    ablated : PassSinks or None
        The baseline windows with the massive activations ablated where they arise (None: nothing to
        ablate, or no ablation asked for).
    ablated_count : list of int
        (L,) coordinates replaced per layer by the ablation, summed over documents.
    correlation : Correlation
        Sink mass (the fit's first-K mass) against γ over the baseline's heads.
    run_dir : Path or None
        The run directory, if one was written.
    measurement : MeasureResult or None
        The baseline measurement (fits with the sink columns, profile, manifest); not serialised.
    """

    model: str
    settings: dict[str, Any]
    baseline: PassSinks
    bos: PassSinks | None
    bos_note: str
    massive: MassiveActivations
    ablated: PassSinks | None
    ablated_count: list[int]
    correlation: Correlation
    run_dir: Path | None = None
    measurement: Any = field(default=None, repr=False, compare=False)

    @property
    def eps(self) -> float:
        return float(self.settings["eps"])

    @property
    def sink_k(self) -> int:
        """The fit's number of sink tokens: Δsink is the change of the mass on these."""
        return int(self.settings["sink_tokens"]) or self.baseline.ks[0]

    @property
    def sink_rate(self) -> float:
        """Fraction of all heads whose first-key share exceeds ε (Gu et al. 2024)."""
        return float((self.baseline.first_key_share > self.eps).mean())

    def head_columns(self) -> dict[str, np.ndarray]:
        """Per-head columns added to ``fits.csv``: name → (L, H) array."""
        b = self.baseline
        cols: dict[str, np.ndarray] = {f"sink_mass_k{k}": b.mass_k(k) for k in b.ks}
        cols |= {"first_key_share": b.first_key_share, "peak_key_share": b.peak_key_share,
                 "sink_position": b.sink_position, "sink_token": b.sink_token, "sink_kind": b.sink_kind,
                 "sink_kind_share": b.sink_kind_share}
        for p in (self.bos, self.ablated):
            if p is None:
                continue
            cols |= {f"sink_mass_k{k}_{p.label}": p.mass_k(k) for k in p.ks}
            cols |= {f"first_key_share_{p.label}": p.first_key_share, f"peak_key_share_{p.label}": p.peak_key_share,
                     f"sink_kind_{p.label}": p.sink_kind, f"gamma_{p.label}": p.gamma}
        if self.ablated is not None:
            cols["delta_sink_ablated"] = self.ablated.mass_k(self.sink_k) - b.mass_k(self.sink_k)
            cols["delta_gamma_ablated"] = self.ablated.gamma - b.gamma
        return cols

    def layer_columns(self) -> dict[str, np.ndarray]:
        """Per-layer columns (heads averaged; γ pooled as in ``fits.csv``; massive activations): name → (L,)."""
        b, m = self.baseline, self.massive
        cols = {f"sink_mass_k{k}": b.mass_k(k).mean(-1) for k in b.ks}
        cols |= {"first_key_share": b.first_key_share.mean(-1), "peak_key_share": b.peak_key_share.mean(-1),
                 "sink_rate": b.sink_rate(self.eps), "massive_count": m.count.astype(float),
                 "massive_max_abs": m.top_abs[:, 0], "hidden_median_abs": m.median_abs}
        for p in (self.bos, self.ablated):
            if p is None:
                continue
            cols |= {f"sink_mass_k{k}_{p.label}": p.mass_k(k).mean(-1) for k in p.ks}
            cols |= {f"sink_rate_{p.label}": p.sink_rate(self.eps), f"gamma_{p.label}": p.layer_gamma}
        if self.ablated is not None:
            cols["delta_sink_ablated"] = cols[f"sink_mass_k{self.sink_k}_ablated"] - cols[f"sink_mass_k{self.sink_k}"]
            cols["delta_gamma_ablated"] = self.ablated.layer_gamma - b.layer_gamma
            cols["ablated_count"] = np.asarray(self.ablated_count, dtype=float)
        return cols

    def model_columns(self) -> dict[str, Any]:
        """Model-level columns: heads averaged, the sink rate, where massive activations first appear."""
        b = self.baseline
        cols: dict[str, Any] = {f"sink_mass_k{k}": float(b.mass_k(k).mean()) for k in b.ks}
        cols |= {"first_key_share": float(b.first_key_share.mean()), "peak_key_share": float(b.peak_key_share.mean()),
                 "sink_rate": self.sink_rate, "massive_count": float(self.massive.count.sum()),
                 "massive_first_layer": self.massive.first_layer,
                 "sink_gamma_pearson": self.correlation.pearson, "sink_gamma_spearman": self.correlation.spearman}
        for p in (self.bos, self.ablated):
            if p is not None:
                cols[f"sink_rate_{p.label}"] = float((p.first_key_share > self.eps).mean())
                cols[f"gamma_{p.label}"] = p.model_gamma
        if self.ablated is not None:
            k = self.sink_k
            cols["delta_sink_ablated"] = float(self.ablated.mass_k(k).mean() - b.mass_k(k).mean())
            cols["delta_gamma_ablated"] = self.ablated.model_gamma - b.model_gamma
        return cols

    def annotate(self, fits: list[dict[str, Any]]) -> None:
        """Add the sink columns to ``fits`` rows in place (head, layer and model rows)."""
        heads, layers, model = self.head_columns(), self.layer_columns(), self.model_columns()
        for row in fits:
            if row["scope"] == "head":
                row.update({c: _num(v[row["layer"], row["head"]]) for c, v in heads.items()})
            elif row["scope"] == "layer":
                row.update({c: _num(v[row["layer"]]) for c, v in layers.items()})
            else:
                row.update({c: _num(v) for c, v in model.items()})

    def to_pandas(self) -> Any:
        """One row per head: ``name``, ``layer``, ``head``, ``gamma`` and every sink column of :meth:`head_columns`."""
        import pandas as pd

        L, H = self.baseline.n_layers, self.baseline.n_heads
        frame = {"name": [f"layers.{i}.heads.{h}" for i in range(L) for h in range(H)],
                 "layer": np.repeat(np.arange(L), H), "head": np.tile(np.arange(H), L),
                 "gamma": self.baseline.gamma.ravel()}
        frame |= {c: np.asarray(v).ravel() for c, v in self.head_columns().items()}
        return pd.DataFrame(frame)

    def layers(self) -> Any:
        """One row per layer: ``layer``, ``gamma`` (pooled) and every column of :meth:`layer_columns`."""
        import pandas as pd

        cols = {"layer": np.arange(self.baseline.n_layers), "gamma": self.baseline.layer_gamma}
        return pd.DataFrame(cols | self.layer_columns())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``sinks.json``); :meth:`from_dict` reads it back."""
        return {"format": FORMAT, "model": self.model, "settings": self.settings,
                "baseline": self.baseline.to_dict(), "bos": self.bos.to_dict() if self.bos else None,
                "bos_note": self.bos_note, "massive": self.massive.to_dict(),
                "ablated": self.ablated.to_dict() if self.ablated else None,
                "ablated_count": [int(c) for c in self.ablated_count], "correlation": self.correlation.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], run_dir: Path | None = None) -> SinkResult:
        return cls(model=d["model"], settings=dict(d["settings"]), baseline=PassSinks.from_dict(d["baseline"]),
                   bos=PassSinks.from_dict(d["bos"]) if d.get("bos") else None, bos_note=d["bos_note"],
                   massive=MassiveActivations.from_dict(d["massive"]),
                   ablated=PassSinks.from_dict(d["ablated"]) if d.get("ablated") else None,
                   ablated_count=list(d["ablated_count"]), correlation=Correlation.from_dict(d["correlation"]),
                   run_dir=run_dir)

    def __repr__(self) -> str:
        b, m = self.baseline, self.massive
        first = "none" if m.first_layer is None else f"from layer {m.first_layer}"
        abl = ""
        if self.ablated is not None:
            d = self.model_columns()
            abl = f", Δsink={d['delta_sink_ablated']:+.3f}, Δγ={d['delta_gamma_ablated']:+.3f}"
        return (f"SinkResult(model={self.model!r}, sink_mass_k{self.sink_k}={b.mass_k(self.sink_k).mean():.3f}, "
                f"sink_rate={self.sink_rate:.2f}, massive={first}{abl}, "
                f"run_dir={str(self.run_dir) if self.run_dir else None!r})")


def read_sinks(run_dir: Path | str, parsed: dict[str, Any] | None = None) -> SinkResult | None:
    """The :class:`SinkResult` stored in a run directory's ``sinks.json`` (None: the run has none).

    ``parsed``: the file's JSON when the caller has it already (``RunFiles.sinks``), so it is not read twice.
    """
    path = Path(run_dir) / SINK_FILE
    if parsed is None and not path.is_file():
        return None
    try:
        body = parsed if parsed is not None else json.loads(path.read_text(encoding="utf-8"))
        return SinkResult.from_dict(body, run_dir=Path(run_dir))
    except (ValueError, KeyError, TypeError) as err:
        raise GammalensError(f"{path} is not a readable sinks file ({err})") from None
