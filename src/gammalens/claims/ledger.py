"""The ledger: the framework's claims as data, each with the book's receipt and ours.

The ledger is one TOML table (``ledger.toml`` next to this module; one ``[[claim]]`` block per claim, in
the order they are listed). A claim carries the book's figure and receipt class, our figure and verdict,
and zero or more executable receipts. A receipt names a function ``"module:function"`` that computes
named figures from scratch on this machine and states what each figure must come out as (a value ± a
tolerance, or a range). ``gammalens claims verify`` runs them.

>>> ledger = load_ledger()
>>> claim = ledger.get("estimator.fixed-key-null")
>>> claim.verdict, claim.receipts[0].expect[0].name
('confirmed', 'gamma')

Adding a claim is adding a block to ``ledger.toml`` (and, if it needs new code, a receipt function in
:mod:`gammalens.claims.receipts`); ``gammalens claims docs`` regenerates ``docs/claims.md``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gammalens.errors import GammalensError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

LEDGER_FILE = Path(__file__).resolve().parent / "ledger.toml"

# The book's receipt legend (glossary, "Receipt", Ch. 38), plus two labels of ours: "unmarked" (the book
# states it without a receipt class we can see in the glossary) and "none" (not a claim of the book: a
# claim about its method, stated by us).
BOOK_RECEIPTS = ("lean", "data", "derived", "analogy", "erratum", "provisional", "refuted", "unmarked", "none")
VERDICTS = ("confirmed", "confirmed with caveat", "not reproduced", "refuted", "not testable here", "not tested yet")
_ID = re.compile(r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$")
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ClaimsError(GammalensError):
    """The ledger is malformed, or a claim id is unknown (the CLI exits with code 2)."""


@dataclass(frozen=True)
class Expectation:
    """What one named figure of a receipt must come out as.

    Attributes
    ----------
    name : str
        Key in the mapping the receipt function returns.
    value, tol : float or None
        Expected value and absolute tolerance: pass when |x − value| ≤ tol.
    min, max : float or None
        Or a closed range: pass when min ≤ x ≤ max (either bound may be absent).
    """

    name: str
    value: float | None = None
    tol: float | None = None
    min: float | None = None
    max: float | None = None

    def check(self, x: float) -> bool:
        """True when ``x`` meets the expectation (NaN never does)."""
        if not math.isfinite(x):
            return False
        if self.value is not None:  # the slack absorbs decimal-to-binary rounding of value and tol
            return abs(x - self.value) <= float(self.tol or 0.0) + 1e-12 * max(1.0, abs(self.value))
        return (self.min is None or x >= self.min) and (self.max is None or x <= self.max)

    def describe(self) -> str:
        """The expectation as text, e.g. ``0.6865 ± 0.0005`` or ``≤ 0.05``."""
        if self.value is not None:
            return f"{self.value:g} ± {self.tol:g}" if self.tol else f"= {self.value:g}"
        if self.min is not None and self.max is not None:
            return f"in [{self.min:g}, {self.max:g}]"
        return f"≥ {self.min:g}" if self.min is not None else f"≤ {self.max:g}"


@dataclass(frozen=True)
class Receipt:
    """One executable receipt of a claim.

    Attributes
    ----------
    call : str
        ``"package.module:function"``; the function takes ``args`` as keyword arguments and returns a
        mapping of figure name → float.
    args : dict
        Keyword arguments of the call (e.g. windows, θ factors).
    expect : tuple of Expectation
        The figures checked; the first is the headline figure.
    scale : str
        What it was tested at, in words ("exact arithmetic", "gammalens-tiny, 4 × 512 tokens").
    slow : bool
        Runs only with ``verify --slow`` (re-training, the zoo, real models).
    """

    call: str
    args: dict[str, Any]
    expect: tuple[Expectation, ...]
    scale: str
    slow: bool = False

    @property
    def command(self) -> str:
        """The Python call that re-runs this receipt, e.g. ``gammalens.claims.receipts.atlas:r2_count()``."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        return f"{self.call}({args})"


@dataclass(frozen=True)
class Claim:
    """One entry of the ledger (every text field is Markdown-safe, one paragraph).

    Attributes
    ----------
    id : str
        Stable dotted id (``pade.median-error``).
    claim : str
        The claim in one sentence.
    source : str
        Where it comes from (chapter, glossary term, DESIGN note).
    book_receipt : str
        The book's receipt class (:data:`BOOK_RECEIPTS`).
    book_figure : str
        The book's published figure.
    ours : str
        Our figure, in words and numbers.
    verdict : str
        One of :data:`VERDICTS`.
    why : str
        The reasoning behind the verdict: caveats, what differs, why it cannot be tested here.
    command : str
        The shell command a user runs to check it (``gammalens claims verify ID`` unless stated).
    evidence : tuple of str
        Files (docs, tests) with the longer story.
    receipts : tuple of Receipt
        Executable receipts; empty for claims not tested yet, not testable here, or whose receipt is only a
        command (a benchmark too heavy to call from here).
    """

    id: str
    claim: str
    source: str
    book_receipt: str
    book_figure: str
    ours: str
    verdict: str
    why: str
    command: str
    evidence: tuple[str, ...]
    receipts: tuple[Receipt, ...]

    @property
    def slow_only(self) -> bool:
        """Every receipt is slow (or there is none)."""
        return all(r.slow for r in self.receipts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Ledger:
    """The claims in ledger order, with the file they were read from."""

    claims: tuple[Claim, ...]
    path: Path

    def get(self, claim_id: str) -> Claim:
        """The claim with this id; :class:`ClaimsError` naming the known ids otherwise."""
        for c in self.claims:
            if c.id == claim_id:
                return c
        raise ClaimsError(f"unknown claim id {claim_id!r}; known ids: {', '.join(c.id for c in self.claims)}")

    def select(self, ids: list[str] | tuple[str, ...]) -> list[Claim]:
        """The claims with these ids, in the order given (all claims for an empty list)."""
        return [self.get(i) for i in ids] if ids else list(self.claims)


def _text(entry: dict, key: str, where: str, default: str | None = None) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ClaimsError(f"{where}: '{key}' must be a non-empty string")
    return " ".join(value.split())


def _number(spec: dict, key: str, where: str) -> float | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ClaimsError(f"{where}: '{key}' must be a finite number (got {value!r})")
    return float(value)


def _expectation(name: str, spec: Any, where: str) -> Expectation:
    where = f"{where}, expect.{name}"
    if not isinstance(spec, dict) or set(spec) - {"value", "tol", "min", "max"}:
        raise ClaimsError(f"{where}: give {{value, tol}} or {{min, max}}")
    e = Expectation(name, *(_number(spec, k, where) for k in ("value", "tol", "min", "max")))
    if e.value is not None and (e.tol is None or e.tol < 0 or e.min is not None or e.max is not None):
        raise ClaimsError(f"{where}: a value needs a tolerance tol ≥ 0 (and no min/max)")
    if e.value is None and e.min is None and e.max is None:
        raise ClaimsError(f"{where}: give a value ± tol or a min/max range")
    if e.min is not None and e.max is not None and e.min > e.max:
        raise ClaimsError(f"{where}: min > max")
    return e


def _receipt(spec: Any, where: str) -> Receipt:
    if not isinstance(spec, dict):
        raise ClaimsError(f"{where}: a receipt is a table")
    call = spec.get("call")
    if not isinstance(call, str) or not _TARGET.match(call):
        raise ClaimsError(f"{where}: 'call' must be 'package.module:function' (got {call!r})")
    args, expect = spec.get("args", {}), spec.get("expect")
    if not isinstance(args, dict):
        raise ClaimsError(f"{where}: 'args' must be a table")
    if not isinstance(expect, dict) or not expect:
        raise ClaimsError(f"{where}: 'expect' must name at least one figure")
    slow = spec.get("slow", False)
    if not isinstance(slow, bool):
        raise ClaimsError(f"{where}: 'slow' must be true or false")
    return Receipt(call=call, args=dict(args), expect=tuple(_expectation(n, s, where) for n, s in expect.items()),
                   scale=_text(spec, "scale", where), slow=slow)


def parse_claim(entry: Any, index: int) -> Claim:
    """Check one ``[[claim]]`` table and turn it into a :class:`Claim`."""
    where = f"claim #{index + 1}"
    if not isinstance(entry, dict):
        raise ClaimsError(f"{where}: not a table")
    cid = entry.get("id")
    if not isinstance(cid, str) or not _ID.match(cid):
        raise ClaimsError(f"{where}: 'id' must be lower-case words joined by '.' or '-' (got {cid!r})")
    where = f"claim {cid}"
    known = {"id", "claim", "source", "book_receipt", "book_figure", "ours", "verdict", "why", "command",
             "evidence", "receipt"}
    if set(entry) - known:
        raise ClaimsError(f"{where}: unknown keys {sorted(set(entry) - known)}")
    book_receipt, verdict = entry.get("book_receipt"), entry.get("verdict")
    if book_receipt not in BOOK_RECEIPTS:
        raise ClaimsError(f"{where}: book_receipt must be one of {', '.join(BOOK_RECEIPTS)} (got {book_receipt!r})")
    if verdict not in VERDICTS:
        raise ClaimsError(f"{where}: verdict must be one of {', '.join(VERDICTS)} (got {verdict!r})")
    evidence = entry.get("evidence", [])
    if not isinstance(evidence, list) or not all(isinstance(e, str) for e in evidence):
        raise ClaimsError(f"{where}: 'evidence' must be a list of paths")
    receipts = tuple(_receipt(r, f"{where}, receipt #{i + 1}") for i, r in enumerate(entry.get("receipt", [])))
    if verdict not in ("not tested yet", "not testable here") and not receipts and "command" not in entry:
        raise ClaimsError(f"{where}: a '{verdict}' verdict needs a receipt, or a command that computes it")
    return Claim(id=cid, claim=_text(entry, "claim", where), source=_text(entry, "source", where),
                 book_receipt=book_receipt, book_figure=_text(entry, "book_figure", where),
                 ours=_text(entry, "ours", where), verdict=verdict, why=_text(entry, "why", where),
                 command=_text(entry, "command", where, default=f"gammalens claims verify {cid}"),
                 evidence=tuple(evidence), receipts=receipts)


def load_ledger(path: Path | str | None = None) -> Ledger:
    """Read and check a ledger file (default: the shipped ``ledger.toml``).

    Raises
    ------
    ClaimsError
        The file cannot be read, is not TOML, or an entry is malformed (the message names it).
    """
    path = Path(path) if path is not None else LEDGER_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ClaimsError(f"cannot read the ledger {path}: {err.strerror or err}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ClaimsError(f"{path} is not a valid TOML ledger: {err}") from None
    entries = data.get("claim")
    if not isinstance(entries, list) or not entries:
        raise ClaimsError(f"{path}: no [[claim]] entries")
    claims = tuple(parse_claim(e, i) for i, e in enumerate(entries))
    seen: set[str] = set()
    for c in claims:
        if c.id in seen:
            raise ClaimsError(f"{path}: claim id {c.id!r} appears twice")
        seen.add(c.id)
    return Ledger(claims=claims, path=path)
