"""KV plan: water-filling allocation against brute force, tail curves, ε and budget plans, bad input."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from gammalens.kv.allocate import allocate, allocate_exact
from gammalens.kv.plan import KVPlan, PlanConfig, plan_from_tails, plan_run
from gammalens.kv.tails import HeadTails, KVError
from gammalens.theory.kv_window import d_f


def brute_force(losses, budget, w_min=1):
    """Minimum of Σ f_k(w_k) over every window vector with Σ w_k ≤ budget (enumeration)."""
    best, arg = np.inf, None
    for w in itertools.product(*(range(w_min, len(f)) for f in losses)):
        if sum(w) <= budget:
            v = sum(f[x] for f, x in zip(losses, w, strict=True))
            if v < best - 1e-15:
                best, arg = v, w
    return best, arg


def total(losses, w):
    return sum(f[x] for f, x in zip(losses, w, strict=True))


def random_curve(rng, n, convex):
    gains = rng.exponential(1.0, n)  # mass at distances 0..n-1
    if convex:
        gains = np.sort(gains)[::-1]
    cum = np.concatenate([[0.0], np.cumsum(gains)])
    return 1.0 - cum / cum[-1]  # f[w] = mass outside a window of w tokens, w = 0..n


@pytest.mark.parametrize("seed", range(12))
def test_greedy_is_optimal_on_convex_curves(seed):
    rng = np.random.default_rng(seed)
    losses = [random_curve(rng, int(rng.integers(3, 7)), convex=True) * rng.uniform(0.2, 2) for _ in range(3)]
    for budget in range(3, sum(len(f) - 1 for f in losses) + 1):
        best, _ = brute_force(losses, budget)
        w = allocate(losses, budget)
        assert w.sum() <= budget and w.min() >= 1
        assert total(losses, w) == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_exact_dp_matches_brute_force_and_greedy_is_within_one_hull_segment(seed):
    rng = np.random.default_rng(100 + seed)
    losses = [random_curve(rng, int(rng.integers(3, 7)), convex=False) for _ in range(3)]
    for budget in range(3, sum(len(f) - 1 for f in losses) + 1):
        best, _ = brute_force(losses, budget)
        exact = allocate_exact(losses, budget)
        assert exact.sum() <= budget
        assert total(losses, exact) == pytest.approx(best, abs=1e-12)
        greedy = total(losses, allocate(losses, budget))
        # the LP-relaxation bound: the greedy loses at most one head's whole curve drop over the optimum
        assert best - 1e-12 <= greedy <= best + max(f[1] - f[-1] for f in losses) + 1e-12


def synthetic_tails(gamma, sink=0.2, horizon=200, sink_tokens=1):
    """Exact power-law profiles a(d) = d^-γ (a(0) = 1) for every head."""
    gamma = np.asarray(gamma, dtype=np.float64)
    d = np.arange(horizon + 1, dtype=np.float64)
    d[0] = 1.0
    profile = d[None, None, :] ** -gamma[..., None]
    return HeadTails(profile=profile, gamma=gamma, anchor=np.ones_like(gamma), sink_mass=np.full(gamma.shape, sink),
                     sink_tokens=sink_tokens)


MODEL = {"id": "synthetic", "model_type": "llama", "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "head_dim": 8,
         "rope_theta": 1e4}


def test_extension_beyond_the_horizon_is_the_closed_form_d_f():
    """A pure power law measured to H = 200 and extended: the ε window at T equals the theory's D_f + 1."""
    gamma = [[0.6, 1.3, 1.8, 0.9], [1.1, 2.2, 0.4, 1.5]]
    tails = synthetic_tails(gamma)
    for context in (150, 2001, 30001):
        n = context - 1
        tail = tails.tail(context)
        for layer, head in np.ndindex(2, 4):
            w = int(np.argmax(tail[layer, head] <= 0.05 + 1e-12))
            # distances 1..n−1 carry the law; distance 0 carries a(0) = 1 as well (the query's own key)
            dense = np.arange(1, n, dtype=np.float64) ** -gamma[layer][head]
            cum = np.cumsum(np.concatenate([[1.0], dense]))
            brute = int(np.searchsorted(cum, 0.95 * cum[-1] - 1e-12 * cum[-1])) + 1
            assert w == brute, (context, layer, head)


def test_window_is_theory_d_f_plus_one_without_self_mass():
    """With no mass at distance 0 the ε window keeps distances 0..D_f: w − 1 = d_f(γ, n − 1, ε)."""
    gamma = np.array([[0.6, 1.3, 1.8, 0.9]])
    tails = synthetic_tails(gamma)
    tails.profile[..., 0] = 0.0
    for context in (120, 5001, 100001):
        tail = tails.tail(context)
        for head in range(4):
            w = int(np.argmax(tail[0, head] <= 0.05 + 1e-12))
            assert w - 1 == d_f(float(gamma[0, head]), context - 2, 0.05), (context, head)


def test_eps_plan_takes_the_max_over_each_kv_group():
    tails = synthetic_tails([[0.6, 1.3, 1.8, 0.9], [1.1, 2.2, 0.4, 1.5]])
    plan = plan_from_tails(MODEL, tails, PlanConfig(eps=0.1, context=4000))
    tail = tails.tail(4000)
    per_q = np.array([[int(np.argmax(tail[layer, h] <= 0.1 + 1e-12)) for h in range(4)] for layer in range(2)])
    assert plan.window.tolist() == per_q.reshape(2, 2, 2).max(-1).tolist()
    assert plan.tail.max() <= 0.1 + 1e-12


def test_budget_plan_spends_the_budget_and_beats_uniform_windows():
    tails = synthetic_tails([[0.6, 1.3, 1.8, 0.9], [1.1, 2.2, 0.4, 1.5]])
    context = 2000
    plan = plan_from_tails(MODEL, tails, PlanConfig(ratio=0.75, context=context))
    t = plan.totals()
    assert t["tokens"] <= 0.25 * 4 * context and t["tokens"] >= 0.25 * 4 * context - 4
    assert t["bytes"] == t["tokens"] * 2 * 8 * 2  # keys + values, head_dim 8, bf16
    uniform = np.full((2, 2), 0.25 * context - 1, dtype=np.int64)
    lost = tails.lost(context)
    lost_uniform = np.take_along_axis(lost, np.repeat(uniform, 2, 1)[..., None], -1).sum()
    assert plan.lost.sum() < lost_uniform


def test_plan_json_round_trip(tmp_path):
    tails = synthetic_tails([[0.6, 1.3, 1.8, 0.9], [1.1, 2.2, 0.4, 1.5]])
    plan = plan_from_tails(MODEL, tails, PlanConfig(eps=0.05, context=1000), run_id="r")
    path = plan.save(tmp_path / "plan.json")
    back = KVPlan.load(path)
    assert back.window.tolist() == plan.window.tolist() and back.totals() == plan.totals()
    assert json.loads(path.read_text())["heads"][0]["name"] == "layers.0.kv_heads.0"


@pytest.mark.parametrize("kwargs, match", [
    ({"eps": 0.0}, "strictly between 0 and 1"), ({"eps": 1.5}, "strictly between 0 and 1"),
    ({"ratio": 1.0}, "ratio"), ({"budget": 10, "ratio": 0.5}, "not both"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(KVError, match=match):
        PlanConfig(**kwargs)


def test_budget_below_the_sinks_is_refused():
    tails = synthetic_tails([[0.6, 1.3, 1.8, 0.9], [1.1, 2.2, 0.4, 1.5]], sink_tokens=4)
    with pytest.raises(KVError, match="smaller than the sinks"):
        plan_from_tails(MODEL, tails, PlanConfig(budget=10, context=1000))


def test_plan_of_a_non_rope_run_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"model": {"id": "minilm", "arch": {
        "model_type": "bert", "position_encoding": "learned", "causal": False, "n_layers": 6, "n_heads": 12,
        "n_kv_heads": 12, "head_dim": 32}}}))
    (run / "fits.csv").write_text("name\n")
    with pytest.raises(KVError, match="without RoPE"):
        plan_run(run)


def run_cli(args, capsys):
    from gammalens.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_cli_plan_table_and_json(tmp_path, capsys):
    from tests.run_fixtures import write_run

    run = write_run(tmp_path, context=64)
    code, out, err = run_cli(["kv", "plan", str(run), "--ratio", "0.5", "--context", "1000", "--json",
                              str(tmp_path / "plan.json")], capsys)
    assert code == 0, err
    assert "compression 50.0%" in out and len([ln for ln in out.splitlines() if "│" in ln]) == 8
    plan = KVPlan.load(tmp_path / "plan.json")
    assert plan.mode == "budget" and plan.context == 1000 and plan.window.shape == (2, 4)
    assert plan.totals()["tokens"] <= 0.5 * 2 * 4 * 1000


@pytest.mark.parametrize("args, needle", [
    (["--eps", "1.2"], "--eps must lie strictly between 0 and 1"),
    (["--budget", "3", "--context", "100"], "smaller than the sinks"),
    (["--ratio", "0.5", "--budget", "100"], "not both"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, needle):
    from tests.run_fixtures import write_run

    run = write_run(tmp_path, context=64)
    code, _, err = run_cli(["kv", "plan", str(run), *args], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_cli_refuses_a_run_without_rope(tmp_path, capsys):
    from tests.run_fixtures import write_run

    run = write_run(tmp_path, context=64, rope_theta=None)
    code, _, err = run_cli(["kv", "plan", str(run)], capsys)
    assert code == 2 and "without RoPE" in err
