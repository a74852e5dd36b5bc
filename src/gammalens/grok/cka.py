"""Linear CKA between two representations of the same n samples (glossary: "CKA", grokking chapter).

Centred kernel alignment compares two representation matrices X (n, d₁) and Y (n, d₂) of the same
n inputs through their linear Gram matrices K = XXᵀ and L = YYᵀ:

    CKA(K, L) = HSIC(K, L) / √(HSIC(K, K) · HSIC(L, L))

Two HSIC estimators are provided (Kornblith et al. 2019, "Similarity of Neural Network
Representations Revisited"; Song et al. 2012, "Feature Selection via Dependence Maximization"):

- **biased** HSIC₀ = tr(K H L H) / (n − 1)², H = I − 11ᵀ/n. Its CKA is the familiar
  ‖YᶜᵀXᶜ‖²_F / (‖XᶜᵀXᶜ‖_F ‖YᶜᵀYᶜ‖_F) of the column-centred matrices; it is biased upwards when d ≫ n.
- **debiased** HSIC₁, the unbiased U-statistic, computed from the uncentred Gram matrices with their
  diagonals zeroed (K̃, L̃):

      HSIC₁ = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3))

  It needs n ≥ 4 samples. Debiased CKA can be slightly negative for unrelated representations.

Both CKAs are 1 for identical representations, invariant to isotropic scaling and orthogonal
transforms of either side, and symmetric. Computation is in float64.

>>> import torch
>>> x = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
>>> round(linear_cka(x, 3.0 * x), 6), round(linear_cka(x, x, debiased=False), 6)
(1.0, 1.0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gammalens.errors import GammalensError

if TYPE_CHECKING:
    import torch

MIN_SAMPLES = 4
"""The debiased estimator divides by n(n − 3) and (n − 1)(n − 2): it needs at least 4 samples."""


class CKAError(GammalensError):
    """Representations cannot be compared: too few samples, mismatched sample counts, NaN or inf values."""


def _as_matrix(x: torch.Tensor, name: str) -> torch.Tensor:
    """Flatten ``x`` (n, ...) to a float64 (n, features) matrix after checking it can be compared."""
    import torch

    if x.ndim < 2:
        raise CKAError(f"{name} must have shape (samples, features...), got shape {tuple(x.shape)}")
    if x.shape[0] < MIN_SAMPLES:
        raise CKAError(f"CKA needs at least {MIN_SAMPLES} probe samples (debiased HSIC), got {x.shape[0]}")
    m = x.detach().reshape(x.shape[0], -1).to(torch.float64)
    if not torch.isfinite(m).all():
        raise CKAError(f"{name} contains NaN or inf values; CKA is undefined (check the model for divergence)")
    return m


def hsic_biased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Biased HSIC₀ = tr(K H L H) / (n − 1)² of two (n, n) Gram matrices (0-d float64 tensor)."""
    n = k.shape[0]
    kc = k - k.mean(0, keepdim=True)
    kc = kc - kc.mean(1, keepdim=True)  # H K H
    lc = l - l.mean(0, keepdim=True)
    lc = lc - lc.mean(1, keepdim=True)
    return (kc * lc).sum() / (n - 1) ** 2


def hsic_debiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC₁ (Song et al. 2012) of two (n, n) uncentred Gram matrices, n ≥ 4 (0-d float64 tensor)."""
    n = k.shape[0]
    if n < MIN_SAMPLES:
        raise CKAError(f"debiased HSIC needs at least {MIN_SAMPLES} samples, got {n}")
    kt = k - k.diagonal().diag()  # zeroed diagonal
    lt = l - l.diagonal().diag()
    trace = (kt * lt).sum()  # tr(K̃L̃), both symmetric
    sums = kt.sum() * lt.sum() / ((n - 1) * (n - 2))
    cross = 2.0 / (n - 2) * (kt.sum(0) @ lt.sum(1))  # 1ᵀK̃L̃1
    return (trace + sums - cross) / (n * (n - 3))


def cka_from_grams(k: torch.Tensor, l: torch.Tensor, *, debiased: bool = True) -> float:
    """CKA of two (n, n) Gram matrices with the debiased (default) or biased HSIC estimator.

    Returns NaN when either self-similarity is not positive (a constant representation).
    """
    hsic = hsic_debiased if debiased else hsic_biased
    kl, kk, ll = hsic(k, l), hsic(k, k), hsic(l, l)
    denom = float(kk) * float(ll)
    if not denom > 0.0:
        return float("nan")
    return float(kl) / denom**0.5


def gram(x: torch.Tensor, name: str = "representation") -> torch.Tensor:
    """Linear Gram matrix XXᵀ, (n, n) float64, of a representation (n, ...) flattened per sample."""
    m = _as_matrix(x, name)
    return m @ m.T


def linear_cka(x: torch.Tensor, y: torch.Tensor, *, debiased: bool = True) -> float:
    """Linear CKA between representations ``x`` (n, ...) and ``y`` (n, ...) of the same n ≥ 4 samples.

    Parameters
    ----------
    x, y : torch.Tensor
        Representations, first axis the samples; remaining axes are flattened into features.
    debiased : bool
        Use the unbiased HSIC₁ estimator (default) or the biased HSIC₀.

    Returns
    -------
    float
        CKA, 1 for identical representations up to scale and rotation; NaN for a constant one.
    """
    if x.shape[0] != y.shape[0]:
        raise CKAError(f"CKA compares the same samples: got {x.shape[0]} and {y.shape[0]} rows")
    return cka_from_grams(gram(x, "x"), gram(y, "y"), debiased=debiased)
