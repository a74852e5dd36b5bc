"""Grokking early warning: inter-layer CKA monitor, re-rise detector, modular-arithmetic experiment.

Importing this package is light; torch loads only when a monitor or experiment runs.

>>> from gammalens.grok import CKAMonitor                     # doctest: +SKIP
>>> monitor = CKAMonitor(model, probe_inputs=x, every=100)    # doctest: +SKIP
>>> for step in range(steps): ...; monitor.step(step)          # doctest: +SKIP
"""

from __future__ import annotations

from gammalens.grok.cka import CKAError, linear_cka
from gammalens.grok.detector import DetectorError, ReRiseDetector, ReRiseEvent
from gammalens.grok.monitor import CKAMonitor, CKARecord, MonitorError

__all__ = ["CKAError", "CKAMonitor", "CKARecord", "DetectorError", "MonitorError", "ReRiseDetector", "ReRiseEvent",
           "linear_cka"]
