"""Device check of the probe on one CUDA GPU (issue 14): contract tests, accuracy at long context, speed.

Run from the repository root; nothing is downloaded (random-init models), ≤ 8 minutes on one H200:

    python benchmarks/gpu_check.py                      # everything, writes gpu_check.json
    python benchmarks/gpu_check.py --contexts 8192      # a quicker speed table

Steps, each bounded by what is left of ``--budget-s`` (later steps are skipped, never cut mid-way):

1. **contract**: ``tests/test_probe_contract.py`` on ``cuda`` for both backends (chunked, triton), and the
   kernel-level ``tests/test_probe_fused.py``, with pytest when it is installed, else by calling the test
   functions directly (a small stand-in for pytest).
2. **accuracy**: the triton backend's per-distance mass and sink mass for one layer of random bf16
   queries/keys with Llama-3.1-8B's head geometry (2 query heads sharing one KV head, head_dim 128) at
   ``--accuracy-context`` tokens, against an fp64 reference computed here query-chunk by query-chunk
   (exact softmax in fp64, scatter-add by distance). Prints the max relative error over distances that
   hold ≥ 1e-6 of the largest mass, and the l1-relative error (target: 1e-5).
3. **device_map** (``--device auto``): a tiny random-init Llama split by ``device_map`` (modules offloaded
   to cpu, their weights on ``meta``; layers on ``cuda:0`` and ``cuda:1`` when there are two GPUs) gives the
   probe the same sums as the model whole on ``cuda:0``, for both backends: ``measure()``'s placement
   (:func:`gammalens.model.load.execution_device`), without its fitting dependencies; needs ``accelerate``.
4. **speed**: a random-init ``LlamaModel`` with Llama-3.1-8B's attention geometry (hidden 4096, 32 heads,
   8 KV heads, head_dim 128, MLP 14336, ``--layers`` layers), bf16, batch 1, at ``--contexts`` tokens:
   plain sdpa forward vs the measuring forward (triton, and chunked where it fits in time) vs eager
   ``output_attentions=True`` (where n² attention matrices fit), median of ``--repeats`` forwards after a
   warm-up; ratios to sdpa and peak GPU memory above the model's own.

Requires torch with CUDA, transformers and triton (the machine's own); ``PYTHONPATH`` is set to ``src``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]
os.environ.setdefault("GAMMALENS_TEST_DEVICE", "cuda")  # before tests.conftest is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.pop("TRITON_INTERPRET", None)  # compiled kernels on the GPU

import torch  # noqa: E402

T0 = time.perf_counter()


def left(args: argparse.Namespace) -> float:
    return args.budget_s - (time.perf_counter() - T0)


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f} s] {msg}", flush=True)


# ------------------------------------------------------------------------------------------- contract

def contract(args: argparse.Namespace) -> dict:
    """The contract matrix on cuda; pytest in a subprocess when available, else direct calls."""
    env = os.environ | {"GAMMALENS_TEST_DEVICE": "cuda", "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}
    env.pop("TRITON_INTERPRET", None)
    if importlib.util.find_spec("pytest") is not None:
        cmd = [sys.executable, "-m", "pytest", "tests/test_probe_contract.py", "tests/test_probe_fused.py", "-q",
               "-p", "no:cacheprovider", "-o", "addopts="]
        try:
            res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                                 timeout=max(30.0, min(args.contract_timeout_s, left(args) - 60)))
        except subprocess.TimeoutExpired:
            return {"runner": "pytest", "ok": False, "summary": "timed out"}
        tail = (res.stdout + res.stderr).strip().splitlines()
        summary = tail[-1] if tail else ""
        print("\n".join(tail[-30:]))
        return {"runner": "pytest", "ok": res.returncode == 0, "summary": summary}
    return _contract_direct()


def _contract_direct() -> dict:
    """Run every (architecture, variant, case) of the matrix by calling the test function (no pytest here)."""
    _stub_pytest()
    from tests import test_probe_contract as t
    from tests.conftest import arch_specs

    results, ok = [], True
    for arch in arch_specs():
        for variant, case in [*t.CASES, ("triton", "whole")]:
            t0 = time.perf_counter()
            try:
                t.test_probe_matches_eager_reference(arch, variant, case)
                status = "passed"
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # pytest's Skipped is a BaseException, not an Exception
                if type(e).__name__ in ("Skipped", "_Skipped"):
                    status = f"skipped ({e})"
                else:
                    status, ok = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:200]}", False
                    traceback.print_exc()
            results.append({"arch": arch, "variant": variant, "case": case, "status": status,
                            "s": round(time.perf_counter() - t0, 2)})
            log(f"contract {arch:<18} {variant:<10} {case:<6} {status}")
    for backend in ("chunked", "triton"):
        try:
            t.test_nan_attention_names_layer_and_head(backend)
            status = "passed"
        except Exception as e:
            status, ok = f"FAILED: {type(e).__name__}: {e}", False
        results.append({"test": f"nan_names_layer_and_head[{backend}]", "status": status})
        log(f"contract nan[{backend}] {status}")
    from tests import test_probe_fused as f

    for case in f.CASES:
        try:
            f.test_fused_profile_matches_fp64_reference(case)
            status = "passed"
        except Exception as e:
            status, ok = f"FAILED: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}", False
            traceback.print_exc()
        results.append({"test": f"fused_profile_matches_fp64_reference[{case}]", "status": status})
        log(f"fused kernel {case}: {status}")
    n_pass = sum(r["status"] == "passed" for r in results)
    return {"runner": "direct", "ok": ok, "summary": f"{n_pass} of {len(results)} passed", "cases": results}


class _Skipped(Exception):
    pass


def _stub_pytest() -> None:
    """Enough of pytest for tests/conftest.py and tests/test_probe_contract.py to import and run directly."""
    if "pytest" in sys.modules or importlib.util.find_spec("pytest") is not None:
        return

    def fixture(*a, **k):
        return a[0] if a and callable(a[0]) else (lambda f: f)

    def skip(msg: str = "") -> None:
        raise _Skipped(msg)

    @contextlib.contextmanager
    def raises(exc, match: str | None = None):
        try:
            yield
        except exc as e:
            if match is not None and not re.search(match, str(e)):
                raise AssertionError(f"{e!r} does not match {match!r}") from e
            return
        raise AssertionError(f"{exc.__name__} not raised")

    mark = types.SimpleNamespace(parametrize=lambda *a, **k: (lambda f: f), slow=lambda f: f)
    sys.modules["pytest"] = types.SimpleNamespace(fixture=fixture, skip=skip, raises=raises, mark=mark,
                                                  importorskip=importlib.import_module)


# ------------------------------------------------------------------------------------------- accuracy

def accuracy(args: argparse.Namespace) -> dict:
    """Triton backend vs an fp64 reference: one layer, Llama-3.1-8B head geometry, random bf16 inputs."""
    from gammalens.probe.accumulate import BatchLayout, ProfileAccumulator
    from gammalens.probe.fused import fused_profile

    n, H, Hkv, dh, S = args.accuracy_context, 2, 1, 128, 4
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(1, H, n, dh, device=dev, generator=g).mul_(1.5).bfloat16()
    k = torch.randn(1, Hkv, n, dh, device=dev, generator=g).bfloat16()
    v = torch.randn(1, Hkv, n, dh, device=dev, generator=g).bfloat16()
    scale = dh ** -0.5
    acc = ProfileAccumulator(1, H, 1, n - 1, 64, S, dev)
    sync()
    t0 = time.perf_counter()
    fused_profile(acc, 0, q, k, v, BatchLayout.full(1, n, device=dev), scale, True, None, None, args.block)
    sync()
    t_fused = time.perf_counter() - t0
    log(f"accuracy: triton pass at n={n} took {t_fused:.2f} s; fp64 reference next")

    ref = torch.zeros(H, n, dtype=torch.float64, device=dev)
    sink = torch.zeros(H, dtype=torch.float64, device=dev)
    qd, kd = q[0].double() * scale, k[0, 0].double()  # (H, n, dh), (n, dh)
    c = args.accuracy_chunk
    for q0 in range(0, n, c):
        q1 = min(n, q0 + c)
        s = qd[:, q0:q1] @ kd[:q1].T  # (H, c, q1)
        pos_q = torch.arange(q0, q1, device=dev)[:, None]
        pos_k = torch.arange(q1, device=dev)[None, :]
        s.masked_fill_(pos_k > pos_q, float("-inf"))
        p = torch.softmax(s, dim=-1)
        d = (pos_q - pos_k).clamp(min=0).expand(q1 - q0, q1)  # (c, q1)
        rows = (pos_q[:, 0] >= S)[None, :, None]
        sink += (p[..., :S] * rows).sum((-1, -2))
        p[..., :S] = 0.0
        ref.scatter_add_(1, d.reshape(1, -1).expand(H, -1), p.reshape(H, -1))
        del s, p
    got = acc.mass[0]
    big = ref >= 1e-6 * ref.max()
    rel = ((got - ref).abs() / ref.clamp(min=1e-300))[big].max().item()
    l1 = ((got - ref).abs().sum() / ref.abs().sum()).item()
    sink_rel = ((acc.doc_sink_sum[0, 0] - sink).abs() / sink).max().item()
    out = {"context": n, "heads": H, "head_dim": dh, "triton_s": round(t_fused, 3), "max_rel_err": rel,
           "l1_rel_err": l1, "sink_max_rel_err": sink_rel, "target": 1e-5, "ok": max(rel, l1, sink_rel) < 1e-5}
    log(f"accuracy: max rel err {rel:.2e} (distances with ≥1e-6 of the peak), l1 rel err {l1:.2e}, "
        f"sink rel err {sink_rel:.2e}")
    return out


# ----------------------------------------------------------------------------------------- device_map

def device_map_check(args: argparse.Namespace) -> dict:
    """Probe sums of the split model vs the whole one (``tests/test_device_map.py`` runs ``measure`` on CPU)."""
    import tempfile

    if importlib.util.find_spec("accelerate") is None:
        return {"ok": None, "summary": "skipped: accelerate is not installed (device_map needs it)"}
    if left(args) < 90:  # leaves the speed step its time; this one takes well under a minute
        return {"ok": None, "summary": "skipped (budget)"}
    _stub_pytest()
    from tests.conftest import build_tiny
    from tests.test_device_map import PROFILE_RTOL, placement, split_maps
    from transformers import AutoModelForCausalLM

    cpu = args.device == "cpu"  # dry run: 'cpu' is then accelerate's main device, so offload goes to disk
    second = 1 if not cpu and torch.cuda.device_count() >= 2 else None
    maps = split_maps("cpu", "disk") if cpu else split_maps(0, "cpu", second)
    backends = ["chunked"] if cpu else ["chunked", "triton"]
    ids = torch.randint(0, 30000, (2, 128), generator=torch.Generator().manual_seed(0))  # (batch, n)
    cases, ok = [], True
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny("llama_gqa").save_pretrained(Path(tmp) / "llama")
        kw = {"attn_implementation": "sdpa", "dtype": torch.float32}
        whole = AutoModelForCausalLM.from_pretrained(Path(tmp) / "llama", **kw).to(args.device).eval()
        for name, device_map in maps.items():
            net = AutoModelForCausalLM.from_pretrained(Path(tmp) / "llama", device_map=device_map,
                                                       offload_folder=str(Path(tmp) / f"offload-{name}"), **kw)
            where = placement(net.eval())
            cuda_devices = {d for d in where["param_devices"] if d.startswith("cuda")}
            split = where["meta_params"] > 0 if name != "two_devices" else len(cuda_devices) >= 2
            for backend in backends:
                want, want_backend = _probe_sums(whole, ids, backend)
                got, got_backend = _probe_sums(net, ids, backend)
                rel = max(((got[k] - want[k]).abs().max() / want[k].abs().max().clamp(min=1e-300)).item()
                          for k in want)
                case_ok = (split and got_backend == want_backend == backend and rel <= PROFILE_RTOL
                           and bool(want["mass"].abs().max() > 0))  # an empty profile would match vacuously
                ok &= case_ok
                cases.append({"case": name, "backend": backend, "device_map": {k: str(v) for k, v in device_map.items()},
                              **where, "max_rel_diff": rel, "ok": case_ok})
                log(f"device_map {name:<20} {backend:<8} max rel diff {rel:.1e} (≤ {PROFILE_RTOL:g}), "
                    f"meta params {where['meta_params']}, inputs on {where['execution_device']}: "
                    f"{'ok' if case_ok else 'FAILED'}")
            del net
    return {"ok": ok, "gpus": torch.cuda.device_count(), "tolerance": PROFILE_RTOL, "cases": cases,
            "summary": f"{sum(c['ok'] for c in cases)} of {len(cases)} placements match the whole model"}


def _probe_sums(net, ids: torch.Tensor, backend: str) -> tuple[dict, str]:
    """One probed forward placed as ``measure()`` places it: the accumulator's sums (on cpu) and the backend."""
    from gammalens.model.load import execution_device
    from gammalens.probe.accumulate import BatchLayout, ProfileAccumulator
    from gammalens.probe.backend import DistanceProbe, probing

    B, n = ids.shape
    dev = execution_device(net)
    acc = ProfileAccumulator(net.config.num_hidden_layers, net.config.num_attention_heads, B, n - 1, n // 2, 1, dev)
    probe = DistanceProbe(acc, backend=backend)
    with torch.inference_mode(), probing(net, probe):
        probe.set_layout(BatchLayout.full(B, n, device=dev))
        batch = ids.to(dev)
        net(input_ids=batch, attention_mask=torch.ones_like(batch), use_cache=False)
    return {k: v.cpu() for k, v in vars(acc).items() if isinstance(v, torch.Tensor)}, probe.backend_


# ---------------------------------------------------------------------------------------------- speed

def build_llama(args: argparse.Namespace):
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=args.layers,
                      num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=32000,
                      max_position_embeddings=max(args.contexts) + 1, rope_theta=500000.0,
                      attn_implementation="sdpa")
    with torch.device("cuda"):
        model = LlamaModel(cfg).to(torch.bfloat16).eval()
    return model


def one_forward(model, variant: str, ids: torch.Tensor) -> None:
    from gammalens.probe.accumulate import BatchLayout, ProfileAccumulator
    from gammalens.probe.backend import DistanceProbe, probing

    cfg = model.config
    n = ids.shape[1]
    with torch.inference_mode():
        if variant == "sdpa":
            model.set_attn_implementation("sdpa")
            model(input_ids=ids, use_cache=False)
        elif variant == "eager":
            model.set_attn_implementation("eager")
            model(input_ids=ids, use_cache=False, output_attentions=True)
        else:
            model.set_attn_implementation("sdpa")
            acc = ProfileAccumulator(cfg.num_hidden_layers, cfg.num_attention_heads, 1, n - 1, n // 2, 1, "cuda")
            probe = DistanceProbe(acc, backend=variant)
            with probing(model, probe):
                probe.set_layout(BatchLayout.full(1, n, device="cuda"))
                model(input_ids=ids, use_cache=False)
    torch.cuda.synchronize()


def speed(args: argparse.Namespace, model) -> list[dict]:
    rows = []
    for n in args.contexts:
        ids = torch.randint(0, model.config.vocab_size, (1, n), device="cuda")
        variants = ["sdpa", "triton"]
        if n <= args.chunked_max_context:
            variants.append("chunked")
        if n <= args.eager_max_context:
            variants.append("eager")
        row: dict = {"n": n}
        for variant in variants:
            est = row.get("t_sdpa", 1.0) * {"sdpa": 1, "triton": 8, "chunked": 40, "eager": 20}[variant]
            if left(args) < (args.repeats + 1) * est + 20:
                log(f"speed n={n} {variant}: skipped (budget)")
                row[f"t_{variant}"] = None
                continue
            try:
                torch.cuda.empty_cache()
                one_forward(model, variant, ids)  # warm-up (Triton compiles here)
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    one_forward(model, variant, ids)
                    times.append(time.perf_counter() - t0)
                row[f"t_{variant}"] = statistics.median(times)
                row[f"mem_{variant}_gib"] = (torch.cuda.max_memory_allocated() - base) / 2**30
                log(f"speed n={n} {variant}: {row[f't_{variant}']:.3f} s, +{row[f'mem_{variant}_gib']:.2f} GiB")
            except torch.OutOfMemoryError:
                row[f"t_{variant}"] = "OOM"
                log(f"speed n={n} {variant}: out of memory")
            except Exception as e:  # one failing variant must not hide the others' numbers
                traceback.print_exc()
                row[f"t_{variant}"] = f"error: {type(e).__name__}"
                log(f"speed n={n} {variant}: {type(e).__name__}: {str(e).strip()[:200]}")
            torch.cuda.empty_cache()
        for variant in ("triton", "chunked", "eager"):
            t = row.get(f"t_{variant}")
            if isinstance(t, float) and isinstance(row.get("t_sdpa"), float):
                row[f"{variant}/sdpa"] = t / row["t_sdpa"]
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    def f(x, fmt):
        return format(x, fmt) if isinstance(x, float) else (x or "—")

    lines = ["| context | sdpa s | triton s | triton/sdpa | chunked/sdpa | eager/sdpa | sdpa +GiB | triton +GiB "
             "| chunked +GiB | eager +GiB |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['n']} | {f(r.get('t_sdpa'), '.3f')} | {f(r.get('t_triton'), '.3f')} "
            f"| {f(r.get('triton/sdpa'), '.2f')}× | {f(r.get('chunked/sdpa'), '.2f')}× | {f(r.get('eager/sdpa'), '.2f')}× "
            f"| {f(r.get('mem_sdpa_gib'), '.2f')} | {f(r.get('mem_triton_gib'), '.2f')} "
            f"| {f(r.get('mem_chunked_gib'), '.2f')} | {f(r.get('mem_eager_gib'), '.2f')} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget; later steps are skipped")
    p.add_argument("--contexts", type=int, nargs="+", default=[8192, 32768, 131072])
    p.add_argument("--layers", type=int, default=2, help="decoder layers of the speed model")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunked-max-context", type=int, default=8192)
    p.add_argument("--eager-max-context", type=int, default=8192)
    p.add_argument("--accuracy-context", type=int, default=131072)
    p.add_argument("--accuracy-chunk", type=int, default=512)
    p.add_argument("--block", type=int, default=None, help="triton tile of the accuracy step (default: 64)")
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: dry-run of the accuracy step
    p.add_argument("--contract-timeout-s", type=float, default=240.0)
    p.add_argument("--skip", nargs="*", default=[], choices=["contract", "accuracy", "device_map", "speed"])
    p.add_argument("--json", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu_check.json")
    args = p.parse_args(argv)
    if args.device == "cpu":  # dry run of the accuracy (Triton's interpreter, small --accuracy-context) and device_map steps
        dry = {"accuracy": accuracy, "device_map": device_map_check}
        print(json.dumps({name: step(args) for name, step in dry.items() if name not in args.skip}, default=str))
        return 0
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device", file=sys.stderr)
        return 2
    import transformers
    import triton

    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "gpu": torch.cuda.get_device_name(),
                    "versions": {"python": platform.python_version(), "torch": torch.__version__,
                                 "cuda": torch.version.cuda, "triton": triton.__version__,
                                 "transformers": transformers.__version__}}
    log(json.dumps(report))

    def save() -> None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str))

    steps = [("contract", lambda: contract(args)), ("accuracy", lambda: accuracy(args)),
             ("device_map", lambda: device_map_check(args))]
    for name, step in steps:
        if name in args.skip:
            continue
        try:
            report[name] = step()
        except Exception as e:  # keep going: the other steps still report
            traceback.print_exc()
            report[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        log(f"{name}: {report[name].get('summary', report[name].get('ok'))}")
        save()
    if "speed" not in args.skip:
        try:
            model = build_llama(args)
            report["speed"] = {"model": "LlamaModel random init, Llama-3.1-8B attention geometry (32 heads, 8 KV "
                                        f"heads, head_dim 128, hidden 4096, MLP 14336), {args.layers} layers, bf16, "
                                        "batch 1", "rows": speed(args, model)}
            print(table(report["speed"]["rows"]))
        except Exception as e:
            traceback.print_exc()
            report["speed"] = {"error": f"{type(e).__name__}: {e}"}
        save()
    log(f"wrote {args.json}")
    ok = all(report.get(s, {}).get("ok", True) is not False for s in ("contract", "accuracy", "device_map"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
