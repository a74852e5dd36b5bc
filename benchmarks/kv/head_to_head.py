"""γ-window and hybrid KV caches against kvpress's presses at equal budgets, on real models (docs/kv.md).

Policies at compression ratios r (every budget counts sink and window tokens; plans are made at the sample's
own context length):

- ``full``; ``gamma_budget`` (γ windows by water-filling on the run's measured tails) and ``gamma_eps0.05`` /
  ``gamma_eps0.2`` (ε plans, their own ratio); ``hybrid_s<share>`` (the measured retrieval heads keep every key,
  the rest γ windows; ``gammalens kv plan --policy hybrid``) and its ablations ``hybrid_far_s<share>`` (heads
  ranked by far mass) and ``hybrid_random_s<share>`` (at random). All γ and hybrid policies are scored **on a
  GammaWindowCache**: the object scored is the object whose bytes are reported (its tensors);
- ``gamma_ea`` / ``hybrid_ea_s<share>``: the same per-head budgets (γ water-filling; retrieval heads the whole
  context) filled with the keys kvpress's ExpectedAttention scores highest instead of the most recent ones, held
  in a **SelectedCache** (gammalens.kv.selected; real storage, later tokens in a ring of W_h). Against
  ``expected_attention`` (the same score, the same budget per head) they isolate what the measured allocation adds;
  ``hybrid_ea_uniform_s<share>`` (with the ablations) splits the non-retrieval heads' budget equally instead;
- kvpress: StreamingLLM (4 sinks), SnapKV, ExpectedAttention, AdaKV(ExpectedAttention), DuoAttention (head
  scores computed on the fly on local text, kvpress's sink 128 / recent 256), TOVA, Knorm, Random. AdaKV and
  DuoAttention mask per head and hold the full cache; their bytes are what they hold.

Tasks: ``nll`` — mean NLL of the 256 tokens after a compressed context of ``--nll-context`` tokens;
``passkey`` — a 5-digit key in filler at depths 0.1/0.3/0.5/0.7/0.9 × ``--passkey-seeds`` seeds per context;
``multikey`` — two named keys, each stated twice, one asked (RULER-style, easy enough for a 135M model).
Query-agnostic (context compressed before the question, as kvpress does); ``passkey_qa`` — the question is part
of the compressed prefill (query-aware: SnapKV's setting).

Every kvpress press is applied to one captured prefill (harness.py); every γ / hybrid cache is filled from the
same prefill. Rows go to the CSV as each sample finishes; a rerun skips samples already there (resumable). Jobs
are interleaved (seed by seed over every task and context), so a run cut short still covers every cell.

Run (needs the kvpress extra; CPU, 1 thread; wall times in docs/kv.md)::

    OMP_NUM_THREADS=1 .venv-tf52/bin/python benchmarks/kv/head_to_head.py --model smollm2 --run RUN_DIR \
        --out docs/kv_hybrid_smollm2.csv

A larger run on a GPU: ``--device cuda --contexts 4096,8192,16384 --passkey-seeds 8``.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from harness import (
    apply_press,
    cache_stats,
    capture_prefill,
    continuation_nll,
    duo_scores,
    exact_masking,
    generate,
    selected_cache,
    window_cache,
    window_cache_stats,
)

FIELDS = ["model", "task", "context", "sample", "depth", "query_aware", "policy", "ratio", "score",
          "kept_fraction", "held_bytes", "held_tokens", "kept_tokens", "full_tokens", "decode_s_per_token",
          "retrieval_heads", "answer"]
DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NAMES = ["apple", "river", "candle", "violet", "tiger", "marble"]


def make_policies(ratios, context, plan_for, duo, shares, ablate, selected=(), only=None):
    """(name, ratio, kind, object): kind ``'press'`` (a kvpress press, None for full), ``'cache'`` (a KVPlan) or
    ``'selected'`` ((KVPlan, scorer press): the plan's per-head budgets filled with the best-scored keys).
    ``only``: names to keep (``full`` is always kept: every Δ is paired with it)."""
    from kvpress import (
        AdaKVPress,
        ExpectedAttentionPress,
        KnormPress,
        RandomPress,
        SnapKVPress,
        StreamingLLMPress,
        TOVAPress,
    )

    out = [("full", 0.0, "press", None)]
    for r in ratios:
        out.append(("gamma_budget", r, "cache", plan_for(ratio=r, context=context)))
        for share in selected:  # γ / hybrid budgets per head, filled by ExpectedAttention's score, not by recency
            name = "gamma_ea" if share == 0 else f"hybrid_ea_s{share:g}"
            plan = plan_for(ratio=r, context=context) if share == 0 else plan_for(ratio=r, context=context, share=share)
            out.append((name, r, "selected", (plan, ExpectedAttentionPress(compression_ratio=r))))
            if ablate and share > 0 and share == selected[-1]:  # the same, the non-retrieval heads split equally
                out.append((f"hybrid_ea_uniform_s{share:g}", r, "selected_uniform",
                            (plan, ExpectedAttentionPress(compression_ratio=r))))
        for share in shares:
            out.append((f"hybrid_s{share:g}", r, "cache", plan_for(ratio=r, context=context, share=share)))
        if ablate:
            for by in ("far_mass", "random"):
                tag = "far" if by == "far_mass" else by
                out.append((f"hybrid_{tag}_s{shares[0]:g}", r, "cache",
                            plan_for(ratio=r, context=context, share=shares[0], by=by)))
        out += [("streaming_llm", r, "press", StreamingLLMPress(compression_ratio=r, n_sink=4)),
                ("snapkv", r, "press", SnapKVPress(compression_ratio=r)),
                ("expected_attention", r, "press", ExpectedAttentionPress(compression_ratio=r)),
                ("adakv_expected_attention", r, "press", AdaKVPress(ExpectedAttentionPress(compression_ratio=r))),
                ("tova", r, "press", TOVAPress(compression_ratio=r)),
                ("knorm", r, "press", KnormPress(compression_ratio=r)),
                ("random", r, "press", RandomPress(compression_ratio=r, seed=0))]
        head_ratio = r / max(1e-9, 1.0 - 384 / context)  # DuoAttention's ratio = streaming share × (1 − 384/n)
        if head_ratio <= 1.0:
            out.append(("duo_attention", r, "press", duo(head_ratio)))
    for eps in (0.05, 0.2):
        plan = plan_for(eps=eps, context=context)
        out.append((f"gamma_eps{eps:g}", round(plan.totals()["compression_ratio"], 4), "cache", plan))
    return [p for p in out if only is None or p[0] == "full" or p[0] in only]


def local_duo_press(scores):
    from kvpress import DuoAttentionPress

    @dataclass
    class LocalDuoAttentionPress(DuoAttentionPress):
        """kvpress DuoAttention with head scores computed on local text (the Hub's BookSum is unreachable)."""

        def post_init_from_model(self, model):
            self.sink_size, self.recent_size = 128, 256
            n_pruned = round(scores.size * self.head_compression_ratio)
            self.streaming_mask = torch.zeros(scores.shape, dtype=bool)
            if n_pruned > 0:
                idx = np.argsort(scores, axis=None)[:n_pruned]
                self.streaming_mask[np.unravel_index(idx, scores.shape)] = True

    return lambda head_ratio: LocalDuoAttentionPress(head_compression_ratio=head_ratio)


def needle_sample(tok, n, needles, depths, seed):
    """Token ids of filler with ``needles`` (texts) inserted at token depths, n tokens in all (BOS first)."""
    fill = tok.encode(FILLER, add_special_tokens=False)
    parts = [tok.encode(" " + s + " ", add_special_tokens=False) for s in needles]
    body = n - 1 - sum(len(p) for p in parts)
    rng = random.Random(seed)
    offset = rng.randrange(len(fill))
    filler = [fill[(offset + i) % len(fill)] for i in range(body)]
    ids, last = [], 0
    for p, dpt in sorted(zip(parts, depths, strict=True), key=lambda x: x[1]):
        cut = int(dpt * body)
        ids += filler[last:cut] + p
        last = cut
    ids += filler[last:]
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    return [bos, *ids]


def load_done(path):
    if not path.is_file():
        return set()
    with path.open() as fh:
        return {(r["task"], r["context"], r["sample"], r["query_aware"]) for r in csv.DictReader(fh)}


def run_sample(model, tok, writer, fh, meta, ctx_ids, question, answer, cont, policies, recent=0):
    from gammalens.kv.attention import gamma_window_attention

    t0 = time.perf_counter()
    task, qa = meta["task"], meta["query_aware"]
    if qa:
        ctx_ids = torch.cat([ctx_ids, question[:, :-1]], 1)
        question = question[:, -1:]
    cap = capture_prefill(model, ctx_ids)
    n_ctx = cap.n
    rows = []  # written together once the sample is done: a run killed mid-sample leaves no partial instance
    for name, ratio, kind, obj in policies:
        if kind in ("cache", "selected", "selected_uniform"):
            plan = obj if kind == "cache" else obj[0]
            cache = window_cache(model, plan, cap) if kind == "cache" else \
                selected_cache(model, plan, cap, obj[1], recent=recent, uniform=kind == "selected_uniform")
            stats = window_cache_stats(cache, n_ctx)
            serve = gamma_window_attention(model, cache)
            heads = plan.totals()["retrieval_heads"]
        else:
            cache = apply_press(model, obj, cap)
            stats = cache_stats(model, cache, n_ctx)
            serve = exact_masking(model)
            heads = None
        with serve:
            if task == "nll":
                score, dt, text = continuation_nll(model, cache, n_ctx, cont), None, ""
            else:
                ids, dt = generate(model, cache, n_ctx, question, max_new_tokens=8, eos=tok.eos_token_id,
                                   done=lambda out: answer in tok.decode(out, skip_special_tokens=True).replace(" ", ""))
        if task != "nll":
            text = tok.decode(ids, skip_special_tokens=True)
            score = float(answer in text.replace(" ", ""))
        rows.append({**meta, "policy": name, "ratio": ratio, "score": score, "decode_s_per_token": dt,
                     "retrieval_heads": heads, "answer": text.strip()[:40], **stats})
    writer.writerows(rows)
    fh.flush()
    print(f"{task} n={meta['context']} sample={meta['sample']} depth={meta['depth']} qa={qa}: "
          f"{time.perf_counter() - t0:.0f}s", flush=True)


def jobs_for(args, contexts):
    """(task, n, sample, depth, query_aware) in rounds: round r holds passkey seed r at every context and depth
    and an even share of the NLL windows and multikey samples, so a run cut short covers every cell alike."""
    tasks = args.tasks.split(",")
    rounds = max(1, args.passkey_seeds if "passkey" in tasks else 0, args.qa_seeds if "passkey_qa" in tasks else 0)
    out = []
    for r in range(rounds):
        if "nll" in tasks:
            out += [("nll", args.nll_context, i, None, False) for i in range(args.nll_samples)
                    if i * rounds // args.nll_samples == r]
        if "multikey" in tasks:
            out += [("multikey", args.multikey_context, i, None, False) for i in range(args.multikey_samples)
                    if i * rounds // args.multikey_samples == r]
        for n in contexts:
            if "passkey" in tasks and r < args.passkey_seeds:
                out += [("passkey", n, r * len(args.depths) + i, d, False) for i, d in enumerate(args.depths)]
        if "passkey_qa" in tasks and r < args.qa_seeds:
            out += [("passkey", contexts[0], r * len(args.depths) + i, d, True) for i, d in enumerate(args.depths)]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--run", required=True, help="run directory of this model, measured with --retrieval")
    ap.add_argument("--out", type=Path, default=Path("docs/kv_hybrid_smollm2.csv"))
    ap.add_argument("--contexts", default="1024,2048,4096", help="passkey contexts (tokens)")
    ap.add_argument("--nll-context", type=int, default=2048)
    ap.add_argument("--nll-samples", type=int, default=30, help="continuation windows")
    ap.add_argument("--multikey-context", type=int, default=2048)
    ap.add_argument("--multikey-samples", type=int, default=20)
    ap.add_argument("--passkey-seeds", type=int, default=4, help="seeds per context; × the depths = samples")
    ap.add_argument("--qa-seeds", type=int, default=4, help="query-aware passkey seeds (first context)")
    ap.add_argument("--passkey-depths", default=",".join(f"{d:g}" for d in DEPTHS))
    ap.add_argument("--ratios", default="0.5,0.75")
    ap.add_argument("--shares", default="0.5,0.8", help="hybrid: shares of the budget offered to retrieval heads")
    ap.add_argument("--no-ablation", action="store_true", help="skip hybrid ranked by far mass and at random")
    ap.add_argument("--selected-shares", default="0,0.5", help="gamma_ea / hybrid_ea_s<share>: the γ (share 0) or "
                    "hybrid plan's per-head budgets filled by ExpectedAttention's score ('' for none)")
    ap.add_argument("--recent", type=int, default=0, help="gamma_ea / hybrid_ea: last tokens every head keeps first")
    ap.add_argument("--policies", default="", help="comma list: run only these policies (and full); '' for all")
    ap.add_argument("--tasks", default="passkey,nll,multikey,passkey_qa")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--duo-len", type=int, default=500, help="tokens per DuoAttention scoring text (kvpress: 500)")
    ap.add_argument("--reverse", action="store_true", help="run the jobs last first: a second process on another "
                    "--out meets the first in the middle (summarize.py drops the few duplicates)")
    args = ap.parse_args(argv)
    args.depths = [float(x) for x in args.passkey_depths.split(",")]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    import kvpress  # noqa: F401  (patches attention for per-head masking, as in kvpress's own pipeline)

    from gammalens.corpus import load_windows
    from gammalens.kv.plan import PlanConfig, load_retrieval, load_run, plan_from_tails
    from gammalens.model.load import load_model, resolve_model

    model, tok = load_model(resolve_model(args.model), device=args.device)
    facts, tails, manifest = load_run(args.run)
    retrieval = load_retrieval(args.run, facts)
    shares = [float(x) for x in args.shares.split(",")] if retrieval is not None else []
    if retrieval is None:
        print(f"{args.run} has no retrieval measurement: the hybrid policies are left out", flush=True)
    plans = {}

    def plan_for(*, context, ratio=None, eps=0.05, share=None, by="score"):
        key = (context, ratio, eps, share, by)
        if key not in plans:
            cfg = PlanConfig(eps=eps, ratio=ratio, context=context, policy="gamma" if share is None else "hybrid",
                             retrieval_share=share or 0.0, retrieval_by=by)
            plans[key] = plan_from_tails(facts, tails, cfg, run_id=manifest.get("run_id", ""), retrieval=retrieval)
        return plans[key]

    ratios = [float(x) for x in args.ratios.split(",")]
    selected = [float(x) for x in args.selected_shares.split(",") if x] if retrieval is not None else \
        [float(x) for x in args.selected_shares.split(",") if x and float(x) == 0]
    only = set(args.policies.split(",")) if args.policies else None
    duo_texts = [torch.tensor(w[None]) for w in load_windows("stdlib", tok, args.duo_len, 3, seed=99).input_ids]
    duo = local_duo_press(duo_scores(model, duo_texts, q_len=args.duo_len))
    done = load_done(args.out)
    new = not args.out.is_file()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    contexts = [int(x) for x in args.contexts.split(",")]
    with args.out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        nll_windows = None
        jobs = jobs_for(args, contexts)
        for task, n, sample, depth, qa in reversed(jobs) if args.reverse else jobs:
            if (task, str(n), str(sample), str(int(qa))) in done:
                continue
            rng = random.Random(f"{task}-{n}-{sample}")
            cont = question = None
            answer = ""
            if task == "nll":
                if nll_windows is None:
                    nll_windows = load_windows("stdlib", tok, n + 256, args.nll_samples, seed=4242).input_ids
                ids = torch.tensor(nll_windows[sample][None])
                ctx, cont = ids[:, :n], ids[:, n:]
            elif task == "passkey":
                answer = str(rng.randrange(10000, 99999))
                needle = f"The pass key is {answer}. Remember it. {answer} is the pass key."
                ctx = torch.tensor([needle_sample(tok, n, [needle], [depth], sample)])
                question = torch.tensor([tok.encode(" What is the pass key? The pass key is", add_special_tokens=False)])
            else:
                keys = {name: str(rng.randrange(10000, 99999)) for name in rng.sample(NAMES, 2)}
                needles = [f"The pass key for {k} is {v}. Remember: the pass key for {k} is {v}."
                           for k, v in keys.items()]
                where = [rng.uniform(0.1, 0.45), rng.uniform(0.55, 0.9)]
                ctx = torch.tensor([needle_sample(tok, n, needles, where, sample)])
                asked = rng.choice(list(keys))
                answer = keys[asked]
                question = torch.tensor([tok.encode(f" What is the pass key for {asked}? The pass key for {asked} is",
                                                    add_special_tokens=False)])
            policies = make_policies(ratios, ctx.shape[1] + (question.shape[1] - 1 if qa else 0), plan_for, duo,
                                     shares, not args.no_ablation and bool(shares), selected, only)
            meta = {"model": args.model, "task": task, "context": n, "sample": sample, "depth": depth,
                    "query_aware": int(qa)}
            run_sample(model, tok, writer, fh, meta, ctx, question, answer, cont, policies, recent=args.recent)


if __name__ == "__main__":
    main()
