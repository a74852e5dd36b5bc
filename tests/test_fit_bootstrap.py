"""The document bootstrap against an independent reference, and its memory blocks change nothing."""

from __future__ import annotations

import numpy as np

from gammalens.fit.bootstrap import bootstrap_gamma, resample_counts


def test_bootstrap_replicates_match_numpy_polyfit_and_blocks_change_nothing() -> None:
    rng = np.random.default_rng(3)
    N, H, D = 6, 3, 200
    d = np.arange(1, D + 1)
    docs = (d ** -rng.uniform(0.3, 1.4, size=(1, H, 1))) * rng.uniform(0.5, 1.5, size=(N, H, D))  # (N, H, D)
    counts = resample_counts(N, 40, seed=1)                                                        # (R, N)
    whole = bootstrap_gamma(d, docs, counts)                                                       # (R, H)
    for r in (0, 17, 39):                   # reference: the drawn documents summed, then a weighted polyfit
        prof = sum(int(k) * docs[i] for i, k in enumerate(counts[r]))
        for h in range(H):
            slope = np.polyfit(np.log(d), np.log(prof[h]), 1, w=np.sqrt(1.0 / d))[0]
            assert abs(whole[r, h] + slope) < 1e-10
    for block in (1, H * D, 7 * H * D + 5):  # one resample per block, exactly one, a ragged last block
        np.testing.assert_allclose(bootstrap_gamma(d, docs, counts, block_elements=block), whole, rtol=0, atol=1e-12)


def test_the_slope_fast_path_equals_the_full_fit_also_with_zeros() -> None:
    from gammalens.fit.power_law import fit_power_law, power_law_slope

    rng = np.random.default_rng(0)
    d = np.arange(3, 300)
    prof = d ** -rng.uniform(0.2, 1.6, size=(50, 1)) * rng.lognormal(0, 0.3, size=(50, d.size))  # (50, D)
    prof[5, 10] = 0.0                      # a zero: that point is dropped, the row takes the general path
    prof[7, :-2] = 0.0                     # two points left: NaN, as the full fit says
    prof[9, 4] = np.inf
    ours, ref = power_law_slope(d, prof), fit_power_law(d, prof).slope
    assert np.isnan(ours[7]) and np.isnan(ref[7])
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-13)
