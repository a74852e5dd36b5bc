"""The card's geometry under rope_scaling: linear scaling is exactly T → T/s, dynamic NTK changes θ above the
original context, band-wise scalings are flagged; D_f is capped by a sliding window; one D_f convention."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from gammalens.card.config_card import build_card
from gammalens.theory import kv_window

BASE = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 256, "num_attention_heads": 4,
        "num_key_value_heads": 4, "vocab_size": 1000, "intermediate_size": 512, "rope_theta": 10000.0}


def card(tmp_path: Path, context: int, **cfg):
    file = tmp_path / "config.json"
    file.write_text(json.dumps(BASE | cfg))
    return build_card(file, context=context).to_dict()


def pade(theta: float, T: float) -> float:
    return (2 * theta - T * math.sqrt(2)) / (2 * theta + T * math.sqrt(2))


def test_linear_scaling_is_exactly_T_over_s(tmp_path: Path) -> None:
    s, theta, T, d = 4.0, 10000.0, 8192, 64
    c = card(tmp_path, T, max_position_embeddings=32768, rope_scaling={"rope_type": "linear", "factor": s})
    r, p = c["rope"], c["prediction"]
    assert r["position_scale"] == s and r["theta_effective"] == theta and r["geometry_defined"]
    assert r["t_max"] == pytest.approx(2 * math.pi * s * theta)
    assert r["t_cross"] == pytest.approx(2 * math.pi * s * math.sqrt(theta))
    assert r["wavelength_max"] == pytest.approx(2 * math.pi * s * theta ** ((d - 2) / d), rel=1e-5)
    assert r["wavelength_max"] <= r["t_max"]                  # never T_max below the real longest wavelength
    assert p["gamma_pade"] == pytest.approx(pade(theta, T / s), rel=1e-12)
    assert p["d_horizon"] == pytest.approx(s * theta * (1 - p["gamma_pade"]) * math.sqrt(2) / (1 + p["gamma_pade"]))


def test_dynamic_ntk_changes_theta_above_the_original_context(tmp_path: Path) -> None:
    s, theta, orig, d = 2.0, 10000.0, 2048, 64
    below = card(tmp_path, 1024, max_position_embeddings=orig, rope_scaling={"rope_type": "dynamic", "factor": s})
    assert below["rope"]["theta_effective"] == theta and below["prediction"]["gamma_pade"] == pytest.approx(
        pade(theta, 1024), rel=1e-12)
    T = 8192
    above = card(tmp_path, T, max_position_embeddings=orig, rope_scaling={"rope_type": "dynamic", "factor": s})
    ntk = theta * ((s * T / orig) - (s - 1)) ** (d / (d - 2))  # transformers' dynamic NTK base
    assert above["rope"]["theta_effective"] == pytest.approx(ntk, rel=1e-4)
    assert above["rope"]["position_scale"] == 1.0
    assert above["prediction"]["gamma_pade"] == pytest.approx(pade(ntk, T), rel=1e-4)


def test_band_wise_scaling_is_flagged_not_hidden(tmp_path: Path) -> None:
    c = card(tmp_path, 8192, max_position_embeddings=131072,
             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 8192})
    assert not c["rope"]["geometry_defined"] and not c["prediction"]["geometry_defined"]
    assert c["rope"]["theta_effective"] == 10000.0
    assert any(v["name"] == "geometry" and v["status"] == "warn" for v in c["verdicts"])


def test_d_f_capped_by_the_sliding_window_and_one_convention(tmp_path: Path) -> None:
    T, window = 32768, 4096
    c = card(tmp_path, T, max_position_embeddings=T, sliding_window=window)
    p = c["prediction"]
    assert p["gamma_pade"] < 1 and p["D_f_uncapped"] == kv_window.d_f(p["gamma_pade"], T - 1, p["eps"]) > window
    assert p["D_f"] == window and p["D_f_capped_by_window"]
    # the convention by brute force: distances 1..T-1 of a context of T tokens
    gamma, eps, T = 0.7, 0.05, 500
    mass = np.arange(1, T, dtype=np.float64) ** -gamma
    brute = int(np.searchsorted(np.cumsum(mass), (1 - eps) * mass.sum()) + 1)
    assert kv_window.d_f_at_context(gamma, T, eps) == brute
