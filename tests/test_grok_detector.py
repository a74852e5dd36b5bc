"""The re-rise detector on synthetic CKA curves: fires on a planted re-rise, not on noise or monotone curves."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from gammalens.grok.detector import DetectorError, ReRiseDetector, ReRiseEvent


def run(curve: np.ndarray, every: int = 10, **kw: float) -> ReRiseDetector:
    det = ReRiseDetector(**kw)
    fired = [det.update(step=every * i, value=float(v)) for i, v in enumerate(curve)]
    assert fired.count(True) == (1 if det.fired else 0)  # fires at most once, and says so exactly then
    return det


def planted(rise_at: int, n: int = 300, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    """1.0 → drop to 0.6 over evaluations 20…60 → flat → rises to 0.9 from ``rise_at`` → flat; plus noise."""
    t = np.arange(n)
    c = np.interp(t, [0, 20, 60, rise_at, rise_at + 40, n], [0.95, 0.95, 0.6, 0.6, 0.9, 0.9])
    return c + noise * np.random.default_rng(seed).normal(size=n)


@pytest.mark.parametrize("seed", range(5))
def test_fires_on_a_planted_re_rise_soon_after_it_starts(seed: int) -> None:
    det = run(planted(rise_at=150, seed=seed))
    assert det.fired
    # the rise starts at evaluation 150 (step 1500) and reaches δ = 0.05 above the minimum after ~7 evaluations;
    # the running median and the 5-evaluation window add ≤ ~8 more
    assert 1500 < det.fired_step <= 1500 + 10 * 25
    assert det.event.minimum == pytest.approx(0.6, abs=0.05)
    assert det.event.peak == pytest.approx(0.95, abs=0.05)


@pytest.mark.parametrize("seed", range(5))
def test_silent_on_noise(seed: int) -> None:
    # noise around a constant: the running median's swings stay well below δ
    curve = 0.7 + 0.01 * np.random.default_rng(seed).normal(size=500)
    assert not run(curve).fired


@pytest.mark.parametrize("shape", ["rising", "falling", "drop_only"])
def test_silent_on_monotone_curves(shape: str) -> None:
    t = np.linspace(0, 1, 400)
    curve = {"rising": 0.3 + 0.6 * t, "falling": 0.9 - 0.6 * t,
             "drop_only": np.interp(t, [0, 0.2, 1], [0.9, 0.5, 0.5])}[shape]
    assert not run(curve + 0.002 * np.random.default_rng(0).normal(size=t.size)).fired


def test_a_short_blip_does_not_fire() -> None:
    t = np.arange(300)
    curve = np.interp(t, [0, 20, 60, 300], [0.95, 0.95, 0.6, 0.6])  # drops, never re-rises
    assert not run(curve).fired
    blip = curve.copy()
    blip[150:152] = 0.9  # two evaluations up: the running median of 5 ignores them
    assert not run(blip).fired
    blip[150:154] = 0.9  # four: the median follows for 4 evaluations, short of the window of 5
    assert not run(blip).fired
    blip[150:155] = 0.9  # five: the rule as documented fires, at the fifth smoothed evaluation above
    det = run(blip)
    assert det.fired_step == 10 * 156


def test_parameters_change_what_counts() -> None:
    small_rise = np.concatenate([np.full(20, 0.9), np.full(30, 0.6), np.full(30, 0.63)])
    assert not run(small_rise).fired  # 0.03 < δ = 0.05
    assert run(small_rise, delta=0.02).fired
    assert not run(small_rise, delta=0.02, window=40).fired


def test_on_fire_callback_and_non_finite_values() -> None:
    events: list[ReRiseEvent] = []
    det = ReRiseDetector(on_fire=events.append)
    for i, v in enumerate([0.9] * 10 + [float("nan")] * 5 + [0.5] * 10 + [0.8] * 10):
        det.update(i, v)
    assert len(events) == 1 and events[0] is det.event and events[0].to_dict()["step"] == det.fired_step


def test_never_sees_accuracy() -> None:
    # the only inputs are a step and one CKA value: nothing else can reach the rule
    assert list(inspect.signature(ReRiseDetector.update).parameters) == ["self", "step", "value"]


@pytest.mark.parametrize("kw", [{"delta": 0.0}, {"delta": float("nan")}, {"window": 0}, {"smooth": 0}])
def test_bad_settings(kw: dict) -> None:
    with pytest.raises(DetectorError):
        ReRiseDetector(**kw)
