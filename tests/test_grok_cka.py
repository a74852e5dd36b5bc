"""Linear CKA: both HSIC estimators against brute-force references, and CKA's invariances."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from gammalens.grok.cka import CKAError, hsic_biased, hsic_debiased, linear_cka


def _gram(x: np.ndarray) -> np.ndarray:
    return x @ x.T


def hsic_u_statistic(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. (2012) HSIC as the explicit U-statistic over distinct index tuples (brute force)."""
    n = k.shape[0]
    idx = range(n)
    t1 = sum(k[i, j] * l[i, j] for i, j in itertools.permutations(idx, 2)) / math.perm(n, 2)
    t2 = sum(k[i, j] * l[q, r] for i, j, q, r in itertools.permutations(idx, 4)) / math.perm(n, 4)
    t3 = sum(k[i, j] * l[i, q] for i, j, q in itertools.permutations(idx, 3)) / math.perm(n, 3)
    return t1 + t2 - 2 * t3


def hsic_centering(k: np.ndarray, l: np.ndarray) -> float:
    """Biased HSIC tr(KHLH)/(n−1)² with the explicit centring matrix H = I − 11ᵀ/n."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ l @ h)) / (n - 1) ** 2


@pytest.fixture
def xy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3))
    y = x @ rng.normal(size=(3, 4)) + 0.5 * rng.normal(size=(7, 4))  # related, not identical
    return x, y


def test_debiased_hsic_matches_the_u_statistic(xy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = xy
    k, l = _gram(x), _gram(y)
    for a, b in [(k, l), (k, k), (l, l)]:
        got = float(hsic_debiased(torch.from_numpy(a), torch.from_numpy(b)))
        assert got == pytest.approx(hsic_u_statistic(a, b), rel=1e-10, abs=1e-12)


def test_biased_hsic_matches_the_centring_matrix(xy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = xy
    k, l = _gram(x), _gram(y)
    got = float(hsic_biased(torch.from_numpy(k), torch.from_numpy(l)))
    assert got == pytest.approx(hsic_centering(k, l), rel=1e-12)


def test_biased_cka_is_the_feature_space_formula(xy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = xy
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert linear_cka(torch.from_numpy(x), torch.from_numpy(y), debiased=False) == pytest.approx(expected, rel=1e-12)


def test_debiased_cka_from_brute_force_hsic(xy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = xy
    k, l = _gram(x), _gram(y)
    expected = hsic_u_statistic(k, l) / math.sqrt(hsic_u_statistic(k, k) * hsic_u_statistic(l, l))
    assert linear_cka(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("debiased", [True, False])
def test_invariances(debiased: bool) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 16, generator=g)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    y = torch.randn(64, 24, generator=g)
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 7.5 * x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x.double() @ q, debiased=debiased) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(linear_cka(y, x, debiased=debiased), abs=1e-12)
    # representations of shape (n, T, D) are flattened per sample
    assert linear_cka(x.view(64, 4, 4), x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


def test_independent_representations_are_near_zero_only_when_debiased() -> None:
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(100, 300, generator=g), torch.randn(100, 300, generator=g)
    assert abs(linear_cka(x, y)) < 0.03
    # the biased estimator is far from 0 when features ≫ samples (why the debiased one is the default)
    assert linear_cka(x, y, debiased=False) > 0.5


@pytest.mark.parametrize(("x", "y", "match"), [
    (torch.randn(3, 4), torch.randn(3, 4), "at least 4"),
    (torch.randn(8, 4), torch.randn(9, 4), "same samples"),
    (torch.full((8, 4), float("nan")), torch.randn(8, 4), "NaN"),
    (torch.randn(8), torch.randn(8), "shape"),
])
def test_bad_input(x: torch.Tensor, y: torch.Tensor, match: str) -> None:
    with pytest.raises(CKAError, match=match):
        linear_cka(x, y)
