"""Choosing the probe's backend: auto, chunked, triton; observers that need probabilities keep the chunked path.

The kernels themselves are checked in the contract matrix (tests/test_probe_contract.py); here, the choice.
"""

from __future__ import annotations

import pytest

from gammalens.errors import GammalensError
from gammalens.probe.fused import resolve_backend, triton_installed


def test_auto_is_chunked_off_cuda() -> None:
    assert resolve_backend("auto", "cpu", needs_probabilities=False) == ("chunked", None)
    assert resolve_backend("chunked", "cpu", needs_probabilities=True) == ("chunked", None)


def test_auto_is_triton_on_cuda_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import gammalens.probe.fused as fused

    monkeypatch.setattr(fused, "triton_installed", lambda: True)
    assert resolve_backend("auto", "cuda", needs_probabilities=False) == ("triton", None)
    monkeypatch.setattr(fused, "triton_installed", lambda: False)
    assert resolve_backend("auto", "cuda", needs_probabilities=False) == ("chunked", None)


def test_observers_fall_back_to_chunked_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    import gammalens.probe.fused as fused

    monkeypatch.setattr(fused, "triton_installed", lambda: True)
    name, note = resolve_backend("triton", "cuda", needs_probabilities=True)
    assert name == "chunked" and "probabilities" in note
    name, note = resolve_backend("auto", "cuda", needs_probabilities=True)
    assert name == "chunked" and "chunked" in note
    assert resolve_backend("auto", "cpu", needs_probabilities=True) == ("chunked", None)  # nothing was given up


def test_bad_choices_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(GammalensError, match="--backend must be one of"):
        resolve_backend("flash", "cpu", needs_probabilities=False)
    if triton_installed():
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(GammalensError, match="CUDA"):
            resolve_backend("triton", "cpu", needs_probabilities=False)


def test_measure_config_validates_backend() -> None:
    from gammalens.measuring.config import MeasureConfig

    assert MeasureConfig(backend="chunked").backend == "chunked"
    with pytest.raises(GammalensError, match="--backend"):
        MeasureConfig(backend="flash")


def test_sink_observers_run_chunked_under_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DistanceProbe with observers asked for triton resolves to the chunked path and says why."""
    import gammalens.probe.fused as fused
    from gammalens.probe.accumulate import ProfileAccumulator
    from gammalens.probe.backend import DistanceProbe

    monkeypatch.setattr(fused, "triton_installed", lambda: True)
    probe = DistanceProbe(ProfileAccumulator(1, 1, 1, 3, 1, 0), observers=[lambda *a: None], backend="triton")
    assert probe.resolve("cuda") == "chunked" and probe.note_


@pytest.mark.parametrize("padded", [False, True])
def test_auto_falls_back_when_the_kernel_fails(monkeypatch: pytest.MonkeyPatch, padded: bool) -> None:
    """With 'auto', a kernel that fails to compile or launch is redone on the chunked path (unpadded batches);
    the result equals a chunked run. With padding the model was given no mask, so the error is raised."""
    import torch

    import gammalens.probe.fused as fused
    from gammalens.probe.accumulate import BatchLayout, ProfileAccumulator
    from gammalens.probe.backend import DistanceProbe, probing
    from tests.conftest import build_tiny

    def broken(*args, **kwargs):
        raise RuntimeError("PassManager::run failed\nmore lines")

    model = build_tiny("llama_gqa")
    ids = torch.randint(0, 1000, (2, 24))
    lengths = torch.tensor([24, 17] if padded else [24, 24])
    layout = BatchLayout(torch.zeros(2, dtype=torch.long), lengths, torch.arange(2))
    ref = ProfileAccumulator(2, 4, 2, 23, 8, 1)
    with torch.no_grad(), probing(model, DistanceProbe(ref, backend="chunked")) as probe:
        probe.set_layout(layout)
        model(input_ids=ids, attention_mask=(torch.arange(24)[None] < lengths[:, None]).long())

    monkeypatch.setattr(fused, "resolve_backend", lambda *a, **k: ("triton", None))
    monkeypatch.setattr(fused, "fused_profile", broken)
    acc = ProfileAccumulator(2, 4, 2, 23, 8, 1)
    probe = DistanceProbe(acc, backend="auto")
    with torch.no_grad(), probing(model, probe):
        probe.set_layout(layout)
        if padded:
            with pytest.raises(RuntimeError, match="PassManager"):
                model(input_ids=ids)
            return
        model(input_ids=ids)
    assert probe.backend_ == "chunked" and "PassManager::run failed)" in probe.note_
    torch.testing.assert_close(acc.mass, ref.mass, rtol=0, atol=1e-9)
    torch.testing.assert_close(acc.doc_sink_sum, ref.doc_sink_sum, rtol=0, atol=1e-9)


def test_cli_rejects_an_unknown_backend_in_one_line(capsys, tmp_path) -> None:
    from tests.test_cli import assert_clean_failure, run_cli

    out = tmp_path / "runs"
    code, _, err = run_cli(["measure", "--backend", "flash", "--out", str(out), "--no-atlas"], capsys)
    assert_clean_failure(code, err, out, "--backend")


def test_manifest_records_the_backend_that_ran(minilm_run) -> None:
    # MiniLM is bidirectional: its layers take the PyTorch softmax, not the causal C kernel
    assert minilm_run.manifest["probe"] == {"backend": "chunked", "note": None, "kernel": "torch"}
    assert minilm_run.manifest["settings"]["backend"] == "auto"


def test_automatic_chunks_are_capped_on_the_cpu_only() -> None:
    from gammalens.probe.backend import CPU_MAX_CHUNK, DistanceProbe

    probe = DistanceProbe(accumulator=None)  # 32 MiB budget: 9 heads × 2048 keys × 4 B → 455 queries
    assert probe.chunk_for(1, 9, 2048, "cpu") == CPU_MAX_CHUNK
    assert probe.chunk_for(1, 9, 2048, "cuda") == 32 * 2**20 // (9 * 2048 * 4)
    assert probe.chunk_for(1, 9, 65536, "cpu") == 32 * 2**20 // (9 * 65536 * 4) < CPU_MAX_CHUNK
    assert probe.chunk_for(1, 9, 50, "cpu") == 50  # never more queries than the sequence has
    assert DistanceProbe(accumulator=None, chunk_size=300).chunk_for(1, 9, 2048, "cpu") == 300
