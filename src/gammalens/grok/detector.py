"""The online re-rise detector: an early-warning rule that sees only the CKA curve, never accuracy.

The claim under test (glossary: "grokking", "CKA") is that inter-layer CKA drops while a network
memorises and re-rises before test accuracy jumps. The rule below was fixed, with its defaults, before
any experiment's result was looked at (see docs/grokking.md); changing it after seeing results would
make the multi-seed test meaningless.

**Rule** (evaluated once per monitor evaluation t, on the CKA values c₁ … c_t only):

1. Smooth: s_t = median(c_{t−k+1} … c_t), the causal running median of the last ``smooth`` = k values
   (fewer at the start).
2. Track the running minimum m_t = min_{τ ≤ t} s_τ and the peak before it,
   P_t = max_{τ ≤ argmin} s_τ.
3. Armed once the curve has *dropped*: P_t − m_t ≥ ``delta``.
4. Fires at the first t where, armed, s ≥ m_t + ``delta`` has held for ``window`` = w consecutive
   evaluations (a new minimum resets the count). It fires once; the firing step is the step of the
   w-th evaluation.

Defaults: ``delta`` = 0.05 (CKA units), ``window`` = 5 evaluations, ``smooth`` = 5 evaluations.
A monotone curve never fires (a rising one never drops, a falling one never re-rises); noise whose
running-median swings stay below δ never fires.

>>> det = ReRiseDetector()
>>> curve = [0.9] * 5 + [0.6] * 10 + [0.8] * 12
>>> [det.update(step=100 * i, value=v) for i, v in enumerate(curve)].count(True)
1
>>> det.fired_step
2100
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gammalens.errors import GammalensError


class DetectorError(GammalensError):
    """Invalid detector settings (δ ≤ 0, window < 1, smooth < 1)."""


@dataclass(frozen=True)
class ReRiseEvent:
    """The detector fired.

    Attributes
    ----------
    step : int
        Training step of the evaluation at which the rule was first satisfied.
    value : float
        Smoothed CKA s_t at that evaluation.
    minimum, minimum_step : float, int
        Running minimum m_t of the smoothed CKA and the step where it was reached.
    peak : float
        Largest smoothed CKA before the minimum (the drop is peak − minimum).
    """

    step: int
    value: float
    minimum: float
    minimum_step: int
    peak: float

    def to_dict(self) -> dict[str, float | int]:
        return {"step": self.step, "value": self.value, "minimum": self.minimum,
                "minimum_step": self.minimum_step, "peak": self.peak}


@dataclass
class ReRiseDetector:
    """Online re-rise rule on one CKA series; feed it with :meth:`update` after every evaluation.

    Parameters
    ----------
    delta : float
        Drop needed to arm and rise above the running minimum needed to fire, in CKA units (> 0).
    window : int
        Consecutive evaluations the smoothed CKA must stay ≥ minimum + δ (≥ 1).
    smooth : int
        Length of the causal running median, in evaluations (≥ 1; 1 = no smoothing).
    on_fire : callable, optional
        Called once with the :class:`ReRiseEvent` when the detector fires.
    """

    delta: float = 0.05
    window: int = 5
    smooth: int = 5
    on_fire: Callable[[ReRiseEvent], None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.delta) and self.delta > 0):
            raise DetectorError(f"delta must be a positive CKA difference, got {self.delta}")
        if self.window < 1:
            raise DetectorError(f"window must be ≥ 1 evaluation, got {self.window}")
        if self.smooth < 1:
            raise DetectorError(f"smooth must be ≥ 1 evaluation, got {self.smooth}")
        self.reset()

    def reset(self) -> None:
        """Forget the history (a new run)."""
        self._recent: deque[float] = deque(maxlen=self.smooth)
        self._peak_so_far = -math.inf  # max of s over all evaluations so far
        self.minimum = math.inf
        self.minimum_step = -1
        self.peak_before_minimum = -math.inf
        self._streak = 0
        self.event: ReRiseEvent | None = None

    @property
    def fired(self) -> bool:
        return self.event is not None

    @property
    def fired_step(self) -> int | None:
        return None if self.event is None else self.event.step

    @property
    def armed(self) -> bool:
        """True once the smoothed curve has dropped by at least δ from an earlier peak."""
        return self.peak_before_minimum - self.minimum >= self.delta

    def update(self, step: int, value: float) -> bool:
        """Add the CKA measured at ``step``; return True exactly once, at the evaluation where the rule fires.

        Non-finite values are skipped (they neither arm nor fire).
        """
        if not math.isfinite(value):
            return False
        self._recent.append(float(value))
        s = statistics.median(self._recent)
        self._peak_so_far = max(self._peak_so_far, s)
        if s < self.minimum:
            self.minimum, self.minimum_step = s, int(step)
            self.peak_before_minimum = self._peak_so_far
            self._streak = 0
            return False
        if self.fired:
            return False
        self._streak = self._streak + 1 if s >= self.minimum + self.delta else 0
        if self.armed and self._streak >= self.window:
            self.event = ReRiseEvent(step=int(step), value=s, minimum=self.minimum,
                                     minimum_step=self.minimum_step, peak=self.peak_before_minimum)
            if self.on_fire is not None:
                self.on_fire(self.event)
            return True
        return False
