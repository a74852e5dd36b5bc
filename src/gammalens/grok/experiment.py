"""One grokking run: train the toy transformer full-batch with AdamW, monitor CKA, record when it groks.

Every ``every`` steps the run records train/test loss and accuracy and the monitor's CKA between the
residual stream after block 0 and after block 1 at the ``=`` position, on a fixed probe batch of
training inputs (the detector sees only that CKA series). The grokking step is the first evaluation
step with test accuracy ≥ ``grok_threshold``. Optionally a CKA penalty λ·(1 − CKA) on a training
subset pushes the inter-layer CKA towards 1 (the intervention).

Outputs per run (both written to temporary names, then renamed together, the JSON last, so a finished run
is never half-written; :mod:`gammalens.runs.atomic`): ``<name>.csv`` (one row per evaluation) and ``<name>.json``
(config, grokking step, detector event). The run passes the stages ``measured`` (trained), ``staged`` (both
files under temporary names) and ``written`` (both renamed) of :data:`gammalens.runs.atomic.STAGES`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gammalens.errors import GammalensError
from gammalens.grok.cka import hsic_debiased
from gammalens.grok.detector import ReRiseDetector
from gammalens.grok.monitor import CKAMonitor
from gammalens.grok.task import ToyTransformer, last_position, modular_addition, sparse_parity
from gammalens.runs import atomic

TASKS = ("modular", "parity")


class GrokConfigError(GammalensError):
    """Invalid grokking-run settings."""


@dataclass(frozen=True)
class RunConfig:
    """Settings of one run; every default is the sweep's grokking condition (see docs/grokking.md)."""

    task: str = "modular"  # "modular" (a + b mod p) or "parity" (sparse parity)
    p: int = 97  # modulus (modular task)
    train_fraction: float = 0.5  # fraction of the p² pairs used for training
    n_bits: int = 10  # sparse parity: input bits (all 2ⁿ strings are the data)
    k_bits: int = 3  # sparse parity: relevant bits
    n_train: int = 400  # sparse parity: training strings (the other 2ⁿ − n_train are the test set)
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    n_layers: int = 2
    lr: float = 1e-3  # AdamW, betas (0.9, 0.98), 10 warm-up steps
    weight_decay: float = 1.0
    steps: int = 20_000  # step budget
    every: int = 50  # evaluation period (steps)
    probe_size: int = 256  # probe batch for CKA (training inputs)
    grok_threshold: float = 0.95  # test accuracy defining the grokking step
    cka_penalty: float = 0.0  # λ of the intervention loss λ·(1 − debiased CKA(block 0, block 1))
    seed: int = 0
    device: str = "cpu"
    delta: float = 0.05  # detector: see ReRiseDetector
    window: int = 5
    smooth: int = 5
    stop_after_grok: int | None = None  # stop this many steps after grokking (None: run the whole budget)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise GrokConfigError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.p < 3:
            raise GrokConfigError(f"p must be ≥ 3, got {self.p}")
        if not 0.0 < self.train_fraction < 1.0:
            raise GrokConfigError(f"train_fraction must be in (0, 1), got {self.train_fraction}")
        if self.steps < 1 or self.every < 1:
            raise GrokConfigError(f"steps and every must be ≥ 1, got steps={self.steps}, every={self.every}")
        if self.probe_size < 4:
            raise GrokConfigError(f"probe_size must be ≥ 4 (debiased HSIC), got {self.probe_size}")
        if self.d_model % self.n_heads:
            raise GrokConfigError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.task == "parity" and not 0 < self.n_train < 2**self.n_bits:
            raise GrokConfigError(f"n_train must be in (0, 2^n_bits) for sparse parity, got {self.n_train}")
        if self.n_layers < 2:
            raise GrokConfigError("the inter-layer CKA needs n_layers ≥ 2")
        if self.lr <= 0 or self.weight_decay < 0 or self.cka_penalty < 0:
            raise GrokConfigError("lr must be > 0; weight_decay and cka_penalty ≥ 0")


@dataclass(frozen=True)
class RunResult:
    """Outcome of one run.

    Attributes
    ----------
    config : RunConfig
    grok_step : int or None
        First evaluation step with test accuracy ≥ threshold; None if it never happened in the budget.
    fire_step : int or None
        Step at which the re-rise detector fired; None if it never did.
    lead : int or None
        grok_step − fire_step (steps; positive = warning before grokking).
    final_train_acc, final_test_acc : float
    steps_run : int
    seconds : float
    event : dict or None
        The detector's event (:class:`ReRiseEvent` as a dict).
    """

    config: RunConfig
    grok_step: int | None
    fire_step: int | None
    lead: int | None
    final_train_acc: float
    final_test_acc: float
    steps_run: int
    seconds: float
    event: dict[str, Any] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"] = asdict(self.config)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        return cls(**{**d, "config": RunConfig(**d["config"])})


def make_split(cfg: RunConfig) -> Any:

    if cfg.task == "modular":
        return modular_addition(cfg.p, cfg.train_fraction, cfg.seed)
    return sparse_parity(cfg.n_bits, cfg.k_bits, cfg.n_train, cfg.seed)


def train_run(cfg: RunConfig, out_dir: str | Path | None = None, name: str | None = None) -> RunResult:
    """Train one run; write ``<name>.csv`` and ``<name>.json`` under ``out_dir`` when given."""
    import torch
    import torch.nn.functional as F


    dev = torch.device(cfg.device)
    split = make_split(cfg)
    x_tr, y_tr = split.x_train.to(dev), split.y_train.to(dev)
    x_te, y_te = split.x_test.to(dev), split.y_test.to(dev)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    probe_idx = torch.randperm(len(x_tr), generator=g)[: cfg.probe_size].to(dev)
    torch.manual_seed(cfg.seed)
    model = ToyTransformer(split.vocab, split.classes, x_tr.shape[1], d_model=cfg.d_model, n_heads=cfg.n_heads,
                           d_mlp=cfg.d_mlp, n_layers=cfg.n_layers).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    detector = ReRiseDetector(delta=cfg.delta, window=cfg.window, smooth=cfg.smooth)
    monitor = CKAMonitor(model, x_tr[probe_idx], layers=["blocks.0", "blocks.1"], every=cfg.every,
                         select=last_position, detector=detector)

    captured: dict[str, torch.Tensor] = {}
    handles = []
    if cfg.cka_penalty > 0:
        for i in (0, 1):
            handles.append(model.blocks[i].register_forward_hook(
                lambda _m, _i, out, i=i: captured.__setitem__(f"b{i}", out[:, -1])))
    rows: list[dict[str, Any]] = []
    grok_step = None
    t0 = time.perf_counter()
    step = 0
    try:
        for step in range(cfg.steps + 1):
            model.train()
            logits = model(x_tr)
            loss = F.cross_entropy(logits, y_tr)
            total = loss
            if cfg.cka_penalty > 0:
                a = captured["b0"][probe_idx].double()
                b = captured["b1"][probe_idx].double()
                ka, kb = a @ a.T, b @ b.T
                cka = hsic_debiased(ka, kb) / (hsic_debiased(ka, ka) * hsic_debiased(kb, kb)).clamp_min(1e-30).sqrt()
                total = loss + cfg.cka_penalty * (1.0 - cka.float())
            if step % cfg.every == 0:
                for h in handles:  # the monitor's probe pass must not overwrite the penalty's activations
                    h.remove()
                with torch.no_grad():
                    model.eval()
                    te_logits = model(x_te)
                    row = {"step": step, "train_loss": loss.item(),
                           "train_acc": (logits.argmax(1) == y_tr).float().mean().item(),
                           "test_loss": F.cross_entropy(te_logits, y_te).item(),
                           "test_acc": (te_logits.argmax(1) == y_te).float().mean().item()}
                rec = monitor.evaluate(step)
                row["cka"] = rec.cka[monitor.detect_pair]
                row["cka_biased"] = rec.cka_biased[monitor.detect_pair]
                rows.append(row)
                if grok_step is None and row["test_acc"] >= cfg.grok_threshold:
                    grok_step = step
                if cfg.cka_penalty > 0:
                    handles = [model.blocks[i].register_forward_hook(
                        lambda _m, _i, out, i=i: captured.__setitem__(f"b{i}", out[:, -1])) for i in (0, 1)]
                if not math.isfinite(row["train_loss"]):
                    raise GrokConfigError(f"training diverged (loss {row['train_loss']}) at step {step}; lower lr")
                if grok_step is not None and cfg.stop_after_grok is not None and step >= grok_step + cfg.stop_after_grok:
                    break
            if step == cfg.steps:
                break
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            sched.step()
    finally:
        for h in handles:
            h.remove()
    fire = detector.fired_step
    result = RunResult(config=cfg, grok_step=grok_step, fire_step=fire,
                       lead=None if (grok_step is None or fire is None) else grok_step - fire,
                       final_train_acc=rows[-1]["train_acc"], final_test_acc=rows[-1]["test_acc"],
                       steps_run=step, seconds=time.perf_counter() - t0,
                       event=None if detector.event is None else detector.event.to_dict())
    atomic.stage("measured", record=False)
    if out_dir is not None:
        write_run_files(rows, result, Path(out_dir), name or f"run_seed{cfg.seed}")
    return result


def write_run_files(rows: list[dict[str, Any]], result: RunResult, out: Path, name: str) -> list[Path]:
    """Write ``<name>.csv`` and ``<name>.json`` into ``out``: both or neither (the JSON, renamed last, marks done).

    A failure (a full disk: :class:`~gammalens.runs.atomic.AtomicWriteError`) or an interrupt before the rename
    leaves neither, nor the ``out`` folder if this call created it.
    """
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise atomic.AtomicWriteError(out / f"{name}.json", err) from None
    csv_path, json_path = out / f"{name}.csv", out / f"{name}.json"
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    staged: list[atomic.Prepared] = []
    try:
        staged.append(atomic.prepare(csv_path, buf.getvalue()))
        staged.append(atomic.prepare(json_path, json.dumps(result.to_dict(), indent=1)))
        atomic.stage("staged")
        try:
            atomic.commit(*staged, then=lambda: atomic.stage("written", files=[csv_path, json_path]))
        except atomic.AtomicWriteError as err:
            if err.path == json_path:  # the CSV was renamed, its JSON not: no CSV without its JSON
                csv_path.unlink(missing_ok=True)
            raise
    finally:
        atomic.discard(*staged)  # what was not renamed
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if empty: a failed first run leaves no folder behind
    return [csv_path, json_path]
