"""The run directory's format (docs/run_format.md), defined once.

The writer (:mod:`gammalens.runs.writer`), the reader (:mod:`gammalens.runs.reader`), ``verify``, the report,
the atlas and the test fixtures all take the format's version, file names, the typed ``fits.csv`` column
table and the ``profile.npz`` arrays from here; ``tests/test_run_format.py`` writes a run with the writer
and reads it back with the reader.

>>> FIT_COLUMNS["gamma"], FIT_COLUMNS["layer"]
('float', 'int')
>>> FORMAT
'gammalens.run/1'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FORMAT = "gammalens.run/1"  # the manifest's "format"; a reader refuses any other
MANIFEST, FITS, PROFILE = "manifest.json", "fits.csv", "profile.npz"  # the measured files (report.html is extra)

# fits.csv columns of format version 1, in file order, and how each is parsed (str, int or float; an empty
# cell is None). Columns beyond these (the theory columns, sink columns …) follow in first-seen order and are
# kept by the reader as extras.
FIT_COLUMNS: dict[str, str] = {
    "name": "str",                    # stable dotted name: layers.3.heads.5, layers.3, model
    "scope": "str",                   # head, layer or model
    "layer": "int",
    "head": "int",
    "gamma": "float",                 # γ of A(d) ∝ d^-γ (dimensionless)
    "gamma_ci_low": "float",          # 95% bootstrap CI over documents
    "gamma_ci_high": "float",
    "r2": "float",                    # R² of the log-log fit
    "gamma_mle": "float",
    "method": "str",
    "fit_d_min": "int",               # fit range, tokens
    "fit_d_max": "int",
    "phase": "str",                   # A, boundary, B or undetermined
    "sink_mass": "float",             # mean attention on the sink keys per query (probability)
    "preferred_model": "str",         # power_law, exponential or power_law_cutoff (AIC)
    "delta_aic_exponential": "float",
    "delta_aic_cutoff": "float",
    "r2_exponential": "float",
    "cutoff_lambda": "float",
    "n_docs": "int",
    # gammalens measure --retrieval (docs/retrieval.md); empty in other runs and on layer and model rows
    "echo": "float",                  # attention on the counterpart in the first copy (probability)
    "induction": "float",             # attention on the token after the counterpart (probability)
    "far_mass": "float",              # share of non-sink mass at distances > retrieval.far_distance
}
INT_COLUMNS = frozenset(c for c, kind in FIT_COLUMNS.items() if kind == "int")
REQUIRED_FIT_COLUMNS = ("name", "scope", "layer", "head", "gamma")
SCOPES = ("head", "layer", "model")


# --- what the reader checks: every field a command reads, as data -------------------------------------------
# gammalens.runs.reader checks a run directory against these tables once, when it is read (``read_run``; the
# light ``read_manifest`` / ``read_fits_csv`` that ``kv plan`` uses check the same tables), so that a wrongly
# typed or out-of-range value is a RunFormatError naming the file and the field — never a traceback later. A new
# field is one line here. Fields that are absent from a table are kept as they are, unchecked.

@dataclass(frozen=True)
class Field:
    """What one field of a JSON run file (``manifest.json``, ``sinks.json``) or one ``fits.csv`` column must hold.

    Attributes
    ----------
    kind : str
        ``'int'``, ``'float'`` (any JSON number), ``'str'``, ``'bool'``, ``'object'``, ``'list'``, ``'list[int]'``,
        ``'list[float]'``, ``'list[str]'``, ``'list[object]'``, ``'array'`` (nested lists of numbers or null, of
        ``shape``) or ``'array[str]'`` (of strings or null). A JSON ``true``/``false`` is never a number.
    ge, gt, le, lt : float, optional
        Bounds (≥, >, ≤, <) on the number, or on every element of a ``list[...]``.
    null : bool
        JSON ``null`` is allowed (what the writer makes of None, NaN and ±inf).
    required : bool
        Must be present whenever its parent object is (a top-level key: in every run directory).
    choices : tuple, optional
        The allowed values.
    pattern, form : str, optional
        A regular expression a string must match in full, and how it reads in an error message.
    shape : str, optional
        For arrays: dimensions separated by commas, ``L`` (layers) and ``H`` (heads) of the run's profile, ``*`` any.
    """

    kind: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    null: bool = False
    required: bool = False
    choices: tuple[Any, ...] | None = None
    pattern: str | None = None
    form: str | None = None
    shape: str | None = None


# manifest.json (docs/run_format.md): a dotted path per field, "*" for every key of an object. Parents come
# before their children. Optional fields may be missing (runs of earlier gammalens versions).
MANIFEST_FIELDS: dict[str, Field] = {
    "format": Field("str", required=True, choices=(FORMAT,)),
    "run_id": Field("str", required=True, pattern=r"\S+", form="a non-empty string"),
    "created": Field("str", null=True),
    "seed": Field("int", ge=0, null=True),
    "profile_layout": Field("str", pattern=r"full|compact:\d+", form="'full' or 'compact:E'"),
    "layer_modules": Field("list[str]"),
    "model": Field("object", required=True),
    "model.id": Field("str", null=True),
    "model.source": Field("str", choices=("embedded", "local", "hub", "gguf")),
    "model.path": Field("str"),
    "model.weights_sha256": Field("object", null=True),
    "model.weights_sha256.*": Field("str"),
    "model.gguf": Field("object", null=True),
    "model.arch": Field("object", null=True),
    "model.arch.model_type": Field("str", null=True),
    "model.arch.architectures": Field("list[str]", null=True),
    "model.arch.n_layers": Field("int", ge=1, required=True),
    "model.arch.n_heads": Field("int", ge=1, required=True),
    "model.arch.n_kv_heads": Field("int", ge=1, null=True),
    "model.arch.head_dim": Field("int", ge=1, null=True),
    "model.arch.hidden_size": Field("int", ge=1, null=True),
    "model.arch.causal": Field("bool"),
    "model.arch.position_encoding": Field("str", choices=("rope", "learned", "alibi", "none", "unknown")),
    "model.arch.rope_theta": Field("float", gt=0, null=True),
    "model.arch.rope_scaling": Field("object", null=True),
    "model.arch.partial_rotary_factor": Field("float", gt=0, le=1, null=True),
    "model.arch.max_positions": Field("int", ge=1, null=True),
    "model.arch.sliding_window": Field("int", ge=1, null=True),
    "model.arch.layer_types": Field("list[str]", null=True),
    "model.arch.layer_rope_theta": Field("list[float]", gt=0, null=True),
    "model.arch.n_params": Field("int", ge=0, null=True),
    "corpus": Field("object", null=True),
    "corpus.name": Field("str", null=True),
    "corpus.spec": Field("str", null=True),
    "corpus.sha256": Field("str", null=True),
    "corpus.n_windows": Field("int", ge=1),
    "corpus.n_tokens": Field("int", ge=0),
    "corpus.tokens_per_window": Field("int", ge=1),
    "corpus.n_documents": Field("int", ge=0),
    "corpus.seed": Field("int", ge=0),
    "corpus.selection": Field("str", null=True),
    "settings": Field("object", required=True),  # every MeasureConfig field (verify re-runs with them)
    "settings.model": Field("str", null=True),
    "settings.corpus": Field("str"),
    "settings.context": Field("int", ge=2),
    "settings.windows": Field("int", ge=1),
    "settings.sink_tokens": Field("int", ge=0),
    "settings.fit_range": Field("str", null=True, pattern=r"\d+:\d+", form="'A:B' with integers A < B"),
    "settings.dtype": Field("str", choices=("fp32", "bf16", "fp16")),
    "settings.device": Field("str"),
    "settings.batch_size": Field("int", ge=1),
    "settings.chunk_size": Field("int", ge=1, null=True),
    "settings.backend": Field("str", choices=("auto", "chunked", "triton")),
    "settings.bootstrap": Field("int", ge=0),
    "settings.seed": Field("int", ge=0),
    "settings.allow_extrapolation": Field("bool"),
    "settings.eps": Field("float", gt=0, lt=1),
    "settings.estimator": Field("str", choices=("null", "taf")),
    "settings.taf_windows": Field("int", ge=1),
    "settings.taf_max_distance": Field("int", ge=1, null=True),
    "settings.taf_fit_min_distance": Field("int", ge=1, null=True),
    "settings.gguf_file": Field("str", null=True),
    "settings.profile_layout": Field("str", pattern=r"auto|full|compact(:[1-9]\d*)?",
                                     form="'auto', 'full', 'compact' or 'compact:E'"),
    "versions": Field("object", null=True),
    "versions.*": Field("str", null=True),
    "timings": Field("object", null=True),
    "timings.*": Field("float", ge=0, null=True),
    "probe": Field("object", null=True),
    "probe.backend": Field("str", null=True),
    "probe.note": Field("str", null=True),
    "probe.kernel": Field("str", null=True),
    "result": Field("object", null=True),  # the model row of fits.csv
    "result.gamma": Field("float", null=True),
    "result.gamma_ci_low": Field("float", null=True),
    "result.gamma_ci_high": Field("float", null=True),
    "result.r2": Field("float", null=True),
    "result.phase": Field("str", null=True, choices=("A", "B", "boundary", "undetermined")),
    "result.sink_mass": Field("float", ge=0, null=True),
    "taf": Field("object", null=True),  # the book's estimator next to ours (--estimator taf)
    "taf.distances": Field("list[int]", ge=1),
    "taf.fit_distances": Field("list[int]", ge=1),
    "taf.gamma": Field("float", null=True),
    "taf.r2": Field("float", null=True),
    "taf.n_windows": Field("int", ge=1),
    "sinks": Field("object", null=True),  # `gammalens sinks` runs: the sink settings and the file
    "sinks.ks": Field("list[int]", ge=1),
    "sinks.eps": Field("float", gt=0, lt=1),
    "sinks.file": Field("str"),
    "retrieval": Field("object", null=True),  # `gammalens measure --retrieval`: the echo / induction pass
    "retrieval.length": Field("int", ge=2),
    "retrieval.sequences": Field("int", ge=1),
    "retrieval.skip": Field("int", ge=0),
    "retrieval.seed": Field("int", ge=0, null=True),
    "retrieval.prefix_len": Field("int", ge=0),
    "retrieval.far_distance": Field("int", ge=0),
    "retrieval.sha256": Field("str"),
}

# fits.csv: bounds and labels of the typed columns (FIT_COLUMNS gives each column's type)
FIT_CHECKS: dict[str, Field] = {
    "layer": Field("int", ge=0),
    "head": Field("int", ge=0),
    "fit_d_min": Field("int", ge=1),
    "fit_d_max": Field("int", ge=1),
    "n_docs": Field("int", ge=0),
    "sink_mass": Field("float", ge=0),
    "phase": Field("str", choices=("A", "B", "boundary", "undetermined")),
    "preferred_model": Field("str", choices=("power_law", "exponential", "power_law_cutoff")),
    "echo": Field("float", ge=0, le=1),
    "induction": Field("float", ge=0, le=1),
    "far_mass": Field("float", ge=0, le=1),
}


@dataclass(frozen=True)
class Array:
    """One array of ``profile.npz`` as stored.

    Attributes
    ----------
    shape : str
        Dimensions separated by commas; a letter is bound by the first array that has it and must agree in every
        other (``L`` layers, ``H`` query heads, ``D`` stored distances or bins, ``N`` documents), ``*`` any; ``''``
        a scalar.
    dtype : str
        ``'number'`` (integer or floating point), ``'int'`` or ``'str'``.
    required : bool
        In every profile (either layout).
    ge : float, optional
        Lower bound on every value (checked on scalars and small arrays).
    """

    shape: str
    dtype: str = "number"
    required: bool = False
    ge: float | None = None


PROFILE_FIELDS: dict[str, Array] = {
    "mass": Array("L,H,D", required=True),
    "pairs": Array("L,D", required=True),
    "mass_cs": Array("L,H,*", required=True),
    "queries_cs": Array("L", required=True),
    "cs_horizon": Array("", "int", required=True, ge=1),
    "sink_mass": Array("L,H", required=True),
    "doc_mass_cs": Array("N,L,H,*"),
    "doc_queries_cs": Array("N,L"),
    "doc_sink_sum": Array("N,L,H"),
    "doc_sink_queries": Array("N,L"),
    "layer_window": Array("L", "int", ge=0),
    "sink_tokens": Array("", "int", ge=0),
    "layout": Array("", "str"),            # compact layout (docs/run_format.md)
    "exact_to": Array("", "int", ge=1),
    "per_octave": Array("", "int", ge=1),
    "edges": Array("*", "int", ge=0),
    "edges_cs": Array("*", "int", ge=0),
}
PROFILE_ARRAYS = tuple(k for k, a in PROFILE_FIELDS.items() if a.required)  # in every profile.npz

# sinks.json of `gammalens sinks` runs (docs/sinks.md; written by gammalens.sinks.result.SinkResult.to_dict)
SINKS_FILE, SINKS_FORMAT = "sinks.json", "gammalens.sinks/1"
_PASS_FIELDS: dict[str, Field] = {  # one forward pass (PassSinks): baseline, bos, ablated
    "label": Field("str", required=True),
    "context": Field("int", ge=1, required=True),
    "prefix_len": Field("int", ge=0, required=True),
    "ks": Field("list[int]", ge=1, required=True),
    "mass": Field("array", shape="L,H,*", required=True),
    "first_key_share": Field("array", shape="L,H", required=True),
    "peak_key_share": Field("array", shape="L,H", required=True),
    "sink_position": Field("array", shape="L,H", required=True),
    "sink_kind_share": Field("array", shape="L,H", required=True),
    "sink_token": Field("array[str]", shape="L,H", required=True),
    "sink_kind": Field("array[str]", shape="L,H", required=True),
    "gamma": Field("array", shape="L,H", required=True),
    "layer_gamma": Field("array", shape="L", required=True),
    "model_gamma": Field("float", null=True, required=True),
}
SINKS_FIELDS: dict[str, Field] = {
    "format": Field("str", required=True, choices=(SINKS_FORMAT,)),
    "model": Field("str", required=True),
    "settings": Field("object", required=True),
    "settings.ks": Field("list[int]", ge=1),
    "settings.eps": Field("float", gt=0, lt=1, required=True),
    "settings.massive_abs": Field("float", gt=0),
    "settings.massive_ratio": Field("float", gt=0),
    "settings.ablate": Field("str", null=True, choices=("zero", "mean")),
    "settings.bos_variant": Field("bool"),
    "settings.sink_tokens": Field("int", ge=0, required=True),
    "bos_note": Field("str", required=True),
    "ablated_count": Field("list[int]", ge=0, required=True),
    "massive": Field("object", required=True),
    "massive.abs_threshold": Field("float", gt=0, required=True),
    "massive.ratio": Field("float", gt=0, required=True),
    "massive.count": Field("list[int]", ge=0, required=True),
    "massive.median_abs": Field("array", shape="L", required=True),
    "massive.top_abs": Field("array", shape="L,*", required=True),
    "massive.first_layer": Field("int", ge=0, null=True),
    "massive.sites": Field("list[object]", required=True),
    "massive.truncated": Field("bool", required=True),
    "correlation": Field("object", required=True),
    "correlation.n": Field("int", ge=0),
    **{f"{p}{'' if k is None else '.' + k}": f
       for p, required in (("baseline", True), ("bos", False), ("ablated", False))
       for k, f in ((None, Field("object", required=required, null=not required)), *_PASS_FIELDS.items())},
}
