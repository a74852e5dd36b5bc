"""CKAMonitor: inter-layer linear CKA of any ``nn.Module`` on a fixed probe batch, every N training steps.

Forward hooks on named modules capture their outputs on the probe batch; they are installed for one
evaluation and removed in ``finally``, so between evaluations the model carries no hooks. Each
evaluation runs under ``torch.no_grad()`` in eval mode and restores every submodule's train/eval flag.
The debiased CKA of the first consecutive pair feeds a :class:`ReRiseDetector` (it never sees accuracy).

>>> monitor = CKAMonitor(model, probe_inputs=x_probe, every=100, csv_path="cka.csv")   # doctest: +SKIP
>>> for step in range(steps):                                                         # doctest: +SKIP
...     loss = train_step(); monitor.step(step)
>>> monitor.detector.fired_step                                                      # doctest: +SKIP
"""

from __future__ import annotations

import csv
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gammalens.grok.cka import MIN_SAMPLES, CKAError, cka_from_grams, gram
from gammalens.grok.detector import ReRiseDetector, ReRiseEvent

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger("gammalens.grok")

_BLOCK_LIST_NAMES = ("layers", "h", "blocks", "block", "layer")


class MonitorError(CKAError):
    """The monitor cannot be set up: unknown module names, too small a probe batch, every ≤ 0."""


def default_layers(model: nn.Module) -> list[str]:
    """Names of the transformer blocks (their outputs are the residual stream after each block).

    The blocks are the first ``nn.ModuleList`` named one of ``layers``, ``h``, ``blocks``, ``block``,
    ``layer`` (Llama, GPT-2, our toy models, T5, BERT), else the first ``ModuleList`` with ≥ 2 entries.
    """
    from torch import nn

    lists = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, nn.ModuleList) and len(mod) >= 2]
    for name, mod in lists:
        if name.rsplit(".", 1)[-1] in _BLOCK_LIST_NAMES:
            return [f"{name}.{i}" for i in range(len(mod))]
    if lists:
        name, mod = lists[0]
        return [f"{name}.{i}" for i in range(len(mod))]
    raise MonitorError("no block list (nn.ModuleList) found in the model; pass layers=[module names] explicitly")


def _first_tensor(output: Any) -> torch.Tensor:
    """A block's hidden states: the output itself, or the first element of a tuple/ModelOutput."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, Sequence) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise MonitorError(f"cannot read a tensor from a module output of type {type(output).__name__}")


def _n_samples(probe: Any) -> int:
    first = probe if not isinstance(probe, Mapping) else next(iter(probe.values()))
    return int(first.shape[0])


@dataclass(frozen=True)
class CKARecord:
    """One monitor evaluation.

    Attributes
    ----------
    step : int
        Training step.
    cka : dict[str, float]
        Debiased linear CKA per layer pair, keyed ``"<layer a>|<layer b>"``.
    cka_biased : dict[str, float]
        Biased linear CKA for the same pairs.
    seconds : float
        Wall time of this evaluation (forward pass plus CKA), in seconds.
    """

    step: int
    cka: dict[str, float]
    cka_biased: dict[str, float]
    seconds: float

    def to_dict(self) -> dict[str, float | int]:
        row: dict[str, float | int] = {"step": self.step}
        row.update({f"cka.{k}": v for k, v in self.cka.items()})
        row.update({f"cka_biased.{k}": v for k, v in self.cka_biased.items()})
        row["seconds"] = self.seconds
        return row


class CKAMonitor:
    """Track linear CKA between layer representations of ``model`` on a fixed probe batch.

    Parameters
    ----------
    model : nn.Module
        Any module; called as ``model(probe_inputs)`` or ``model(**probe_inputs)`` for a mapping.
    probe_inputs : torch.Tensor or mapping of tensors
        Fixed probe batch, first axis the n ≥ 4 samples.
    layers : sequence of str, optional
        Module names to hook (``dict(model.named_modules())`` keys); default :func:`default_layers`.
    every : int
        Evaluate when ``step % every == 0`` (> 0).
    all_pairs : bool
        Also record CKA for every pair of layers, not only consecutive ones.
    select : callable, optional
        Maps each captured output (n, ...) to the representation compared, e.g. ``lambda h: h[:, -1]``
        for the last position; default flattens every non-sample axis.
    detector : ReRiseDetector, optional
        Fed with the debiased CKA of the first consecutive pair; a default one when omitted.
    csv_path : path, optional
        Append one CSV row per evaluation.
    tensorboard_dir : path, optional
        Write scalars ``cka/<pair>`` with ``torch.utils.tensorboard`` (needs the ``tensorboard`` package).
    """

    def __init__(self, model: nn.Module, probe_inputs: Any, *, layers: Sequence[str] | None = None, every: int = 100,
                 all_pairs: bool = False, select: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 detector: ReRiseDetector | None = None, csv_path: str | Path | None = None,
                 tensorboard_dir: str | Path | None = None) -> None:
        if not isinstance(every, int) or every <= 0:
            raise MonitorError(f"every must be a positive number of steps, got {every}")
        n = _n_samples(probe_inputs)
        if n < MIN_SAMPLES:
            raise MonitorError(f"the probe batch needs at least {MIN_SAMPLES} samples (debiased HSIC), got {n}")
        names = list(layers) if layers is not None else default_layers(model)
        modules = dict(model.named_modules())
        unknown = [x for x in names if x not in modules]
        if unknown:
            raise MonitorError(f"unknown module name(s) {unknown}; see dict(model.named_modules()) for valid names")
        if len(names) < 2:
            raise MonitorError(f"CKA between layers needs at least 2 module names, got {names}")
        self.model, self.probe_inputs, self.layers, self.every = model, probe_inputs, names, every
        self.select = select
        consecutive = list(itertools.pairwise(names))
        self.pairs = ([(a, b) for i, a in enumerate(names) for b in names[i + 1:]] if all_pairs else consecutive)
        self.detect_pair = f"{consecutive[0][0]}|{consecutive[0][1]}"
        self.detector = detector if detector is not None else ReRiseDetector()
        self.records: list[CKARecord] = []
        self.events: list[ReRiseEvent] = []
        self.csv_path = Path(csv_path) if csv_path is not None else None
        self._writer = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter  # needs the optional `tensorboard` package

            self._writer = SummaryWriter(str(tensorboard_dir))

    def representations(self) -> dict[str, torch.Tensor]:
        """One probe forward pass: {layer name: representation (n, ...)}; hooks removed, modes restored."""
        import torch

        captured: dict[str, torch.Tensor] = {}
        modules = dict(self.model.named_modules())
        modes = {name: m.training for name, m in modules.items()}
        handles = []
        try:
            for name in self.layers:
                def hook(_mod: Any, _inp: Any, out: Any, name: str = name) -> None:
                    h = _first_tensor(out).detach()
                    captured[name] = self.select(h) if self.select is not None else h
                handles.append(modules[name].register_forward_hook(hook))
            self.model.eval()
            with torch.no_grad():
                if isinstance(self.probe_inputs, Mapping):
                    self.model(**self.probe_inputs)
                else:
                    self.model(self.probe_inputs)
        finally:
            for h in handles:
                h.remove()
            for name, m in modules.items():
                m.training = modes[name]
        missing = [x for x in self.layers if x not in captured]
        if missing:
            raise MonitorError(f"module(s) {missing} did not run in the probe forward pass; choose modules on its path")
        return captured

    def evaluate(self, step: int) -> CKARecord:
        """Measure CKA now (whatever the step), record it and feed the detector."""
        t0 = time.perf_counter()
        reps = self.representations()
        grams = {name: gram(r, name) for name, r in reps.items()}
        cka, biased = {}, {}
        for a, b in self.pairs:
            key = f"{a}|{b}"
            cka[key] = cka_from_grams(grams[a], grams[b], debiased=True)
            biased[key] = cka_from_grams(grams[a], grams[b], debiased=False)
        if self.detect_pair not in cka:
            a, b = self.detect_pair.split("|")
            cka[self.detect_pair] = cka_from_grams(grams[a], grams[b], debiased=True)
        record = CKARecord(step=int(step), cka=cka, cka_biased=biased, seconds=time.perf_counter() - t0)
        self.records.append(record)
        self._emit(record)
        if self.detector.update(step, cka[self.detect_pair]):
            event = self.detector.event
            assert event is not None
            self.events.append(event)
            log.warning("CKA re-rise detected at step %d (CKA %.3f, minimum %.3f at step %d)",
                        event.step, event.value, event.minimum, event.minimum_step)
        return record

    def step(self, step: int) -> CKARecord | None:
        """Call once per training step; evaluates when ``step % every == 0`` and returns the record, else None."""
        return self.evaluate(step) if step % self.every == 0 else None

    def _emit(self, record: CKARecord) -> None:
        row = record.to_dict()
        if self.csv_path is not None:
            new = not self.csv_path.exists()
            with self.csv_path.open("a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(row))
                if new:
                    w.writeheader()
                w.writerow(row)
        if self._writer is not None:
            for k, v in record.cka.items():
                self._writer.add_scalar(f"cka/{k}", v, record.step)
            for k, v in record.cka_biased.items():
                self._writer.add_scalar(f"cka_biased/{k}", v, record.step)

    def close(self) -> None:
        """Flush and close the TensorBoard writer, if any."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def to_pandas(self) -> Any:
        """All records as a DataFrame, one row per evaluation."""
        import pandas as pd

        return pd.DataFrame([r.to_dict() for r in self.records])
