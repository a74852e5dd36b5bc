"""Token budget → per-head windows that minimise the total attention mass lost (water-filling).

Given K heads with non-increasing loss curves f_k(w) (mass lost when the head keeps w recent tokens,
w = w_min..n) and a budget B ≥ K·w_min of window tokens, find w_k minimising Σ_k f_k(w_k) with Σ_k w_k ≤ B.

:func:`allocate` is the greedy on each curve's lower convex hull: hull segments, sorted by the mass they
save per token (their slope), are taken whole while they fit; the few tokens left are then spent one at a
time on the largest actual marginal gain. For convex curves (non-increasing marginal gains: a(d) decreasing
with d) the hull is the curve and this is the classic greedy for separable convex allocation, which is
exactly optimal. For non-convex measured curves it is optimal whenever the budget ends on hull breakpoints,
and otherwise within the loss of one partially taken hull segment (the standard bound of the LP relaxation
of the multiple-choice knapsack). :func:`allocate_exact` (dynamic programming, O(K·B·n)) is the exact
reference for small problems; both are tested against brute-force enumeration.
"""

from __future__ import annotations

import heapq
import itertools

import numpy as np


def _lower_hull(f: np.ndarray) -> list[int]:
    """Indices of the lower convex hull of the points (i, f[i]) (monotone chain, O(n))."""
    hull: list[int] = []
    for i in range(len(f)):
        while len(hull) >= 2:
            i0, i1 = hull[-2], hull[-1]
            # drop i1 if it lies on or above the chord i0 → i
            if (f[i1] - f[i0]) * (i - i0) >= (f[i] - f[i0]) * (i1 - i0):
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def allocate(losses: list[np.ndarray], budget: int, w_min: int = 1) -> np.ndarray:
    """Windows minimising Σ_k losses[k][w_k] subject to Σ_k w_k ≤ budget and w_k ≥ w_min.

    Parameters
    ----------
    losses : list of np.ndarray, each shape (n_k + 1,)
        ``losses[k][w]`` is the mass head k loses with a window of w tokens (w = 0..n_k), non-increasing.
    budget : int
        Total window tokens across heads (≥ K·w_min).
    w_min : int
        Smallest window per head (1 keeps the query's own key).

    Returns
    -------
    np.ndarray, shape (K,), int64
        The windows w_k.

    Examples
    --------
    >>> f = [np.array([1.0, 0.5, 0.3, 0.2, 0.15]), np.array([1.0, 0.2, 0.1, 0.05, 0.0])]
    >>> allocate(f, 4).tolist()
    [2, 2]
    """
    k = len(losses)
    if budget < k * w_min:
        raise ValueError(f"budget {budget} < {k} heads × {w_min}")
    w = np.full(k, w_min, dtype=np.int64)
    left = budget - k * w_min
    segments = []  # (−slope, head, order, end)
    for head, f in enumerate(losses):
        g = np.minimum.accumulate(np.asarray(f, dtype=np.float64)[w_min:])  # enforce non-increasing
        hull = _lower_hull(g)
        for order, (a, b) in enumerate(itertools.pairwise(hull)):
            segments.append(((g[b] - g[a]) / (b - a), head, order, b + w_min))
    segments.sort()  # steepest descent first; per head, hull slopes increase so its order is kept
    blocked: set[int] = set()
    for _slope, head, _order, end in segments:
        if head in blocked:
            continue
        need = end - w[head]
        if need <= left:
            w[head] = end
            left -= need
        else:
            blocked.add(head)  # later segments of this head come after this one
    # spend the remainder one token at a time on the largest actual marginal gain
    heap = [(-(losses[h][w[h]] - losses[h][w[h] + 1]), h) for h in range(k) if w[h] + 1 < len(losses[h])]
    heapq.heapify(heap)
    while left > 0 and heap:
        gain, h = heapq.heappop(heap)
        if -gain <= 0:
            break
        w[h] += 1
        left -= 1
        if w[h] + 1 < len(losses[h]):
            heapq.heappush(heap, (-(losses[h][w[h]] - losses[h][w[h] + 1]), h))
    return w


def allocate_exact(losses: list[np.ndarray], budget: int, w_min: int = 1) -> np.ndarray:
    """Exact optimum of :func:`allocate`'s problem by dynamic programming over heads (O(K·B·n); small cases).

    >>> f = [np.array([1.0, 0.9, 0.1]), np.array([1.0, 0.5, 0.4])]
    >>> allocate_exact(f, 3).tolist()
    [2, 1]
    """
    k = len(losses)
    if budget < k * w_min:
        raise ValueError(f"budget {budget} < {k} heads × {w_min}")
    spare = budget - k * w_min
    best = np.zeros(spare + 1)  # best[b]: min loss of the heads so far using ≤ b spare tokens
    choice = []
    for f in losses:
        f = np.asarray(f, dtype=np.float64)
        extra = np.arange(0, min(spare, len(f) - 1 - w_min) + 1)  # tokens above w_min for this head
        cand = best[None, :].repeat(len(extra), 0)  # (extra, spare+1)
        for i, e in enumerate(extra):
            cand[i, :] = np.inf
            cand[i, e:] = best[: spare + 1 - e] + f[w_min + e]
        pick = cand.argmin(0)
        best = cand[pick, np.arange(spare + 1)]
        choice.append(extra[pick])
    w = np.empty(k, dtype=np.int64)
    b = spare
    for head in range(k - 1, -1, -1):
        e = int(choice[head][b])
        w[head] = w_min + e
        b -= e
    return w
