"""Which ledger claims a measurement's numbers bear on: the report and the terminal summary link them by id.

>>> fit = {"gamma": 0.78, "gamma_pade": 0.99, "gamma_pade_rel_error": -0.21, "sink_mass": 0.007}
>>> [link.claim_id for link in related_claims(fit, corpus="stdlib")]
['estimator.null-corrected', 'pade.median-error', 'sinks.massive-activations-cause']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gammalens.claims.ledger import load_ledger


@dataclass(frozen=True)
class ClaimLink:
    """One claim a run bears on.

    Attributes
    ----------
    claim_id : str
        The ledger id (``gammalens claims show ID``).
    figure : str
        This run's number that bears on it, in words.
    book_figure, verdict : str
        The ledger's book figure and our verdict, for context.
    """

    claim_id: str
    figure: str
    book_figure: str
    verdict: str


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def related_claims(model_fit: dict[str, Any], corpus: str | None = None, taf: dict[str, Any] | None = None) -> list[ClaimLink]:
    """The claims a run's model-level row bears on, in ledger order.

    Parameters
    ----------
    model_fit : dict
        The ``scope='model'`` row of ``fits.csv`` (``gamma``, ``gamma_pade``, ``gamma_pade_rel_error``,
        ``sink_mass`` …).
    corpus : str, optional
        The corpus name or spec (``'random'`` links the Δγ claim).
    taf : dict, optional
        The manifest's ``taf`` block (``--estimator taf``): links the fixed-key estimator's claim.
    """

    figures: dict[str, str] = {}
    if _finite(model_fit.get("gamma")):
        figures["estimator.null-corrected"] = f"γ = {model_fit['gamma']:.3f}, null-corrected"
    if taf and _finite(taf.get("gamma")):
        figures["estimator.fixed-key-null"] = f"the book's estimator reads γ = {taf['gamma']:.3f} on this model"
    if _finite(model_fit.get("gamma_pade")) and _finite(model_fit.get("gamma_pade_rel_error")):
        figures["pade.median-error"] = (f"γ_Padé = {model_fit['gamma_pade']:.3f}, relative error "
                                        f"{model_fit['gamma_pade_rel_error']:+.2f}")
    if corpus is not None and str(corpus).startswith("random") and _finite(model_fit.get("gamma")):
        figures["atlas.delta-gamma-text-random"] = (f"γ_random = {model_fit['gamma']:.3f}: Δγ = γ_text − γ_random "
                                                    "with a text run of the same model")
    if _finite(model_fit.get("sink_mass")):
        figures["sinks.massive-activations-cause"] = (f"sink mass {model_fit['sink_mass']:.3f} (gammalens sinks "
                                                      "tests massive activations)")
    ledger = load_ledger()
    return [ClaimLink(c.id, figures[c.id], c.book_figure, c.verdict) for c in ledger.claims if c.id in figures]


def claims_line(links: list[ClaimLink]) -> str:
    """One line for the terminal: ``claims: ID, ID … (gammalens claims show ID)``; empty without links."""
    if not links:
        return ""
    return f"claims this run bears on: {', '.join(link.claim_id for link in links)} (gammalens claims show ID)"


def links_for_run(run: Any) -> list[ClaimLink]:
    """The claims a run bears on, from its files (a :class:`~gammalens.runs.reader.RunFiles`): what the report shows."""
    fit = {**(run.model_fit.get("extras") or {}), **run.model_fit}  # theory columns (γ_Padé …) are extras here
    return related_claims(fit, (run.manifest.get("corpus") or {}).get("name"), run.manifest.get("taf"))
