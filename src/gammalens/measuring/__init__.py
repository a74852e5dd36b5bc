"""Measuring: the settings (:mod:`~gammalens.measuring.config`), the pipeline corpus → model → probe → profile → fit
(:mod:`~gammalens.measuring.pipeline`) and re-measuring a run to check its receipt (:mod:`~gammalens.measuring.verify`).

Nothing here writes reports or atlas rows: publishing a result is :mod:`gammalens.publish`, composed by the caller.
"""
