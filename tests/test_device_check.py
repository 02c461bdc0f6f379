"""``benchmarks/device_check.py``, the prepared GPU run, kept runnable: its dry run (``--tiny``) runs every phase on
this CPU and fills the results table; a run cut short still reports what it measured."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import device_check  # noqa: E402

PHASES = ("check", "prepare", "step-torch", "step-jax", "restore-torch", "restore-jax", "supir-memory", "supir-run",
          "sweep")


def table(report: str) -> dict[tuple[str, str], list[str]]:
    """The results table's rows by (phase, configuration): the remaining cells."""
    lines = report[report.index(device_check.HEADER):].splitlines()[2:]
    rows = {}
    for line in lines:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows[(cells[0], cells[1])] = cells[2:]
    return rows


def number(cell: str) -> float:
    """The first number of a cell (``"1.2 ms"``, ``"est. peak 0.26 GiB"``, ``" 2.1e-02, 1 + 1 reps"``); NaN when
    there is none."""
    found = re.search(r"[-+]?\d+(\.\d*)?(e[-+]?\d+)?", cell)
    return float(found.group()) if found else math.nan


@pytest.mark.slow
def test_dry_run_measures_every_phase(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--tiny", "--out", str(out), "--work",
         str(tmp_path / "work"), "--step-configs", "8x2:bf16-cast"],
        capture_output=True, text=True, timeout=1800, cwd=ROOT)
    log = (out / "device_check.log").read_text() if (out / "device_check.log").exists() else ""
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + log[-4000:]
    report = (out / "results_gpu.md").read_text()
    statuses = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    statuses = {r["name"]: r["status"] for r in statuses if r["phase"] == "status"}
    assert statuses == {name: "ok" for name in PHASES}, log[-4000:]

    rows = table(report)
    step = rows[("step", "latent 8², batch 2, bf16-cast")]
    jax_ms, torch_ms, ratio, compile_s = (number(c) for c in step[:4])
    assert all(math.isfinite(v) and v > 0 for v in (jax_ms, torch_ms, ratio, compile_s)), step
    assert "max rel. err" in step[-1] and number(step[-1].split("max rel. err")[1]) < 0.05, step   # bf16 vs bf16

    restore = rows[("restore", "64² image, fp32")]
    assert all(math.isfinite(number(c)) for c in restore[:4]), restore
    assert number(restore[-1].split("max rel. err")[1]) < 1e-4, restore   # fp32: the same function

    memory = rows[("supir-memory", "SUPIR tiny step, 128² bf16")]
    assert number(memory[0]) > 0 and "fits 80 GB: yes" in memory[-1], memory
    supir = rows[("supir-run", "SUPIR tiny restoration, 128² bf16, 1 steps")]
    assert number(supir[0]) > 0 and "output finite: True" in supir[-1], supir

    sweep = rows[("sweep", "jaxir_cldm, 2 t_start × 2 seeds, 64² SR×2")]
    assert number(sweep[0]) > 0 and "after the first call 0;" in sweep[-1], sweep   # no recompilation
    assert "output finite: True" in sweep[-1], sweep


def test_a_cut_run_reports_what_it_measured():
    """Rows of a run stopped during jaxir's step phase: the measured row is in the table, the rest say why not."""
    rows = [dict(phase="check", ceilings_tflops={"bf16": 800.0, "fp32": 400.0}, torch_device_name="GPU"),
            dict(phase="step-torch", config="64x1:bf16", flops=4e12, peak_gib=6.0, median_s=0.02, min_s=0.02, reps=20),
            dict(phase="step-torch", config="128x1:bf16", flops=16e12, peak_gib=9.0, median_s=0.08, min_s=0.08,
                 reps=12),
            dict(phase="step-jax", config="64x1:bf16", compile_s=30.0, peak_gib=7.0, xla_flops=4.1e12, rel_err=0.004,
                 median_s=0.025, min_s=0.024, reps=20),
            dict(phase="step-jax", config="128x1:bf16", skipped="phase budget 110 s"),
            dict(phase="status", name="step-jax", status="time limit", seconds=120.0, limit=120.0)]
    report = table(device_check.render(rows, ["64x1:bf16", "128x1:bf16", "64x8:bf16"], "cmd"))
    measured = report[("step", "latent 64², batch 1, bf16")]
    assert measured[:4] == ["25 ms", "20 ms", "0.80", "30.0"]
    assert measured[5] == "160 (20 %) / 200 (25 %)"   # 4 TFLOP in 25 ms against the 800 TFLOP/s ceiling
    assert "jaxir phase budget 110 s" in report[("step", "latent 128², batch 1, bf16")][-1]
    assert "not reached: jaxir, PyTorch" in report[("step", "latent 64², batch 8, bf16")][-1]
    assert not [key for key in report if key[0] != "step"]   # phases not run have no rows
