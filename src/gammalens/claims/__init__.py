"""The ledger of the framework's claims and their executable receipts (``gammalens claims``).

Each claim of *How Transformers Attend* that gammalens can test — and a few of ours about its measurement
method — is one entry of ``ledger.toml``: the book's figure and receipt class, our figure, a verdict,
and receipts that recompute our figure from scratch. ``docs/claims.md`` is generated from it.

>>> from gammalens.claims import load_ledger, verify_claims
>>> ledger = load_ledger()
>>> [r.status for r in verify_claims(ledger, ["thermo.cv-erratum"])]     # doctest: +SKIP
['pass']
"""

from __future__ import annotations

from gammalens.claims.ledger import (
           BOOK_RECEIPTS,
           VERDICTS,
           Claim,
           ClaimsError,
           Expectation,
           Ledger,
           Receipt,
           load_ledger,
)
from gammalens.claims.verify import ReceiptResult, all_passed, verify_claims

__all__ = ["BOOK_RECEIPTS", "VERDICTS", "Claim", "ClaimsError", "Expectation", "Ledger", "Receipt", "ReceiptResult",
           "all_passed", "load_ledger", "verify_claims"]
