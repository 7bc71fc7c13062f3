"""The StyleGAN2 speed bench runs as documented (tiny budget) and writes its figures: the script must not rot
between the runs on lent GPUs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
