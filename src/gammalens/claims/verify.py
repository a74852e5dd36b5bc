"""Run the ledger's receipts and compare each figure with its stated expectation.

>>> from gammalens.claims import load_ledger, verify_claims
>>> results = verify_claims(load_ledger(), ["atlas.r2-above-095"])     # doctest: +SKIP
>>> results[0].status, results[0].figures["above"]                        # doctest: +SKIP
('pass', 64.0)
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from gammalens.claims.ledger import Claim, ClaimsError, Ledger, Receipt

STATUSES = ("pass", "fail", "skipped")


@dataclass(frozen=True)
class ReceiptResult:
    """One receipt re-run.

    Attributes
    ----------
    claim_id : str
        The claim it belongs to.
    receipt : Receipt
        What was run.
    status : str
        ``pass`` (every figure met its expectation), ``fail`` (one did not, or the receipt raised),
        ``skipped`` (slow, not asked for).
    figures : dict
        Figure name → value obtained (empty when skipped or when the receipt raised).
    failed : tuple of str
        Names of the figures that missed their expectation.
    error : str or None
        The exception, when the receipt raised.
    seconds : float
        Wall-clock time of the run.
    """

    claim_id: str
    receipt: Receipt
    status: str
    figures: dict[str, float] = field(default_factory=dict)
    failed: tuple[str, ...] = ()
    error: str | None = None
    seconds: float = 0.0

    @property
    def headline(self) -> str:
        """The first expected figure and its value, e.g. ``gamma = 0.6865``."""
        name = self.receipt.expect[0].name
        if name not in self.figures:
            return "—"
        return f"{name} = {self.figures[name]:.4g}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve(call: str) -> Callable[..., dict[str, float]]:
    """Import ``"package.module:function"`` (a :class:`ClaimsError` when it does not exist)."""
    module, _, name = call.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ClaimsError(f"receipt {call!r} cannot be imported: {err}") from None
    if not callable(fn):
        raise ClaimsError(f"receipt {call!r} is not callable")
    return fn


def run_receipt(claim_id: str, receipt: Receipt, cache: dict[str, dict[str, float]] | None = None) -> ReceiptResult:
    """Run one receipt and check its figures; an exception inside it is a failure, not a crash.

    ``cache`` (call and arguments → figures) lets two claims that share a receipt run it once.
    """
    fn = resolve(receipt.call)
    key = receipt.command
    t0 = time.perf_counter()
    try:
        if cache is not None and key in cache:
            figures = cache[key]
        else:
            raw = fn(**receipt.args)
            figures = {str(k): float(v) for k, v in dict(raw).items()}
            if cache is not None:
                cache[key] = figures
    except Exception as err:  # a receipt that no longer runs no longer reproduces
        return ReceiptResult(claim_id, receipt, "fail", error=f"{type(err).__name__}: {err}",
                             seconds=time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    failed = tuple(e.name for e in receipt.expect if not e.check(figures.get(e.name, math.nan)))
    return ReceiptResult(claim_id, receipt, "fail" if failed else "pass", figures, failed, seconds=seconds)


def verify_claims(ledger: Ledger, ids: list[str] | tuple[str, ...] = (), *, slow: bool = False,
                  on_result: Callable[[Claim, ReceiptResult], None] | None = None) -> list[ReceiptResult]:
    """Re-run the receipts of the chosen claims (every claim when ``ids`` is empty).

    Parameters
    ----------
    ledger : Ledger
        The ledger to check.
    ids : list of str
        Claim ids; unknown ids raise :class:`ClaimsError` before anything runs.
    slow : bool
        Also run the receipts marked slow (re-training, the zoo); otherwise they are reported as skipped.
    on_result : callable, optional
        Called with (claim, result) after each receipt (for live output).

    Returns
    -------
    list of ReceiptResult
        One per receipt, in ledger order (claims without receipts contribute none).
    """
    claims = ledger.select(list(ids))
    for claim in claims:  # fail early on a receipt that cannot even be imported
        for r in claim.receipts:
            resolve(r.call)
    results: list[ReceiptResult] = []
    cache: dict[str, dict[str, float]] = {}
    for claim in claims:
        for r in claim.receipts:
            res = run_receipt(claim.id, r, cache) if (slow or not r.slow) else ReceiptResult(claim.id, r, "skipped")
            results.append(res)
            if on_result is not None:
                on_result(claim, res)
    return results


def all_passed(results: list[ReceiptResult]) -> bool:
    """True when no receipt failed (skipped ones do not count against)."""
    return not any(r.status == "fail" for r in results)
