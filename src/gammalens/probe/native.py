"""The chunked probe's CPU kernel (``native_softmax.c``): causal softmax and distance sums in one sweep per row.

The chunked path's plain-causal case spends most of its time beyond the two GEMMs in PyTorch's softmax (three
passes, one exp per score) and in the skew-view GEMM that reads every probability once more for the diagonal sums.
The C kernel does both while each row sits in the core's caches, with an AVX2/FMA exp, and writes the
probabilities in place so that P·V and the observers read them as before. What it saves is measured in
``benchmarks/bench_measuring_forward.py`` (``docs/benchmarks.md``).

It is compiled from the shipped source on first use, with the C compiler found as ``$CC``, ``cc`` or ``gcc``
(``-O3``, plus ``-mavx2 -mfma`` where the CPU has them), into ``<gammalens cache>/native/`` (``$GAMMALENS_CACHE``)
under a name that hashes the source, flags and compiler, written atomically, and loaded with :mod:`ctypes`
(no Python headers, no PyTorch extension build: about a second, once per machine). Where no compiler works,
or with ``GAMMALENS_NATIVE=0``, :func:`kernel` returns None and the probe keeps its PyTorch path, which gives the
same sums to fp32 rounding (``tests/test_probe_native.py``). :func:`status` says which ran and why.

Threads: the rows of a chunk are split into ``torch.get_num_threads()`` spans, each run by one thread of a small
pool (ctypes releases the GIL during the call) with its own accumulators, summed afterwards; no OpenMP runtime is
loaded beside PyTorch's.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import torch

SOURCE = "native_softmax.c"
_STATUS: dict[str, str] = {}


def enabled() -> bool:
    """False when ``GAMMALENS_NATIVE`` is set to 0 / off / false (the PyTorch path then runs)."""
    return os.environ.get("GAMMALENS_NATIVE", "1").strip().lower() not in ("0", "off", "false", "no")


def status() -> str:
    """One line: whether the kernel is loaded (with its instruction set) or why the PyTorch path runs."""
    lib = kernel()
    if lib is not None:
        return f"native kernel ({'avx2+fma' if lib.gammalens_simd() else 'scalar C'})"
    return f"PyTorch softmax ({_STATUS.get('reason', 'not loaded')})"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name.split()[0]):
            return name
    return None


def _cpu_has_avx2() -> bool:
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def _cache_dir() -> Path:
    from gammalens.model.gguf_cache import gguf_cache_root

    return gguf_cache_root() / "native"


@functools.lru_cache(maxsize=1)
def kernel() -> ctypes.CDLL | None:
    """The loaded kernel library, compiled on first call; None when disabled or when it cannot be built."""
    if not enabled():
        _STATUS["reason"] = "GAMMALENS_NATIVE=0"
        return None
    if sys.platform == "win32":
        _STATUS["reason"] = "no native build on Windows"
        return None
    cc = _compiler()
    if cc is None:
        _STATUS["reason"] = "no C compiler found ($CC, cc, gcc, clang)"
        return None
    src = resources.files("gammalens.probe").joinpath(SOURCE).read_bytes()
    flags = ["-O3", "-fPIC", "-shared", "-fno-math-errno"] + (["-mavx2", "-mfma"] if _cpu_has_avx2() else [])
    try:
        version = subprocess.run([*cc.split(), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as err:
        _STATUS["reason"] = f"{cc} --version failed: {err}"
        return None
    tag = hashlib.sha256(src + " ".join(flags).encode() + version.encode()).hexdigest()[:16]
    root = _cache_dir()
    lib_path = root / f"gammalens_native_{tag}.so"
    if not lib_path.exists():
        try:
            root.mkdir(parents=True, exist_ok=True)
            c_path = root / f".{tag}-{os.getpid()}.c"
            tmp = root / f".{tag}-{os.getpid()}.so"
            c_path.write_bytes(src)
            done = subprocess.run([*cc.split(), *flags, "-o", str(tmp), str(c_path), "-lm"],
                                  capture_output=True, text=True, timeout=120)
            c_path.unlink(missing_ok=True)
            if done.returncode != 0:
                tmp.unlink(missing_ok=True)
                first = (done.stderr.strip().splitlines() or ["?"])[0][:160]
                _STATUS["reason"] = f"{cc} failed: {first}"
                return None
            os.replace(tmp, lib_path)  # atomic: a concurrent process loads a whole library or builds its own
        except (OSError, subprocess.SubprocessError) as err:
            _STATUS["reason"] = f"cannot build in {root}: {err}"
            return None
    try:
        lib = ctypes.CDLL(str(lib_path))
    except OSError as err:
        _STATUS["reason"] = f"cannot load {lib_path.name}: {err}"
        return None
    i64, fp = ctypes.c_int64, ctypes.c_void_p
    lib.gammalens_causal_rows.argtypes = [fp, i64, i64, i64, i64, i64, i64, i64, fp, i64, fp]
    lib.gammalens_causal_rows.restype = ctypes.c_int
    lib.gammalens_simd.restype = ctypes.c_int
    return lib


@functools.lru_cache(maxsize=4)
def pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``workers`` threads (kept for reuse; its threads block, they do not spin)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gammalens-native")


class CausalSums:
    """Distance and sink sums of a plain causal layer, taken by the kernel chunk by chunk as it softmaxes them.

    Parameters
    ----------
    batch, heads : int
        B and H of the chunks.
    width : int
        Positions of the layer (n): every chunk's queries sit at q0 … q0 + c − 1 < width.
    sinks : int
        The first ``sinks`` keys are sinks: out of the distance sums, into the sink sums.
    cs_from : int
        First query position on the common-support side (sinks + horizon).
    threads : int or None
        Row spans run in parallel, each into its own buffers; None: ``torch.get_num_threads()``.
    """

    def __init__(self, batch: int, heads: int, width: int, sinks: int, cs_from: int, threads: int | None = None) -> None:
        lib = kernel()
        if lib is None:
            raise RuntimeError("the native kernel is not available: " + _STATUS.get("reason", "?"))
        self._lib, self.shape = lib, (batch, heads, width)
        self.sinks, self.cs_from = sinks, cs_from
        self.workers = max(1, threads or torch.get_num_threads())
        self._acc = torch.zeros(self.workers, batch * heads, 2, width, dtype=torch.float64)
        self._sink = torch.zeros(self.workers, batch * heads, dtype=torch.float64)

    def add(self, scores: torch.Tensor, q0: int) -> None:
        """Softmax one chunk in place and add its sums.

        Parameters
        ----------
        scores : torch.Tensor
            (B, H, c, kend) contiguous fp32 scores of queries q0 … q0+c−1 over keys 0 … kend−1, kend = q0 + c
            (future keys are ignored, whatever they hold), every row a valid query of a document starting at 0.
            Overwritten with the probabilities, future keys 0.
        q0 : int
            Position of the chunk's first query.
        """
        B, H, c, kend = scores.shape
        if (scores.dtype != torch.float32 or not scores.is_contiguous() or scores.device.type != "cpu"
                or kend != q0 + c or self.shape[:2] != (B, H) or kend > self.shape[2]):
            raise ValueError("the native kernel takes contiguous fp32 cpu scores of shape (B, H, c, q0 + c), "
                             "q0 + c ≤ the layer's width")
        rows, width = B * H * c, self.shape[2]
        workers = min(self.workers, rows)
        bounds = [rows * w // workers for w in range(workers + 1)]

        def span(w: int) -> int:
            return self._lib.gammalens_causal_rows(scores.data_ptr(), bounds[w], bounds[w + 1], c, kend, q0,
                                                   self.sinks, self.cs_from, self._acc[w].data_ptr(), width,
                                                   self._sink[w].data_ptr())

        codes = [span(0)] if workers == 1 else list(pool(workers).map(span, range(workers)))
        if any(codes):
            raise ValueError("the native kernel refused its arguments")

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The sums so far.

        Returns
        -------
        by_dist : torch.Tensor
            (B, H, 2, width) fp64: [..., 0, t] every query's mass at distance d = width − 1 − t over non-sink keys,
            [..., 1, t] the common-support queries' — the layout of the skew view in
            :meth:`~gammalens.probe.accumulate.ProfileAccumulator.add_causal_block`.
        sink_sum : torch.Tensor
            (B, H) fp64 mass on the sink keys, summed over queries at positions ≥ ``sinks``.
        """
        B, H, width = self.shape
        by_dist = self._acc.sum(0)
        by_dist[:, 0] += by_dist[:, 1]
        return by_dist.view(B, H, 2, width), self._sink.sum(0).view(B, H)


def causal_softmax_sums(scores: torch.Tensor, q0: int, sinks: int, cs_from: int,
                        threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk through :class:`CausalSums` of width kend: softmax ``scores`` (B, H, c, kend) in place, return
    its (B, H, 2, kend) fp64 distance sums (column t ↔ d = kend − 1 − t) and (B, H) sink sums."""
    sums = CausalSums(scores.shape[0], scores.shape[1], scores.shape[-1], sinks, cs_from, threads)
    sums.add(scores, q0)
    return sums.result()
