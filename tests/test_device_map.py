"""``--device auto``: a model split by accelerate's ``device_map`` measures exactly as the same model in one piece.

On a CPU-only machine a split means some modules on ``cpu`` and others offloaded to ``disk``: their weights sit
on the ``meta`` device and accelerate's hooks load them at forward time, so ``next(model.parameters())`` is on
``meta`` when the input embeddings are offloaded — the case that broke ``measure`` (sums and inputs on meta).
``benchmarks/gpu_check.py`` runs :func:`compare_placement` with layers on ``cuda:0`` (and ``cuda:1``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gammalens.measuring.pipeline import MeasureConfig, measure
from gammalens.model.load import execution_device, load_model, resolve_model
from gammalens.probe.backend import registered_probes
from tests.conftest import save_tiny

PROFILE_RTOL = 1e-12  # max |split − plain| / max |plain| over each profile array
GAMMA_ATOL = 1e-9  # γ and its CI bounds, every head, layer and the model
SETTINGS = {"corpus": "random", "context": 32, "windows": 4, "batch_size": 2, "bootstrap": 50, "seed": 0}


def split_maps(main: str | int, offload: str, second: str | int | None = None) -> dict[str, dict[str, Any]]:
    """``device_map``s of the tiny two-layer Llama (``tests.conftest.arch_specs()['llama_gqa']``) by case name.

    ``main`` holds the weights that stay put; ``offload`` is ``'disk'`` (on a CPU-only machine ``'cpu'``
    *is* the main device) or ``'cpu'`` next to a GPU; ``second`` is a second GPU for a split across two.
    """
    maps = {
        "embeddings_offloaded": {"model.embed_tokens": offload, "model.rotary_emb": main, "model.layers.0": main,
                                 "model.layers.1": offload, "model.norm": main, "lm_head": offload},
        "layers_offloaded": {"model.embed_tokens": main, "model.rotary_emb": main, "model.layers.0": offload,
                             "model.layers.1": main, "model.norm": offload, "lm_head": main},
    }
    if second is not None:
        maps["two_devices"] = {"model.embed_tokens": main, "model.rotary_emb": main, "model.layers.0": main,
                               "model.layers.1": second, "model.norm": second, "lm_head": second}
    return maps


def load_placed(model_dir: Path, device_map: dict[str, Any] | None, device: str = "cpu",
                offload_folder: Path | None = None) -> tuple[Any, Any]:
    """The model of ``model_dir`` in fp32 with sdpa, dispatched with ``device_map`` or else moved to ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw: dict[str, Any] = {"attn_implementation": "sdpa", "dtype": torch.float32}
    if device_map is not None:
        kw |= {"device_map": device_map, "offload_folder": str(offload_folder) if offload_folder else None}
    net = AutoModelForCausalLM.from_pretrained(model_dir, **kw)
    if device_map is None:
        net.to(device)
    return net.eval(), AutoTokenizer.from_pretrained(model_dir)


def placement(net: Any) -> dict[str, Any]:
    """Where a dispatched model's weights are: distinct ``hf_device_map`` values, parameter devices, meta count."""
    devices = sorted({str(p.device) for p in net.parameters()})
    return {"map_values": sorted({str(v) for v in getattr(net, "hf_device_map", {}).values()}),
            "param_devices": devices, "meta_params": sum(p.device.type == "meta" for p in net.parameters()),
            "execution_device": str(execution_device(net))}


def max_rel_diff(a: Any, b: Any) -> float:
    """max |a − b| / max |b| over the arrays of two profiles (0 where both are all-zero)."""
    worst = 0.0
    for f in dataclasses.fields(b):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(y, np.ndarray):
            assert x.shape == y.shape, f.name
            scale = float(np.abs(y).max()) if y.size else 0.0
            diff = float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max()) if y.size else 0.0
            worst = max(worst, diff / scale if scale else diff)
    return worst


def max_gamma_diff(a: list[dict], b: list[dict]) -> float:
    """max |Δ| of γ and its CI bounds over the fit rows of two measurements (rows matched by name)."""
    by_name = {r["name"]: r for r in b}
    assert sorted(by_name) == sorted(r["name"] for r in a)
    return max(abs(float(r[k]) - float(by_name[r["name"]][k]))
               for r in a for k in ("gamma", "gamma_ci_low", "gamma_ci_high"))


def compare_placement(model_dir: Path, device_map: dict[str, Any], reference_device: str, offload_folder: Path,
                      **settings: Any) -> dict[str, Any]:
    """Measure ``model_dir`` split by ``device_map`` and in one piece on ``reference_device``; the differences.

    Returns the placement of the split model (:func:`placement`), the profile's max relative difference
    and γ's max absolute difference, and each side's probe backend.
    """
    config = MeasureConfig(model=str(model_dir), **(SETTINGS | settings))
    split = load_placed(model_dir, device_map, offload_folder=offload_folder)
    where = placement(split[0])
    got = measure(config=config, loaded=split)
    plain = load_placed(model_dir, None, reference_device)
    want = measure(config=config, loaded=plain)
    return where | {"profile_max_rel": max_rel_diff(got.profile, want.profile),
                    "gamma_max_abs": max_gamma_diff(got.fits, want.fits),
                    "backend": got.manifest["probe"]["backend"], "reference_backend": want.manifest["probe"]["backend"]}


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return save_tiny("llama_gqa", tmp_path_factory.mktemp("split_llama"))


@pytest.mark.parametrize(("case", "backend"), [("embeddings_offloaded", "chunked"), ("layers_offloaded", "chunked"),
                                               ("embeddings_offloaded", "triton")])
def test_split_model_measures_like_the_whole(llama_dir: Path, tmp_path: Path, case: str, backend: str) -> None:
    # triton: the backend (and its mask builder) is chosen from the execution device, not a parameter on meta
    extra = {"backend": backend}
    if backend == "triton":
        pytest.importorskip("triton")  # on CPU its kernels run in Triton's interpreter (tests/conftest.py): slow
        extra["windows"] = 2
    res = compare_placement(llama_dir, split_maps("cpu", "disk")[case], "cpu", tmp_path / "offload", **extra)
    # the split is real: two kinds of placement, offloaded weights on meta
    assert res["map_values"] == ["cpu", "disk"] and res["meta_params"] > 0, res
    assert ("meta" in res["param_devices"]) and res["execution_device"] == "cpu", res
    assert res["backend"] == res["reference_backend"] == backend
    assert res["profile_max_rel"] <= PROFILE_RTOL, res
    assert res["gamma_max_abs"] <= GAMMA_ATOL, res
    assert registered_probes() == []


def test_split_measurement_is_not_trivially_equal(llama_dir: Path, tmp_path: Path) -> None:
    """The comparison has teeth: another seed's windows (same split) differ far beyond the tolerances."""
    split = load_placed(llama_dir, split_maps("cpu", "disk")["embeddings_offloaded"], offload_folder=tmp_path)
    a = measure(config=MeasureConfig(model=str(llama_dir), **SETTINGS), loaded=split)
    b = measure(config=MeasureConfig(model=str(llama_dir), **(SETTINGS | {"seed": 1})), loaded=split)
    assert max_rel_diff(a.profile, b.profile) > 1e3 * PROFILE_RTOL
    assert max_gamma_diff(a.fits, b.fits) > 1e3 * GAMMA_ATOL


def test_taf_estimator_on_a_split_model(llama_dir: Path, tmp_path: Path) -> None:
    """The book's estimator (``--estimator taf``) places its inputs the same way: split == whole."""
    from gammalens.taf.estimator import taf_gamma

    split = load_placed(llama_dir, split_maps("cpu", "disk")["embeddings_offloaded"], offload_folder=tmp_path)
    got = taf_gamma(loaded=split, windows=2, batch_size=2, max_distance=30)
    want = taf_gamma(loaded=load_placed(llama_dir, None), windows=2, batch_size=2, max_distance=30)
    assert got.distances == want.distances == (10, 20, 30)
    np.testing.assert_allclose(got.attention, want.attention, rtol=PROFILE_RTOL, atol=0)
    assert abs(got.gamma - want.gamma) <= GAMMA_ATOL


def test_sinks_on_a_split_model(llama_dir: Path, tmp_path: Path) -> None:
    """``gammalens sinks`` (observers on the probe's probabilities, massive-activation hooks) on a split model."""
    from gammalens.sinks import measure_sinks

    kw = {"corpus": "random", "context": 32, "windows": 4, "bootstrap": 0}
    split = load_placed(llama_dir, split_maps("cpu", "disk")["embeddings_offloaded"], offload_folder=tmp_path)
    got = measure_sinks(split[0], tokenizer=split[1], **kw).baseline
    net, tok = load_placed(llama_dir, None)
    want = measure_sinks(net, tokenizer=tok, **kw).baseline
    for f in dataclasses.fields(want):
        x, y = getattr(got, f.name), getattr(want, f.name)
        if isinstance(y, np.ndarray) and y.dtype.kind in "fc":
            np.testing.assert_allclose(x, y, rtol=PROFILE_RTOL, atol=0, equal_nan=True, err_msg=f.name)
        elif isinstance(y, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=f.name)


def test_execution_device_plain_model(llama_dir: Path) -> None:
    net, _ = load_placed(llama_dir, None, "cpu")
    assert not hasattr(net, "hf_device_map")
    assert execution_device(net) == torch.device("cpu")


def test_execution_device_with_embeddings_offloaded(llama_dir: Path, tmp_path: Path) -> None:
    net, _ = load_placed(llama_dir, split_maps("cpu", "disk")["embeddings_offloaded"], offload_folder=tmp_path)
    assert next(net.parameters()).device.type == "meta"  # what measure used to take for the model's device
    assert execution_device(net) == torch.device("cpu")


def test_execution_device_reads_the_embeddings_hook(llama_dir: Path, tmp_path: Path) -> None:
    """Layers on two GPUs: the inputs go where the embeddings execute (accelerate gives a GPU as an index)."""
    net, _ = load_placed(llama_dir, split_maps("cpu", "disk")["layers_offloaded"], offload_folder=tmp_path)
    net.get_input_embeddings()._hf_hook.execution_device = 1  # as dispatch_model records 'cuda:1'
    assert execution_device(net) == torch.device("cuda", 1)


def test_execution_device_refuses_a_model_all_on_meta() -> None:
    from gammalens.errors import ModelError

    with torch.device("meta"):
        net = torch.nn.Linear(2, 2)
    with pytest.raises(ModelError, match="meta device"):
        execution_device(net)


def spy_from_pretrained(monkeypatch: pytest.MonkeyPatch, seen: list[dict], **replace: Any) -> None:
    """Record the keyword arguments ``load_model`` gives ``AutoModelForCausalLM.from_pretrained``, replacing some."""
    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained

    def spy(path: Any, **kw: Any) -> Any:
        net = original(path, **(kw | replace))
        seen.append(dict(kw) | {"placement": placement(net)})
        return net

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)


def test_load_model_auto_uses_a_device_map(llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU-only machine transformers 5 puts the whole model on cpu and, one device without offload, sets
    no ``hf_device_map`` (it dispatches only across ≥ 2 devices or with disk): the model still measures."""
    seen: list[dict] = []
    spy_from_pretrained(monkeypatch, seen)
    net, _ = load_model(resolve_model(str(llama_dir)), device="auto")
    assert seen[0]["device_map"] == "auto"
    assert {p.device for p in net.parameters()} == {torch.device("cpu")}
    assert execution_device(net) == torch.device("cpu")


def measure_cli(model_dir: Path, out: Path, capsys: pytest.CaptureFixture) -> dict:
    """``gammalens measure MODEL --device auto``: its manifest."""
    from gammalens.cli import main

    args = ["--corpus", "random", "--context", "32", "--windows", "4", "--bootstrap", "50", "--seed", "0"]
    with pytest.raises(SystemExit) as ex:
        main(["measure", str(model_dir), *args, "--device", "auto", "--out", str(out)])
    assert int(ex.value.code or 0) == 0, capsys.readouterr().err
    (run_dir,) = out.iterdir()
    return json.loads((run_dir / "manifest.json").read_text())


@pytest.mark.parametrize("split", [False, True])
def test_cli_measure_device_auto(llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                 monkeypatch: pytest.MonkeyPatch, split: bool) -> None:
    """``--device auto`` end to end; ``split``: accelerate's map for a model that does not fit one device is
    stood in for by :func:`split_maps` (embeddings on disk), so the CLI path meets meta weights too."""
    seen: list[dict] = []
    replace = {"device_map": split_maps("cpu", "disk")["embeddings_offloaded"],
               "offload_folder": str(tmp_path / "offload")} if split else {}
    spy_from_pretrained(monkeypatch, seen, **replace)
    man = measure_cli(llama_dir, tmp_path / "runs", capsys)
    assert seen[0]["device_map"] == "auto"
    assert (seen[0]["placement"]["meta_params"] > 0) == split, seen[0]["placement"]
    assert man["settings"]["device"] == "auto"
    monkeypatch.undo()
    plain = measure(config=MeasureConfig(model=str(llama_dir), device="cpu", **(SETTINGS | {"batch_size": 4})))
    for k in ("gamma", "gamma_ci_low", "gamma_ci_high"):
        assert abs(man["result"][k] - plain.model_fit[k]) <= GAMMA_ATOL, k
    assert registered_probes() == []


def test_gpu_check_device_map_step_dry_run() -> None:
    """``benchmarks/gpu_check.py``'s device_map step on CPU (disk offload, chunked): it stays runnable here.

    A subprocess, since the script drops ``TRITON_INTERPRET`` from the environment when imported."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    res = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--skip", "accuracy"],
                         cwd=REPO, env=os.environ | {"PYTHONPATH": f"{REPO / 'src'}:{REPO}"}, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    step = json.loads(res.stdout.strip().splitlines()[-1])["device_map"]
    assert step["ok"] is True and len(step["cases"]) == 2, step
    assert all(c["meta_params"] > 0 and c["max_rel_diff"] <= PROFILE_RTOL for c in step["cases"]), step
