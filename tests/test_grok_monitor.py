"""CKAMonitor: the CKA it records, its hooks and train/eval bookkeeping, bad input, and the TrainerCallback."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

from gammalens.grok.cka import CKAError, linear_cka
from gammalens.grok.monitor import CKAMonitor, MonitorError, default_layers
from gammalens.grok.task import ToyTransformer, last_position, modular_addition


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.fixture
def toy() -> tuple[ToyTransformer, torch.Tensor]:
    torch.manual_seed(0)
    split = modular_addition(7, 0.5, seed=0)
    return ToyTransformer(split.vocab, split.classes, 3, d_model=16, d_mlp=32), split.x_train[:16]


def block_outputs(model: ToyTransformer, x: torch.Tensor) -> list[torch.Tensor]:
    """The residual stream after each block, by re-running the forward pass by hand (the reference)."""
    with torch.no_grad():
        h = model.embed(x) + model.pos[: x.shape[1]]
        outs = []
        for block in model.blocks:
            h = block(h)
            outs.append(h)
    return outs


def test_records_the_cka_of_the_block_outputs(toy, tmp_path) -> None:
    model, x = toy
    model.blocks.append(type(model.blocks[0])(16, 4, 32))  # 3 blocks → 2 consecutive pairs, 3 pairs in all
    mon = CKAMonitor(model, x, every=5, all_pairs=True, select=last_position, csv_path=tmp_path / "cka.csv")
    assert mon.layers == ["blocks.0", "blocks.1", "blocks.2"] == default_layers(model)
    assert [mon.step(s) is not None for s in range(11)] == [s % 5 == 0 for s in range(11)]
    h = [o[:, -1] for o in block_outputs(model, x)]
    rec = mon.records[-1]
    for (i, j) in [(0, 1), (1, 2), (0, 2)]:
        key = f"blocks.{i}|blocks.{j}"
        assert rec.cka[key] == pytest.approx(linear_cka(h[i], h[j]), abs=1e-12)
        assert rec.cka_biased[key] == pytest.approx(linear_cka(h[i], h[j], debiased=False), abs=1e-12)
    rows = list(csv.DictReader((tmp_path / "cka.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 5, 10]
    assert float(rows[-1]["cka.blocks.0|blocks.1"]) == pytest.approx(rec.cka["blocks.0|blocks.1"])
    assert list(mon.to_pandas()["step"]) == [0, 5, 10]


def test_restores_train_eval_state_and_leaves_no_hooks(toy) -> None:
    model, x = toy
    model.train()
    model.blocks[1].eval()  # a mixed state must come back exactly
    before = {n: m.training for n, m in model.named_modules()}
    mon = CKAMonitor(model, x, every=1)
    mon.step(0)
    assert {n: m.training for n, m in model.named_modules()} == before
    assert no_hooks(model)


def test_hooks_removed_and_state_restored_when_the_forward_fails(toy) -> None:
    model, x = toy
    model.train()
    mon = CKAMonitor(model, x[:, :5] * 0 + 10**6, every=1)  # token ids out of range: the forward raises
    with pytest.raises(IndexError):
        mon.step(0)
    assert no_hooks(model) and all(m.training for m in model.modules())


def test_detector_is_fed_the_first_pair_and_fires_a_log_line(toy, caplog) -> None:
    model, x = toy
    mon = CKAMonitor(model, x, every=1)
    values = iter([0.9] * 6 + [0.5] * 8 + [0.8] * 8)
    mon.detector.update = lambda step, value, _orig=mon.detector.update: _orig(step, next(values))  # planted curve
    for s in range(22):
        mon.step(s)
    assert mon.detector.fired and len(mon.events) == 1
    assert "re-rise detected" in caplog.text


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"layers": ["blocks.0", "nope"]}, "unknown module"),
    ({"every": 0}, "every"),
    ({"every": -3}, "every"),
    ({"layers": ["blocks.0"]}, "at least 2"),
])
def test_bad_settings(toy, kwargs: dict, match: str) -> None:
    model, x = toy
    with pytest.raises(MonitorError, match=match):
        CKAMonitor(model, x, **kwargs)
    assert no_hooks(model)


def test_too_small_probe_batch(toy) -> None:
    model, x = toy
    with pytest.raises(MonitorError, match="at least 4"):
        CKAMonitor(model, x[:3])


def test_nan_representations(toy) -> None:
    model, x = toy
    with torch.no_grad():
        model.blocks[0].out.weight.fill_(float("nan"))
    with pytest.raises(CKAError, match="NaN"):
        CKAMonitor(model, x).step(0)
    assert no_hooks(model)


def test_trainer_callback_on_a_tiny_trainer_run(tmp_path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    from gammalens.grok.callback import CKACallback

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    model = LlamaForCausalLM(cfg)
    ids = torch.randint(0, 64, (16, 12), generator=torch.Generator().manual_seed(1))
    data = [{"input_ids": r, "labels": r} for r in ids]
    probe = {"input_ids": ids[:8]}
    cb = CKACallback(probe, layers=["model.layers.0", "model.layers.1"], every=2, csv_path=tmp_path / "cka.csv")
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=6, per_device_train_batch_size=4,
                             learning_rate=1e-3, report_to=[], save_strategy="no", logging_strategy="no",
                             use_cpu=True, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=data, callbacks=[cb]).train()
    assert [r.step for r in cb.monitor.records] == [2, 4, 6]
    assert no_hooks(model)
    # the last record is the CKA of the trained model's layer outputs (hidden_states[1], [2]), recomputed here
    model.eval()
    with torch.no_grad():
        hs = model(**probe, output_hidden_states=True).hidden_states
    assert cb.monitor.records[-1].cka["model.layers.0|model.layers.1"] == pytest.approx(
        linear_cka(hs[1], hs[2]), abs=1e-6)
    assert len(list(csv.DictReader((tmp_path / "cka.csv").open()))) == 3


def test_tensorboard_scalars(toy, tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, x = toy
    mon = CKAMonitor(model, x, every=1, tensorboard_dir=tmp_path / "tb")
    for s in range(3):
        mon.step(s)
    mon.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    events = acc.Scalars("cka/blocks.0|blocks.1")
    assert [e.step for e in events] == [0, 1, 2]
    assert events[-1].value == pytest.approx(mon.records[-1].cka["blocks.0|blocks.1"], rel=1e-6)
