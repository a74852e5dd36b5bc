"""Benchmark the measuring probe against a plain sdpa forward and eager ``output_attentions=True``.

Three forwards of the same tiny random-init Llama on CPU, batch 1, per context:

- ``sdpa``      the plain forward (what the model costs without measuring);
- ``measuring`` the forward with :class:`~gammalens.probe.backend.DistanceProbe` installed;
- ``eager``     the field's usual way: eager attention with ``output_attentions=True``.

Times are medians over ``--repeats`` forwards after a warm-up, the three variants interleaved in
one process so that machine noise hits them alike. Peak extra memory is measured per (variant,
context) in a fresh subprocess: peak RSS during one forward minus the RSS just before it, after
the model is built (see ``_peak_rss_growth`` for how the peak is read).

Targets (issue 2): measuring ≤ 3× sdpa at 8192; measuring's extra memory ≤ 10% of eager's.

    .venv/bin/python benchmarks/bench_probe.py                        # the table
    .venv/bin/python benchmarks/bench_probe.py --sweep-chunks 256 512 1024 2048 0   # 0 = auto
    .venv/bin/python benchmarks/bench_probe.py --contexts 8192 --profile            # where time goes
    .venv/bin/python benchmarks/bench_probe.py --baseline-rev c2df83d --no-memory  # vs the probe at a git revision

With ``--baseline-rev REV`` a fourth variant, ``baseline``, runs the probe modules (``probe/backend.py``,
``probe/accumulate.py``) as they were at git revision REV, in the same process, interleaved with the
others: before/after ratios from one run.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

VARIANTS = ("sdpa", "measuring", "eager")
MiB = 2**20


# ---------------------------------------------------------------------------------------------- model

def build_model(args: argparse.Namespace):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(args.seed)
    config = LlamaConfig(
        hidden_size=args.hidden, intermediate_size=2 * args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, vocab_size=args.vocab,
        max_position_embeddings=max(8192, *args.contexts, args.sweep_context), attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config).eval()


def auto_chunk(args: argparse.Namespace, n: int) -> int:
    """The chunk ``DistanceProbe(chunk_size=None)`` picks for this model at context ``n`` (batch 1)."""
    from gammalens.probe.backend import DistanceProbe

    return DistanceProbe(accumulator=None).chunk_for(1, args.heads, n)


def baseline_probe(rev: str) -> tuple:
    """(accumulate, backend) modules of the probe at git revision ``rev``, imported from a temporary package."""
    import importlib
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="gammalens_baseline_"))
    pkg = root / "gammalens_baseline_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    repo = Path(__file__).resolve().parents[1]
    for name in ("accumulate", "backend"):
        src = subprocess.run(["git", "show", f"{rev}:src/gammalens/probe/{name}.py"], cwd=repo, check=True,
                             capture_output=True, text=True).stdout
        (pkg / f"{name}.py").write_text(src.replace("gammalens.probe.accumulate", "gammalens_baseline_probe.accumulate"))
    sys.path.insert(0, str(root))
    return (importlib.import_module("gammalens_baseline_probe.accumulate"),
            importlib.import_module("gammalens_baseline_probe.backend"))


def forward(variant: str, model, ids: torch.Tensor, args: argparse.Namespace, chunk: int | None) -> None:
    """One forward of ``variant``; the measuring one builds its accumulator inside (part of its cost)."""
    from gammalens.probe import accumulate, backend

    if variant == "baseline":
        accumulate, backend = args.baseline  # the probe at --baseline-rev
    BatchLayout, ProfileAccumulator = accumulate.BatchLayout, accumulate.ProfileAccumulator
    DistanceProbe, probing = backend.DistanceProbe, backend.probing

    B, n = ids.shape
    mask = torch.ones_like(ids)  # as gammalens.measure passes it
    with torch.inference_mode():
        if variant == "sdpa":
            model.set_attn_implementation("sdpa")
            model(input_ids=ids, attention_mask=mask, use_cache=False)
        elif variant == "eager":
            model.set_attn_implementation("eager")
            out = model(input_ids=ids, attention_mask=mask, use_cache=False, output_attentions=True)
            assert out.attentions is not None and out.attentions[0].shape[-1] == n
        else:
            model.set_attn_implementation("sdpa")
            acc = ProfileAccumulator(args.layers, args.heads, n_docs=B, max_distance=n - 1, cs_horizon=n // 2,
                                     sink_tokens=1)
            probe = DistanceProbe(acc, chunk_size=chunk) if variant == "baseline" else DistanceProbe(
                acc, chunk_size=chunk, backend="chunked")
            with probing(model, probe):
                probe.set_layout(BatchLayout.full(B, n))
                model(input_ids=ids, attention_mask=mask, use_cache=False)


def make_ids(args: argparse.Namespace, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(args.seed + n)
    return torch.randint(0, args.vocab, (1, n), generator=g)  # (B=1, n)


# --------------------------------------------------------------------------------------------- timing

def time_variants(model, args: argparse.Namespace, n: int, chunks: dict[str, int | None]) -> dict[str, list[float]]:
    """Seconds per forward of each variant in ``chunks`` (name → probe chunk), repeats interleaved."""
    ids = make_ids(args, n)
    names = list(chunks)
    samples: dict[str, list[float]] = defaultdict(list)
    for name in names:
        for _ in range(args.warmup):
            forward(_variant(name), model, ids, args, chunks[name])
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate who goes first
            t0 = time.perf_counter()
            forward(_variant(name), model, ids, args, chunks[name])
            samples[name].append(time.perf_counter() - t0)
    return dict(samples)


def _variant(name: str) -> str:
    return name.split(":")[0]  # "measuring:512" → "measuring"


# --------------------------------------------------------------------------------------------- memory

def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 — both must exist (glibc only)
        return libc
    except (OSError, AttributeError):
        return None


def _peak_rss_growth(fn) -> tuple[float, str]:
    """MiB of peak RSS during ``fn()`` above the RSS just before it, and the method used.

    On Linux, writing 5 to /proc/self/clear_refs resets the kernel's peak-RSS mark (VmHWM) to the
    current RSS, so the peak belongs to ``fn`` alone. Elsewhere ``ru_maxrss`` is the process-lifetime
    peak, so import and model-building peaks can hide part of a small forward's growth.

    With glibc the heap is first trimmed and every allocation above 128 KiB is sent to its own mmap
    for the duration of ``fn``: freed heap pages that are still resident (a model conversion leaves
    gigabytes of them, and glibc's dynamic mmap threshold rises to 32 MiB after large frees) would
    otherwise absorb ``fn``'s tensors without raising RSS, and the growth would read too low (it read
    0 MiB for every variant after a GGUF conversion). The threshold is set back to 32 MiB afterwards.
    """
    libc = _glibc()
    try:
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
            libc.malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmRSS")
        if _status_kib("VmHWM") > before + 1024:
            raise OSError("peak mark was not reset")
        fn()
        method = "VmHWM after clear_refs=5" + (", malloc_trim + mmap threshold 128 KiB" if libc else "")
        return (_status_kib("VmHWM") - before) / 1024, method
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return (after - before) / 1024, "ru_maxrss delta"  # KiB on Linux
    finally:
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)


def memory_worker(args: argparse.Namespace) -> None:
    """Subprocess body: build the model, warm up on a short input, measure one forward, print JSON."""
    torch.set_num_threads(args.threads)
    variant, n, chunk = args.memory_worker[0], int(args.memory_worker[1]), int(args.memory_worker[2]) or None
    model = build_model(args)
    ids = make_ids(args, n)
    forward(variant, model, make_ids(args, 32), args, chunk)  # load lazy kernels / thread pools first
    mib, method = _peak_rss_growth(lambda: forward(variant, model, ids, args, chunk))
    print(json.dumps({"extra_mib": mib, "method": method}))


def measure_memory(args: argparse.Namespace, variant: str, n: int, chunk: int | None) -> tuple[float, str]:
    cmd = [sys.executable, __file__, "--memory-worker", variant, str(n), str(chunk or 0), *_model_flags(args)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"memory worker {variant}@{n} failed:\n{res.stderr[-2000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return out["extra_mib"], out["method"]


def _model_flags(args: argparse.Namespace) -> list[str]:
    return ["--layers", str(args.layers), "--heads", str(args.heads), "--kv-heads", str(args.kv_heads),
            "--hidden", str(args.hidden), "--vocab", str(args.vocab), "--seed", str(args.seed),
            "--threads", str(args.threads), "--sweep-context", str(args.sweep_context),
            "--contexts", *map(str, args.contexts)]


# -------------------------------------------------------------------------------------------- profile

def profile_measuring(model, args: argparse.Namespace, n: int) -> None:
    """Self CPU time of one measuring forward, by (probe function, aten op), from torch.profiler stacks."""
    from torch.profiler import ProfilerActivity, profile

    ids = make_ids(args, n)
    forward("measuring", model, ids, args, args.chunk_size)  # warm-up
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], with_stack=True) as prof:
        forward("measuring", model, ids, args, args.chunk_size)
    wall = time.perf_counter() - t0
    by_site: dict[tuple[str, str], float] = defaultdict(float)
    for e in prof.events():
        if e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::"):
            continue  # count each op once, at the outermost aten op
        if not e.name.startswith("aten::"):
            continue
        by_site[(_probe_frame(e), e.name)] += e.cpu_time_total / 1e6
    total = sum(by_site.values())
    print(f"\nprofile of one measuring forward at n={n} (wall {wall:.3f} s under the profiler, "
          f"{total:.3f} s in aten ops; outermost ops only)\n")
    print(f"| {'where':<44} | {'op':<24} | {'s':>7} | {'%':>5} |")
    print(f"|{'-' * 46}|{'-' * 26}|{'-' * 9}|{'-' * 7}|")
    for (site, op), s in sorted(by_site.items(), key=lambda kv: -kv[1])[: args.profile_rows]:
        print(f"| {site:<44} | {op:<24} | {s:7.3f} | {100 * s / total:5.1f} |")


def _probe_frame(event) -> str:
    """The innermost gammalens Python frame above a profiler event, e.g. ``accumulate.py(190): _diagonal_sums``.

    With ``with_stack=True`` the Python tracer records each call as an event, so the frames are the
    event's ``cpu_parent`` chain.
    """
    e = event.cpu_parent
    while e is not None:
        if "gammalens/" in e.name:
            return e.name.split("/")[-1]
        e = e.cpu_parent
    return "model (outside the probe)"


# ---------------------------------------------------------------------------------------------- main

def environment(args: argparse.Namespace, mem_method: str | None) -> str:
    import transformers

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return "\n".join([
        f"date        {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"cpu         {cpu}; {os.cpu_count()} logical cores visible; torch threads {torch.get_num_threads()}",
        f"versions    python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}",
        f"model       LlamaForCausalLM random init: hidden {args.hidden}, layers {args.layers}, heads {args.heads}, "
        f"kv heads {args.kv_heads}, head dim {args.hidden // args.heads}, vocab {args.vocab}; batch 1, fp32",
        f"timing      median of {args.repeats} forwards after {args.warmup} warm-up, variants interleaved",
        f"memory      {mem_method or 'not measured'}; fresh subprocess per (variant, context)",
    ])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contexts", type=int, nargs="+", default=[512, 2048, 8192], help="sequence lengths")
    p.add_argument("--repeats", type=int, default=5, help="timed forwards per variant (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed forwards per variant first")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--vocab", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="torch.set_num_threads (default: the cores this process may use)")
    p.add_argument("--chunk-size", type=int, default=None, help="probe chunk for the table (default: auto)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--sweep-chunks", type=int, nargs="*", default=None,
                   help="instead of the table: measuring time and memory per chunk size (0 = auto)")
    p.add_argument("--sweep-context", type=int, default=8192, help="context of --sweep-chunks")
    p.add_argument("--profile", action="store_true",
                   help="instead of the table: profile one measuring forward at the last --contexts")
    p.add_argument("--profile-rows", type=int, default=25)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--baseline-rev", default=None,
                   help="also time the probe as it was at this git revision (variant 'baseline'; no memory)")
    p.add_argument("--memory-worker", nargs=3, metavar=("VARIANT", "N", "CHUNK"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_worker:
        return memory_worker(args)

    torch.set_num_threads(args.threads)
    args.baseline = baseline_probe(args.baseline_rev) if args.baseline_rev else None
    model = build_model(args)
    if args.profile:
        print(environment(args, None))
        return profile_measuring(model, args, args.contexts[-1])
    rows = run_sweep(model, args) if args.sweep_chunks is not None else run_table(model, args)
    print(environment(args, rows[0].get("mem_method")))
    print()
    print(format_sweep(rows) if args.sweep_chunks is not None else format_table(rows))
    if args.json:
        args.json.write_text(json.dumps({"env": environment(args, rows[0].get("mem_method")), "rows": rows},
                                        indent=1))


def run_table(model, args: argparse.Namespace) -> list[dict]:
    rows = []
    variants = VARIANTS + (("baseline",) if args.baseline else ())
    for n in args.contexts:
        chunk = args.chunk_size
        t = time_variants(model, args, n, {v: chunk for v in variants})
        row = {"n": n, "chunk": chunk or auto_chunk(args, n), **_stats(t, {v: v for v in variants})}
        if args.baseline:  # per repeat: measuring / baseline in the same rotation, then the median
            row["paired_meas_over_base"] = statistics.median(a / b for a, b in zip(t["measuring"], t["baseline"],
                                                                                   strict=True))
        if not args.no_memory:
            for v in VARIANTS:
                row[f"mem_{v}"], row["mem_method"] = measure_memory(args, v, n, chunk)
        rows.append(row)
        print(f"  done n={n}: " + ", ".join(f"{v} {row['t_' + v]:.3f} s" for v in VARIANTS), file=sys.stderr,
              flush=True)
    return rows


def run_sweep(model, args: argparse.Namespace) -> list[dict]:
    n = args.sweep_context
    chunks = {"sdpa": None, **{f"measuring:{c}": (c or None) for c in args.sweep_chunks}}
    t = time_variants(model, args, n, chunks)
    rows = []
    for c in args.sweep_chunks:
        row = {"n": n, "chunk": c or auto_chunk(args, n), "auto": c == 0,
               **_stats(t, {"sdpa": "sdpa", "measuring": f"measuring:{c}"})}
        if not args.no_memory:
            row["mem_measuring"], row["mem_method"] = measure_memory(args, "measuring", n, c or None)
        rows.append(row)
    if not args.no_memory:
        rows[0]["mem_eager"], _ = measure_memory(args, "eager", n, None)
    return rows


def _stats(samples: dict[str, list[float]], names: dict[str, str]) -> dict:
    """``t_<v>``: median seconds; ``t_<v>_min``: fastest repeat; ``t_<v>_all``: every repeat."""
    out = {}
    for v, name in names.items():
        s = samples[name]
        out |= {f"t_{v}": statistics.median(s), f"t_{v}_min": min(s), f"t_{v}_all": [round(x, 4) for x in s]}
    return out


def format_table(rows: list[dict]) -> str:
    mem = "mem_sdpa" in rows[0]
    head = "| context | chunk | sdpa s | measuring s | eager s | meas/sdpa | eager/sdpa |"
    rule = "|---:|---:|---:|---:|---:|---:|---:|"
    if mem:
        head += " sdpa +MiB | measuring +MiB | eager +MiB | meas/eager mem |"
        rule += "---:|---:|---:|---:|"
    lines = [head, rule]
    for r in rows:
        s = (f"| {r['n']} | {r['chunk']} | {r['t_sdpa']:.3f} | {r['t_measuring']:.3f} | {r['t_eager']:.3f} "
             f"| {r['t_measuring'] / r['t_sdpa']:.2f}× | {r['t_eager'] / r['t_sdpa']:.2f}× |")
        if mem:
            s += (f" {r['mem_sdpa']:.0f} | {r['mem_measuring']:.0f} | {r['mem_eager']:.0f} "
                  f"| {_pct(r['mem_measuring'], r['mem_eager'])} |")
        lines.append(s)
    if "t_baseline" in rows[0]:
        lines += ["", "| context | baseline s | measuring s | baseline/sdpa | meas/sdpa | meas/baseline (medians) "
                      "| meas/baseline (median of paired repeats) |", "|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['n']} | {r['t_baseline']:.3f} | {r['t_measuring']:.3f} | {r['t_baseline'] / r['t_sdpa']:.2f}× "
                  f"| {r['t_measuring'] / r['t_sdpa']:.2f}× | {r['t_measuring'] / r['t_baseline']:.3f} "
                  f"| {r['paired_meas_over_base']:.3f} |" for r in rows]
    lines += ["", "fastest repeat instead of the median: " + "; ".join(
        f"{r['n']}: meas/sdpa {r['t_measuring_min'] / r['t_sdpa_min']:.2f}×, "
        f"eager/sdpa {r['t_eager_min'] / r['t_sdpa_min']:.2f}×" for r in rows)]
    return "\n".join(lines)


def format_sweep(rows: list[dict]) -> str:
    mem = "mem_measuring" in rows[0]
    head = "| context | chunk | measuring s | meas/sdpa | meas/sdpa (fastest) |"
    rule = "|---:|---:|---:|---:|---:|"
    if mem:
        head += " measuring +MiB | meas/eager mem |"
        rule += "---:|---:|"
    lines = [f"sdpa {rows[0]['t_sdpa']:.3f} s (median), {rows[0]['t_sdpa_min']:.3f} s (fastest)" + (f"; eager +{rows[0]['mem_eager']:.0f} MiB" if mem else ""),
             "", head, rule]
    for r in rows:
        s = (f"| {r['n']} | {r['chunk']}{' (auto)' if r['auto'] else ''} | {r['t_measuring']:.3f} "
             f"| {r['t_measuring'] / r['t_sdpa']:.2f}× | {r['t_measuring_min'] / r['t_sdpa_min']:.2f}× |")
        if mem:
            s += f" {r['mem_measuring']:.0f} | {_pct(r['mem_measuring'], rows[0]['mem_eager'])} |"
        lines.append(s)
    return "\n".join(lines)


def _pct(a: float, b: float) -> str:
    return f"{100 * a / b:.1f}%" if b > 0 else "n/a"


if __name__ == "__main__":
    main()
