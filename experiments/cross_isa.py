"""How far training trajectories move between CPU instruction sets: the grokking run and a zoo model.

PyTorch picks its CPU kernels at start-up from the instruction set (``ATEN_CPU_CAPABILITY``: default,
avx2, avx512) and MKL/oneDNN pick theirs (``MKL_ENABLE_INSTRUCTIONS``, ``ONEDNN_MAX_CPU_ISA``). The same
seed on an AVX2 machine (e.g. AMD EPYC) and on an AVX-512 one therefore reduces floats in another order,
and a long training run drifts apart. This script forces each setting in a fresh subprocess on this
machine and prints, per setting, the figures the tests and the docs rely on, so that the spread is a
measurement, not a guess (``docs/determinism.md`` reports it)::

    python experiments/cross_isa.py                      # grok run + one zoo model, ~12 min on 2 cores
    python experiments/cross_isa.py --skip-zoo           # the grokking run only (~1 min)

A setting the CPU cannot run (avx512 on an AVX2 machine) falls back silently inside PyTorch; the row
records the capability PyTorch reports.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}

GROK = """
import csv, json, sys, tempfile, pathlib, torch
from gammalens.grok.experiment import RunConfig, train_run
d = pathlib.Path(tempfile.mkdtemp())
train_run(RunConfig(p=11, d_model=16, d_mlp=32, lr=1e-2, steps=300, every=10), d, "r")
rows = list(csv.DictReader((d / "r.csv").open()))
acc = [float(r["train_acc"]) for r in rows]
loss = [float(r["train_loss"]) for r in rows]
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
    "first_loss": loss[0], "max_train_acc": max(acc), "final_train_acc": acc[-1],
    "min_train_acc_last10": min(acc[-10:]), "median_loss_last10": sorted(loss[-10:])[5],
    "memorised_step": next((int(r["step"]) for r, a in zip(rows, acc) if a >= 0.95), None)}))
"""

ZOO = """
import json, sys, subprocess, torch, pathlib
out = sys.argv[1]
gl = [str(pathlib.Path(sys.executable).parent / "gammalens")]
subprocess.run([*gl, "zoo", "train", "--out", out, "--thetas", "1e4", "--contexts", "128", "--steps", sys.argv[2]],
               check=True, capture_output=True)
subprocess.run([*gl, "zoo", "measure", "--zoo", out, "--windows", "16", "--bootstrap", "50", "--docs", out + "/docs"],
               check=True, capture_output=True)
info = json.load(open(out + "/theta1e4-T128/zoo.json"))
import csv
row = next(csv.DictReader(open(out + "/docs/zoo.csv")))
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
    "final_heldout_loss": info["final_heldout_loss"], "gamma_text": float(row["gamma"]),
    "gamma_random": float(row.get("gamma_random", "nan"))}))
"""


def run(code: str, env: dict[str, str], *args: str) -> dict:
    full = {**os.environ, **env}
    done = subprocess.run([sys.executable, "-c", code, *args], env=full, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{env}: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-zoo", action="store_true")
    ap.add_argument("--zoo-steps", default="400")
    ap.add_argument("--out", type=Path, default=Path("docs/cross_isa.csv"))
    args = ap.parse_args()
    rows = []
    for name, env in SETTINGS.items():
        row = {"setting": name, **{f"grok_{k}": v for k, v in run(GROK, env).items()}}
        if not args.skip_zoo:
            with tempfile.TemporaryDirectory() as tmp:
                row.update({f"zoo_{k}": v for k, v in run(ZOO, env, tmp, args.zoo_steps).items()})
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with args.out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
