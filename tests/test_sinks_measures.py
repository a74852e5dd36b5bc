"""Sink measures against brute force: exact sums over eager ``output_attentions`` (tolerance 1e-5), token
kinds, and the γ–sink correlation against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gammalens.corpus import load_windows
from gammalens.measuring.pipeline import measure
from gammalens.model.load import load_model, resolve_model
from gammalens.probe.backend import registered_probes
from gammalens.sinks import SinkConfig, correlate
from gammalens.sinks.measures import SinkObserver
from gammalens.sinks.token_kinds import classify
from tests.conftest import save_tiny

CONTEXT, WINDOWS, KS = 24, 3, (1, 2, 4)
TOL = 1e-5


def doc_reference(A: np.ndarray, causal: bool, window: int | None) -> dict[str, np.ndarray]:
    """Sink sums of one document from its full attention matrices ``A`` (H, n, n), by the definitions."""
    H, n, _ = A.shape
    q, j = np.arange(n)[:, None], np.arange(n)[None, :]
    vis = q >= j if causal else np.ones((n, n), bool)
    if window:
        vis &= q - j < window
    assert np.all(A[:, ~vis] == 0)  # the structural mask is the model's
    count = vis.sum(0).astype(float)  # queries that see key j
    eligible = count >= 0.5 * count.max()
    out = {"mass": np.zeros((H, len(KS))), "first": np.zeros(H), "peak": np.zeros(H), "pos": np.zeros(H, int),
           "gap": np.zeros(H)}
    for h in range(H):
        for i, k in enumerate(KS):
            out["mass"][h, i] = sum(A[h, qq, :k].sum() for qq in range(k, n)) / (n - k)
        share = (A[h] * vis).sum(0) / count
        s = np.where(eligible, share, -np.inf)
        out["first"][h], out["pos"][h], out["peak"][h] = share[0], int(np.argmax(s)), s.max()
        out["gap"][h] = s.max() - np.sort(s)[-2]
    return out


def stack(refs: list[list[dict]]) -> dict[str, np.ndarray]:
    """refs[doc][layer] → arrays (N, L, H, …)."""
    return {key: np.stack([np.stack([r[key] for r in per_doc]) for per_doc in refs]) for key in refs[0][0]}


def check(m, ref: dict[str, np.ndarray]) -> None:
    per_doc = m.doc_mass / m.doc_queries[:, :, None, :]
    assert np.allclose(per_doc, ref["mass"], atol=TOL, rtol=0)
    assert np.allclose(m.doc_first_sum / m.doc_first_count[:, :, None], ref["first"], atol=TOL, rtol=0)
    assert np.allclose(m.doc_peak_share, ref["peak"], atol=TOL, rtol=0)
    clear = ref["gap"] > 1e-4  # where the runner-up is not within rounding of the peak, the key must agree
    assert clear.mean() > 0.9 and np.array_equal(m.doc_peak_position[clear], ref["pos"][clear])


def eager_reference(path, arch: str) -> dict[str, np.ndarray]:
    """Per-document sink sums computed from the full eager attention matrices of the run's windows."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    window = getattr(AutoConfig.from_pretrained(path), "sliding_window", None) if arch == "mistral_swa" else None
    cls = AutoModel if arch == "bert" else AutoModelForCausalLM
    model = cls.from_pretrained(path, attn_implementation="eager").eval()
    ids = torch.tensor(load_windows("random", tok, CONTEXT, WINDOWS, seed=0).input_ids)
    with torch.no_grad():
        att = model(input_ids=ids, output_attentions=True).attentions  # L × (N, H, n, n)
    return stack([[doc_reference(a[d].double().numpy(), arch != "bert", window) for a in att]
                  for d in range(WINDOWS)])


@pytest.mark.parametrize("arch", ["llama_gqa", "mistral_swa", "gpt2", "bert"])
def test_observer_matches_eager_brute_force(arch: str, tmp_path) -> None:
    path = save_tiny(arch, tmp_path / arch)
    ref = eager_reference(path, arch)
    net, tok = load_model(resolve_model(str(path)))
    L, H = net.config.num_hidden_layers, net.config.num_attention_heads
    obs = SinkObserver(L, H, WINDOWS, KS)
    # small chunks and batches: layers close across chunks and documents arrive in several forward passes
    res = measure(str(path), corpus="random", context=CONTEXT, windows=WINDOWS, bootstrap=0, batch_size=2,
                  chunk_size=5, observers=[obs], loaded=(net, tok))
    m = obs.result()
    assert registered_probes() == []
    check(m, ref)
    # pooled means: every document has the same number of queries per k
    assert np.allclose(m.mass, ref["mass"].mean(0), atol=TOL, rtol=0)
    assert np.allclose(m.first_key_share, ref["first"].mean(0), atol=TOL, rtol=0)
    # the probe's own sink mass (first sink_tokens = 1 keys, queries past them) is the k = 1 column: the same
    # probabilities, added in fp64 by the probe's C kernel and per chunk in fp32 by the observer (differences ~1e-8)
    sink = np.array([[r["sink_mass"] for r in res.fits if r["scope"] == "head" and r["layer"] == i] for i in range(L)])
    assert np.allclose(sink, m.mass[..., 0], atol=1e-7, rtol=0)


@pytest.mark.parametrize("arch", ["llama_gqa", "bert"])
def test_observer_on_a_padded_batch(arch: str) -> None:
    """Right-padded documents of unequal length: each is measured as if alone (eager, unpadded, per document)."""
    from gammalens.probe.accumulate import BatchLayout, ProfileAccumulator
    from gammalens.probe.backend import DistanceProbe, probing
    from tests.conftest import build_tiny

    lengths, n = [30, 21], 30
    model, eager = build_tiny(arch), build_tiny(arch, attn="eager")
    torch.manual_seed(2)
    ids = torch.randint(1000, 30000, (2, n))
    mask = (torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]).long()
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    obs = SinkObserver(L, H, 2, KS)
    probe = DistanceProbe(ProfileAccumulator(L, H, 2, n - 1, 8, 1), chunk_size=7, observers=[obs])
    with torch.no_grad():
        with probing(model, probe):
            probe.set_layout(BatchLayout(torch.zeros(2, dtype=torch.long), torch.tensor(lengths), torch.arange(2)))
            model(input_ids=ids, attention_mask=mask)
        refs = []
        for d, length in enumerate(lengths):
            att = eager(input_ids=ids[d:d + 1, :length], output_attentions=True).attentions
            refs.append([doc_reference(a[0].double().numpy(), arch != "bert", None) for a in att])
    check(obs.result(), stack(refs))


def test_sink_rate_is_fraction_of_heads_over_eps() -> None:
    from gammalens.sinks.measures import SinkMeasures

    first = np.array([[[0.1, 0.31, 0.5, 0.29]]])  # (N=1, L=1, H=4)
    m = SinkMeasures(ks=(1,), doc_mass=np.zeros((1, 1, 4, 1)), doc_queries=np.ones((1, 1, 1)), doc_first_sum=first,
                     doc_first_count=np.ones((1, 1)), doc_peak_share=first, doc_peak_position=np.zeros((1, 1, 4), int))
    assert m.sink_rate(0.3).tolist() == [0.5]


@pytest.mark.parametrize(("position", "prefix_len", "token", "text", "kind"), [
    (0, 1, 101, "[CLS]", "bos"), (1, 1, 2023, "the", "first_content"), (9, 1, 102, "[SEP]", "delimiter"),
    (5, 1, 1012, ".", "delimiter"), (5, 0, 198, "\n", "delimiter"), (5, 0, 1010, " ,", "delimiter"),
    (5, 1, 3899, " dog", "other"), (0, 0, 3899, "dog", "first_content"),
])
def test_token_kinds(position: int, prefix_len: int, token: int, text: str, kind: str) -> None:
    assert classify(position, token, prefix_len=prefix_len, special_ids={101, 102}, text=text) == kind


@pytest.mark.parametrize("bad", [{"massive_abs": 0}, {"massive_abs": -5}, {"massive_ratio": 0}, {"eps": 0},
                                 {"eps": 1.5}, {"ks": (0, 4)}, {"ablate": "half"}])
def test_sink_config_rejects_bad_values(bad: dict) -> None:
    from gammalens.errors import GammalensError

    with pytest.raises(GammalensError) as ex:
        SinkConfig(**bad)
    assert "\n" not in str(ex.value)


def test_correlation_against_scipy() -> None:
    from scipy import stats

    rng = np.random.default_rng(3)
    x = rng.random(40)
    y = 0.6 * x + 0.4 * rng.random(40)
    y[5] = y[6]  # a tie for the ranks
    c = correlate([*x, math.nan], [*y, 1.0])
    assert c.n == 40
    ref = stats.pearsonr(x, y)
    lo, hi = ref.confidence_interval(0.95)
    assert math.isclose(c.pearson, ref.statistic, abs_tol=1e-12)
    assert math.isclose(c.pearson_ci_low, lo, abs_tol=1e-9) and math.isclose(c.pearson_ci_high, hi, abs_tol=1e-9)
    rho = stats.spearmanr(x, y).statistic
    assert math.isclose(c.spearman, rho, abs_tol=1e-12)
    z, se = math.atanh(rho), math.sqrt((1 + rho**2 / 2) / 37)  # Bonett & Wright (2000)
    assert math.isclose(c.spearman_ci_low, math.tanh(z - 1.959963984540054 * se), abs_tol=1e-12)
    assert c.spearman_ci_low < rho < c.spearman_ci_high


def test_correlation_degenerate_inputs() -> None:
    assert math.isnan(correlate([1, 2, 3], [3, 1, 2]).pearson_ci_low)  # n < 4: no interval
    c = correlate([0.5] * 10, list(range(10)))  # a constant variable
    assert math.isnan(c.pearson) and "not enough" in str(c)


def test_docstring_examples() -> None:
    import doctest

    from gammalens.sinks import correlation, token_kinds

    for module in (correlation, token_kinds):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0
