"""The measuring attention backend: an ``AttentionInterface`` function that profiles as it attends.

It has the shared signature of transformers' attention functions. Query chunk by query chunk it
computes the exact fp32 attention probabilities of every head from the layer's own query, key, mask,
scaling and soft-cap, adds them to a :class:`ProfileAccumulator`, and returns the layer's normal output
computed from those same probabilities (P·V, fp32, cast to the value dtype). That output equals
``sdpa``'s and eager's to float rounding (the contract tests check it), and computing it here instead
of delegating to ``sdpa`` avoids a second softmax. Both matmuls are grouped by KV head (the g query heads
of one KV head are a single operand), so K and V are never expanded. Peak extra memory is
O(batch × heads × chunk × n), never the n×n matrix of every head at once. What the measuring forward costs
against sdpa and against its floor is in ``benchmarks/bench_measuring_forward.py`` and ``docs/benchmarks.md``. Evaluation only: attention dropout is not applied.

It is installed by :func:`probing` (a context manager) and removed in ``finally``: nothing is left
registered and the model's previous attention implementation is restored.

On CUDA with Triton installed, the same probe (``backend='auto'``, the default) hands each layer to the
fused two-pass kernel of :mod:`gammalens.probe.fused` instead: same sums, no chunk × n scores.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from gammalens.errors import GammalensError, ModelError
from gammalens.model.load import execution_device
from gammalens.probe import fused, native  # module attribute calls: tests replace the kernels (fallback tests)
from gammalens.probe.accumulate import BatchLayout, ProfileAccumulator

_PROBE_IDS = itertools.count()
# Largest automatic query chunk on the CPU. Measured on SmolLM2-135M at 2048 tokens, 2 threads
# (benchmarks/bench_measuring_forward.py, docs/benchmarks.md): chunks of 64 / 128 / 256 / 455 queries (455 is
# the 32 MiB budget's choice) cost 1.32× / 1.17× / 1.24× / 1.49× the plain sdpa forward.
CPU_MAX_CHUNK = 128


class DistanceProbe:
    """Attention function that accumulates exact distance profiles of every layer and head.

    Parameters
    ----------
    accumulator : ProfileAccumulator
        Receives the probabilities.
    chunk_size : int or None
        Queries per chunk. None: chosen so one chunk's fp32 probabilities take ≤ ``budget_bytes``.
    budget_bytes : int
        Memory budget of one chunk's probabilities when ``chunk_size`` is None.
    observers : sequence of callables, optional
        Further measurements on the same probabilities, each called for every chunk as
        ``observer(layer, probs, visible, q0, layout)`` with ``probs`` (B, H, c, k) fp32 and ``visible``
        (B, 1, c, k) bool, before the accumulator (e.g. the sink measures of :mod:`gammalens.sinks`);
        observers must not modify ``probs``.
    backend : {'auto', 'chunked', 'triton'}
        ``'chunked'``: this module's exact chunked path (any device); ``'triton'``: the fused two-pass
        kernel of :mod:`gammalens.probe.fused` (CUDA, or CPU under ``TRITON_INTERPRET=1``); ``'auto'``:
        triton on CUDA when installed, else chunked. Observers need probabilities, so they force the
        chunked path (``note_`` says so).
    block : int or None
        Tile size of the triton backend (power of two ≥ 16); None: its default.
    """

    def __init__(self, accumulator: ProfileAccumulator, chunk_size: int | None = None,
                 budget_bytes: int = 32 * 2**20, observers: Sequence[Callable[..., None]] = (),
                 backend: str = "auto", block: int | None = None) -> None:
        self.accumulator = accumulator
        self.backend, self.block = backend, block
        self.backend_: str | None = None  # the backend that runs, set by resolve() on first use
        self.note_: str | None = None  # why it differs from the request, if it does
        self.observers = list(observers)
        self.chunk_: int | None = None  # the chunk size used by the last call
        self.kernel_: str | None = None  # the chunked path's softmax in the last call: native kernel or torch
        self.layer_kernels: dict[int, str] = {}  # layer → the softmax its last call ran (chunked path only)
        self._buffers: dict[str, torch.Tensor] = {}
        self._masks: dict[tuple, torch.Tensor] = {}
        self.chunk_size = chunk_size
        self.budget_bytes = budget_bytes
        self.layout: BatchLayout | None = None
        self.layer_of: dict[int, int] = {}  # id(attention module) → layer index, in call order
        self.layer_windows: dict[int, int | None] = {}  # layer → sliding window (None: full attention)
        self.calls = 0

    def resolve(self, device: torch.device | str) -> str:
        """Fix the backend for a model on ``device`` (see :func:`gammalens.probe.fused.resolve_backend`)."""

        self.backend_, self.note_ = fused.resolve_backend(self.backend, device, needs_probabilities=bool(self.observers))
        return self.backend_

    def _may_fall_back(self, layout: BatchLayout, n: int) -> bool:
        """Whether a failed triton call may be redone on the chunked path: only when the user chose ``'auto'``
        and the batch has no padding (the fused probe's mask builder gave the model no mask to pass on)."""
        return self.backend == "auto" and bool((layout.starts == 0).all()) and bool((layout.lengths == n).all())

    def _fall_back(self, err: Exception) -> None:
        import sys

        first = (str(err).strip().splitlines() or [""])[0][:160]
        self.backend_ = "chunked"
        self.note_ = f"the triton backend failed ({type(err).__name__}: {first}); using the chunked backend"
        print(f"gammalens: note: {self.note_}", file=sys.stderr)

    def set_layout(self, layout: BatchLayout) -> None:
        """Declare where the documents of the next forward pass sit (starts, lengths, indices)."""
        self.layout = layout

    def __call__(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                 is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
        """Shapes: query (B, H, n, dh), key/value (B, H_kv, n, dh), mask (B, 1, n, n) or None."""
        if kwargs.get("s_aux") is not None:
            raise ModelError("learned attention-sink logits (s_aux, e.g. gpt-oss) are not supported by the probe yet")
        layer = self.layer_of.setdefault(id(module), len(self.layer_of))
        self.calls += 1
        causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", True))
        softcap = kwargs.get("softcap")
        window = kwargs.get("sliding_window")
        self.layer_windows[layer] = window
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        if (self.backend_ or self.resolve(query.device)) == "triton":

            layout = self.layout or BatchLayout.full(query.shape[0], query.shape[2])
            try:
                out = fused.fused_profile(self.accumulator, layer, query, key, value, layout, scale, causal, softcap,
                                    window, self.block)
                return out, None
            except GammalensError:
                raise
            except Exception as err:  # a kernel that does not compile or launch on this GPU / Triton
                if not self._may_fall_back(layout, query.shape[2]):
                    raise
                self._fall_back(err)  # nothing was added for this layer yet: redo it on the chunked path
        out = self._profile(layer, query, key, value, attention_mask, scale, causal, softcap, window)
        return out, None

    def _profile(self, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 mask: torch.Tensor | None, scale: float, causal: bool, softcap: float | None,
                 window: int | None) -> torch.Tensor | None:
        """Accumulate the layer's profile and return its output, (B, n, H, dv) in the value's dtype."""
        B, H, n, dh = query.shape
        Hkv = key.shape[1]
        if key.shape[2] != n:
            raise ModelError("the probe measures full-sequence forward passes only (no KV cache)")
        g = H // Hkv
        dev = query.device
        layout = (self.layout or BatchLayout.full(B, n)).to(dev)
        c = self.chunk_ = self.chunk_for(B, H, n, dev)
        # grouped GEMMs: the g query heads of a KV head are one (g·c)-row operand against that head's keys and
        # values (no expanded copy of K or V, fewer and larger matmuls); head h = kv·g + j as in repeat_kv
        q = (query.float() * scale).view(B, Hkv, g, n, dh)  # (B, Hkv, g, n, dh)
        kt = key.float().transpose(-1, -2)  # (B, Hkv, dh, n)
        dv = value.shape[-1]
        v = value.float()  # (B, Hkv, n, dv)
        out = query.new_empty(B, n, H, dv)
        plain_causal = causal and mask is None and window is None  # whole documents: closed-form pair counts
        # the C kernel takes plain causal chunks of whole unpadded documents (the measuring job's windows)
        fast = (plain_causal and dev.type == "cpu" and bool((layout.starts == 0).all())
                and bool((layout.lengths >= n).all()) and native.kernel() is not None)
        self.kernel_ = self.layer_kernels[layer] = native.status() if fast else "torch"
        acc = self.accumulator
        if fast:
            self._native_layer(layer, q, kt, v, out, layout, c, softcap)
            return out
        for q0 in range(0, n, c):
            q1 = min(n, q0 + c)
            cc, kend = q1 - q0, (q1 if causal else n)
            scores = self._buffer("scores", B * H * cc * kend, dev).view(B, Hkv, g * cc, kend)
            torch.matmul(q[:, :, :, q0:q1].reshape(B, Hkv, g * cc, dh), kt[..., :kend], out=scores)
            scores = scores.view(B, H, cc, kend)  # (B, H, c, k)
            if softcap is not None:
                scores.div_(softcap).tanh_().mul_(softcap)
            visible = None
            if plain_causal:
                scores[..., q0:q1].masked_fill_(self._future(cc, dev), float("-inf"))
            else:
                visible = visible_keys(mask, q0, q1, kend, causal, window, dev).expand(B, 1, cc, kend)
                scores.masked_fill_(~visible, float("-inf"))
            if causal:  # one batched softmax into a reused contiguous workspace: no allocation per chunk
                probs = self._buffer("probs", B * H * cc * kend, dev).view(B, H, cc, kend)
                torch.ops.aten._softmax.out(scores, -1, False, out=probs)
            else:
                probs = torch.softmax(scores, dim=-1)
            rows = torch.arange(q0, q1, device=dev)[None, :] - layout.starts[:, None]  # (B, c)
            padding = (rows < 0) | (rows >= layout.lengths[:, None])
            if bool(padding.any()):  # padding queries may see no key at all (NaN rows): they output zeros
                probs.masked_fill_(padding[:, None, :, None], 0.0)
            # the layer's output from the same probabilities: cheaper than a second softmax inside sdpa
            o = torch.matmul(probs.reshape(B, Hkv, g * cc, kend), v[:, :, :kend])  # (B, Hkv, g·c, dv)
            out[:, q0:q1] = o.view(B, H, cc, dv).transpose(1, 2).to(out.dtype)
            if self.observers:
                seen = visible if visible is not None else visible_keys(None, q0, q1, kend, True, None, dev).expand(
                    B, 1, cc, kend)
                for observe in self.observers:
                    observe(layer, probs, seen, q0, layout)
            if causal:
                acc.add_causal_block(layer, probs, q0, layout, visible)
            else:
                acc.add(layer, probs, visible, q0, layout, bidirectional=True)
        return out

    def _native_layer(self, layer: int, q: torch.Tensor, kt: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                      layout: BatchLayout, c: int, softcap: float | None) -> None:
        """A plain causal layer of whole documents on the CPU: QKᵀ, the C kernel's softmax and sums, P·V, per chunk.

        ``q`` (B, Hkv, g, n, dh) scaled fp32, ``kt`` (B, Hkv, dh, n), ``v`` (B, Hkv, n, dv); writes ``out``
        (B, n, H, dv). With T > 1 intra-op threads and no observer, the chunks are dealt to T threads that each
        run the whole chunk (GEMM, kernel, GEMM) single-threaded, longest chunks first: a chunk's scores stay in
        its core's caches from QKᵀ to P·V, where T-thread GEMMs over one chunk would stream them through memory
        (``docs/benchmarks.md``). Each thread keeps its own sums; the layer adds them once.
        """
        B, Hkv, g, n, dh = q.shape
        H, dv, dev, acc = Hkv * g, v.shape[-1], q.device, self.accumulator
        threads = torch.get_num_threads()
        starts = list(range(0, n, c))
        workers = 1 if self.observers else max(1, min(threads, len(starts)))  # observers take chunks in order
        sums = [native.CausalSums(B, H, n, acc.sink_tokens, acc.sink_tokens + acc.cs_horizon,
                                  threads=None if workers == 1 else 1) for _ in range(workers)]

        def chunk(w: int, q0: int) -> None:
            q1 = min(n, q0 + c)
            cc = q1 - q0
            scores = self._buffer(f"scores{w}", B * H * cc * q1, dev).view(B, Hkv, g * cc, q1)
            torch.matmul(q[:, :, :, q0:q1].reshape(B, Hkv, g * cc, dh), kt[..., :q1], out=scores)
            probs = scores.view(B, H, cc, q1)
            if softcap is not None:
                probs.div_(softcap).tanh_().mul_(softcap)
            sums[w].add(probs, q0)  # softmax in place, the distance and sink sums in the same sweep over each row
            o = torch.matmul(scores, v[:, :, :q1])  # (B, Hkv, g·c, dv)
            out[:, q0:q1] = o.view(B, H, cc, dv).transpose(1, 2).to(out.dtype)
            if self.observers:
                seen = visible_keys(None, q0, q1, q1, True, None, dev).expand(B, 1, cc, q1)
                for observe in self.observers:
                    observe(layer, probs, seen, q0, layout)

        if workers == 1:
            for q0 in starts:
                chunk(0, q0)
        else:
            queue, lock = iter(starts[::-1]), threading.Lock()
            modes = torch.is_inference_mode_enabled(), torch.is_grad_enabled()  # thread-local: carried over

            def work(w: int) -> None:
                with torch.inference_mode(modes[0]), torch.set_grad_enabled(modes[1]):
                    while True:
                        with lock:
                            q0 = next(queue, None)
                        if q0 is None:
                            return
                        chunk(w, q0)

            torch.set_num_threads(1)  # each worker runs its chunks' GEMMs on its own core
            try:
                list(native.pool(workers).map(work, range(workers)))
            finally:
                torch.set_num_threads(threads)
        parts = [s.result() for s in sums]
        by_dist, sink = parts[0]
        for more, more_sink in parts[1:]:
            by_dist += more
            sink += more_sink
        acc.add_causal_sums(layer, by_dist, sink, 0, layout)

    def kernel_summary(self) -> str | None:
        """Which softmax the chunked path ran, over all layers (None: no chunked layer ran, e.g. triton)."""
        kinds = sorted(set(self.layer_kernels.values()))
        if len(kinds) <= 1:
            return kinds[0] if kinds else None
        fast = sum(k != "torch" for k in self.layer_kernels.values())
        native_kind = next(k for k in kinds if k != "torch")
        return f"{native_kind} on {fast} of {len(self.layer_kernels)} layers, torch on the others (windows, masks)"

    def chunk_for(self, batch: int, heads: int, n: int, device: torch.device | str = "cpu") -> int:
        """Queries per chunk: ``chunk_size``, else as many as keep one chunk's fp32 scores within the budget,
        and on the CPU at most :data:`CPU_MAX_CHUNK` (the scores of fewer queries stay nearer the caches)."""
        if self.chunk_size:
            return self.chunk_size
        c = max(1, min(n, self.budget_bytes // max(1, batch * heads * n * 4)))
        return min(c, CPU_MAX_CHUNK) if torch.device(device).type == "cpu" else c

    def _buffer(self, name: str, numel: int, device: torch.device) -> torch.Tensor:
        """A flat fp32 workspace reused across chunks and layers (fresh n×n-sized allocations dominate time)."""
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.device != device:
            buf = self._buffers[name] = torch.empty(numel, dtype=torch.float32, device=device)
        return buf[:numel]

    def _future(self, c: int, device: torch.device) -> torch.Tensor:
        """(c, c) bool: key after query within a chunk's diagonal block (the only future keys it has)."""
        key = ("future", c, str(device))
        if key not in self._masks:
            self._masks[key] = torch.ones(c, c, dtype=torch.bool, device=device).triu(1)
        return self._masks[key]

    def release(self) -> None:
        """Free the workspaces (the probe keeps them between forward passes)."""
        self._buffers.clear()
        self._masks.clear()


def visible_keys(mask: torch.Tensor | None, q0: int, q1: int, kend: int, causal: bool, window: int | None,
             device: torch.device) -> torch.Tensor:
    """Boolean (B|1, 1, c, k) visibility of keys to queries, from the model's mask or its absence.

    transformers passes ``None`` when sdpa's own ``is_causal`` suffices (no padding, no window cut), a
    boolean mask from ``sdpa_mask`` (True = attend), or an additive float mask from ``eager_mask``.
    """
    if mask is not None:
        m = mask[:, :, q0:q1, :kend]
        return m if m.dtype == torch.bool else m > torch.finfo(m.dtype).min / 2
    d = torch.arange(q0, q1, device=device)[:, None] - torch.arange(kend, device=device)[None, :]
    vis = torch.ones_like(d, dtype=torch.bool)
    if causal:
        vis &= d >= 0
    if window is not None:
        vis &= d < window
    return vis[None, None]


_PROBE_NAME_PREFIX = "gammalens_probe"


@contextlib.contextmanager
def probing(model: Any, probe: DistanceProbe) -> Iterator[DistanceProbe]:
    """Install ``probe`` as ``model``'s attention implementation for the duration of the block.

    The function is registered under a fresh name in transformers' ``AttentionInterface`` (and the
    sdpa mask builder under the same name in ``AttentionMaskInterface``, so the model builds the masks
    the probe expects); on exit both are removed and the previous implementation is restored.

    >>> with probing(model, probe):       # doctest: +SKIP
    ...     model(input_ids)
    """
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    from transformers.modeling_utils import AttentionInterface

    if not getattr(model, "_supports_attention_backend", False):
        raise ModelError(
            f"{type(model).__name__} ({getattr(model.config, 'model_type', '?')}) does not route attention through "
            "transformers' AttentionInterface, so it cannot be measured exactly; no softmax-attention hook exists"
        )
    name = f"{_PROBE_NAME_PREFIX}_{next(_PROBE_IDS)}"
    previous = model.config._attn_implementation
    use_fused = probe.resolve(execution_device(model)) == "triton"  # offloaded device_map weights sit on meta
    AttentionInterface.register(name, probe)
    AttentionMaskInterface.register(name, fused.no_mask if use_fused else sdpa_mask)  # the fused probe reads the layout
    try:
        model.set_attn_implementation(name)
        yield probe
    finally:
        probe.release()
        with contextlib.suppress(Exception):
            model.set_attn_implementation(previous)
        AttentionInterface._global_mapping.pop(name, None)
        AttentionMaskInterface._global_mapping.pop(name, None)


def registered_probes() -> list[str]:
    """Names of probe functions currently registered with transformers (empty outside :func:`probing`)."""
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    names = set(AttentionInterface._global_mapping) | set(AttentionMaskInterface._global_mapping)
    return sorted(n for n in names if n.startswith(_PROBE_NAME_PREFIX))
