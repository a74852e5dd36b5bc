"""γ-window KV plans against kvpress's presses at equal token budgets, on a real model (docs/kv.md).

Policies at compression ratios r (every budget counts sink and window tokens; the γ plans are made at the
sample's own context length): full cache; γ-window budget plan (water-filling on the run's measured tails);
γ-window ε plans (their own ratio); StreamingLLM (4 sinks + uniform window); SnapKV; ExpectedAttention;
AdaKV(ExpectedAttention); DuoAttention (on-the-fly scoring on local text, kvpress's sink 128 / recent 256);
TOVA; Knorm; Random. Tasks: (a) ``nll`` — mean NLL of the 256 tokens after a compressed context;
(b) ``passkey`` — a 5-digit key in filler at depths 0.1/0.5/0.9; (c) ``multikey`` — four named keys, one
asked (RULER-style). Query-agnostic (context compressed before the question, as kvpress does); with
``--query-aware`` the question is part of the compressed prefill.

Rows go to a CSV as each sample finishes; a rerun skips rows already there (resumable).

Run (needs the kvpress extra; CPU, 1 thread, ~30-40 min at the defaults)::

    OMP_NUM_THREADS=1 .venv-tf52/bin/python benchmarks/kv/head_to_head.py --run RUN_DIR --out docs/kv_head_to_head.csv

A larger run on a GPU: ``--device cuda --contexts 4096,8192,16384 --samples 20``.
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
)

FIELDS = ["task", "context", "sample", "depth", "query_aware", "policy", "ratio", "score", "kept_fraction",
          "held_bytes", "held_tokens", "kept_tokens", "full_tokens", "decode_s_per_token", "answer"]
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
NAMES = ["apple", "river", "candle", "violet", "tiger", "marble"]


def make_policies(ratios, context, plan_for, duo):
    from kvpress import (
        AdaKVPress,
        ExpectedAttentionPress,
        KnormPress,
        RandomPress,
        SnapKVPress,
        StreamingLLMPress,
        TOVAPress,
    )

    from gammalens.kv.press import GammaWindowPress

    out = [("full", 0.0, None)]
    for r in ratios:
        out += [("gamma_budget", r, GammaWindowPress.from_plan(plan_for(ratio=r, context=context))),
                ("streaming_llm", r, StreamingLLMPress(compression_ratio=r, n_sink=4)),
                ("snapkv", r, SnapKVPress(compression_ratio=r)),
                ("expected_attention", r, ExpectedAttentionPress(compression_ratio=r)),
                ("adakv_expected_attention", r, AdaKVPress(ExpectedAttentionPress(compression_ratio=r))),
                ("tova", r, TOVAPress(compression_ratio=r)),
                ("knorm", r, KnormPress(compression_ratio=r)),
                ("random", r, RandomPress(compression_ratio=r, seed=0))]
        head_ratio = r / max(1e-9, 1.0 - 384 / context)  # DuoAttention's ratio = streaming share × (1 − 384/n)
        if head_ratio <= 1.0:
            out.append(("duo_attention", r, duo(head_ratio)))
    for eps in (0.05, 0.2, 0.5):
        plan = plan_for(eps=eps, context=context)
        out.append((f"gamma_eps{eps:g}", round(plan.totals()["compression_ratio"], 4), GammaWindowPress.from_plan(plan)))
    return out


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


def run_sample(model, tok, writer, fh, task, n, sample, depth, qa, ctx_ids, question, answer, cont, policies):
    t0 = time.perf_counter()
    if qa:
        ctx_ids = torch.cat([ctx_ids, question[:, :-1]], 1)
        question = question[:, -1:]
    cap = capture_prefill(model, ctx_ids)
    n_ctx = cap.n
    for name, ratio, press in policies:
        cache = apply_press(model, press, cap)
        stats = cache_stats(model, cache, n_ctx)
        with exact_masking(model):
            if task == "nll":
                score, dt, text = continuation_nll(model, cache, n_ctx, cont), None, ""
            else:
                ids, dt = generate(model, cache, n_ctx, question, max_new_tokens=8, eos=tok.eos_token_id)
        if task != "nll":
            text = tok.decode(ids, skip_special_tokens=True)
            score = float(answer in text.replace(" ", ""))
        writer.writerow({"task": task, "context": n, "sample": sample, "depth": depth, "query_aware": int(qa),
                         "policy": name, "ratio": ratio, "score": score, "decode_s_per_token": dt,
                         "answer": text.strip()[:40], **stats})
    fh.flush()
    print(f"{task} n={n} sample={sample} depth={depth} qa={qa}: {time.perf_counter() - t0:.0f}s", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--run", required=True, help="run directory of this model (profiles for the γ plans)")
    ap.add_argument("--out", type=Path, default=Path("docs/kv_head_to_head.csv"))
    ap.add_argument("--contexts", default="1024,2048,4096", help="passkey contexts (tokens)")
    ap.add_argument("--nll-context", type=int, default=2048)
    ap.add_argument("--ratios", default="0.25,0.5,0.75,0.875")
    ap.add_argument("--samples", type=int, default=3, help="NLL windows and multikey samples")
    ap.add_argument("--tasks", default="passkey,nll,multikey,passkey_qa")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--duo-len", type=int, default=500, help="tokens per DuoAttention scoring text (kvpress: 500)")
    ap.add_argument("--passkey-depths", default="0.1,0.5,0.9")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    import kvpress  # noqa: F401  (patches attention for per-head masking, as in kvpress's own pipeline)

    from gammalens.corpus import load_windows
    from gammalens.kv.plan import PlanConfig, load_run, plan_from_tails
    from gammalens.model.load import load_model, resolve_model

    model, tok = load_model(resolve_model(args.model), device=args.device)
    facts, tails, manifest = load_run(args.run)
    plans = {}

    def plan_for(*, context, ratio=None, eps=0.05):
        key = (context, ratio, eps)
        if key not in plans:
            plans[key] = plan_from_tails(facts, tails, PlanConfig(eps=eps, ratio=ratio, context=context),
                                         run_id=manifest.get("run_id", ""))
        return plans[key]

    ratios = [float(x) for x in args.ratios.split(",")]
    duo_texts = [torch.tensor(w[None]) for w in load_windows("stdlib", tok, args.duo_len, 3, seed=99).input_ids]
    duo = local_duo_press(duo_scores(model, duo_texts, q_len=args.duo_len))
    depths = [float(x) for x in args.passkey_depths.split(",")]
    done = load_done(args.out)
    new = not args.out.is_file()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tasks = args.tasks.split(",")
    with args.out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        contexts = [int(x) for x in args.contexts.split(",")]
        passkey = {n: [("passkey", n, i, d, False) for i, d in enumerate(depths)] for n in contexts}
        # cheapest first, so a run cut short still covers every task
        jobs = passkey[contexts[0]]
        jobs += [("nll", args.nll_context, i, None, False) for i in range(args.samples)]
        jobs += [("multikey", args.nll_context, i, None, False) for i in range(args.samples)]
        jobs += [job for n in contexts[1:] for job in passkey[n]]
        if "passkey_qa" in tasks:
            jobs += [("passkey", contexts[0], i, d, True) for i, d in enumerate(depths)]
        nll_windows = None
        for task, n, sample, depth, qa in jobs:
            if (task not in tasks and not (qa and "passkey_qa" in tasks)) or \
                    (task, str(n), str(sample), str(int(qa))) in done:
                continue
            rng = random.Random(f"{task}-{n}-{sample}")
            cont = question = None
            answer = ""
            if task == "nll":
                if nll_windows is None:
                    nll_windows = load_windows("stdlib", tok, n + 256, args.samples, seed=4242).input_ids
                ids = torch.tensor(nll_windows[sample][None])
                ctx, cont = ids[:, :n], ids[:, n:]
            elif task == "passkey":
                answer = str(rng.randrange(10000, 99999))
                needle = f"The pass key is {answer}. Remember it. {answer} is the pass key."
                ctx = torch.tensor([needle_sample(tok, n, [needle], [depth], sample)])
                question = torch.tensor([tok.encode(" What is the pass key? The pass key is", add_special_tokens=False)])
            else:
                keys = {name: str(rng.randrange(10000, 99999)) for name in rng.sample(NAMES, 4)}
                needles = [f"The pass key for {k} is {v}." for k, v in keys.items()]
                where = [rng.uniform(0.05, 0.95) for _ in needles]
                ctx = torch.tensor([needle_sample(tok, n, needles, where, sample)])
                asked = rng.choice(list(keys))
                answer = keys[asked]
                question = torch.tensor([tok.encode(f" What is the pass key for {asked}? The pass key for {asked} is",
                                                    add_special_tokens=False)])
            policies = make_policies(ratios, ctx.shape[1] + (question.shape[1] - 1 if qa else 0), plan_for, duo)
            run_sample(model, tok, writer, fh, task, n, sample, depth, qa, ctx, question, answer, cont, policies)


if __name__ == "__main__":
    main()
