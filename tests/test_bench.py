"""The StyleGAN2 speed bench runs as documented (tiny budget) and writes its figures: the script must not rot
between the runs on lent GPUs."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facegan.models.stylegan2 import Generator, ModulatedConv2d

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_stylegan2_speed_bench_runs_and_reports_the_ratio_and_the_forms(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "bench/stylegan2_speed.py", "--rounds", "1", "--steps", "4", "--json", str(out)]
    log = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=True).stdout
    assert "ratio facegan / reference:" in log and "goal <= 0.7" in log
    result = json.loads(out.read_text())
    assert 0 < result["cpu"]["ratio"] < 2 and len(result["cpu"]["per_round"]) == 1
    forms = result["forms"]
    assert {f["layer"] for f in forms} >= {"64 px 32->32", "64 px 32->3 (toRGB)"}
    assert sum(f["training"] for f in forms) == 9  # one training form per layer
    assert all(f["first_ms"] > 0 and f["second_ms"] > 0 for f in forms)


def test_the_form_comparison_runs_on_a_device_over_the_auto_256_generator_layers():
    """The CUDA session compares the forms over stylegan2-ada's auto G at 256 px: its layer list has that G's
    channels, and the comparison runs on the device it is given (here the CPU, at batch 1)."""
    bench = runpy.run_path(str(ROOT / "bench/stylegan2_speed.py"))
    layers = bench["auto256_layers"]()
    g = Generator(256, 512, 2, **bench["AUTO_WIDTHS"])  # the model the bench's auto config trains
    built = {(m.cin, m.cout, m.k, m.upsample) for m in g.modules() if isinstance(m, ModulatedConv2d)}
    assert {(cin, cout, k, up) for _, cin, cout, k, up in layers} <= built
    for res, cin, cout, k, up in layers:
        assert cout == (3 if k == 1 else min(16384 // res, 512))
        assert cin == min(16384 // (res // 2 if up else res), 512)
    assert {res for res, *_ in layers} == {32, 64, 128, 256}
    out = bench["modconv_forms"]([layers[-1], layers[0]], 512, torch.device("cpu"), rounds=1, batch=1)
    assert [(f["layer"], f["form"], f["training"]) for f in out] == [
        ("256 px 64->3 (toRGB)", "input scaling", False),
        ("256 px 64->3 (toRGB)", "batched matmul", True),
        ("256 px 64->3 (toRGB)", "grouped", False),
        ("32 px up 512->512", "input scaling", True),
        ("32 px up 512->512", "grouped", False),
    ]
    assert all(f["first_ms"] > 0 and f["second_ms"] > f["first_ms"] / 10 for f in out)
