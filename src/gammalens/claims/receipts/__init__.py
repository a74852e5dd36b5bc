"""Receipt functions of the ledger: each computes named figures from scratch and returns them as a dict.

One module per kind of evidence: :mod:`.estimator` (the measurement method on synthetic attention),
:mod:`.theory` (the framework's formulas against brute force and symbolic algebra), :mod:`.atlas` (the
book's published γ atlas, recomputed), :mod:`.models` (measurements of the embedded models) and
:mod:`.slow` (re-training the zoo, real models). A receipt never reads back a number we wrote: it
measures, sums or derives it.
"""
