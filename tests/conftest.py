"""Shared fixtures: a tiny cartoon dataset pushed through the preprocessing chain once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facegan.chain import Layout, run_stage
from facegan.config import Params, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("FACEGAN_OFFLINE", "1")  # tests never reach the network
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def tiny_params(n: int = 12, **train) -> Params:
    """The project's params.yaml shrunk to seconds: few small images, a few training steps."""
    raw = load_params(ROOT / "params.yaml").model_dump(mode="json")
    ds = raw["datasets"]["cartoon"]
    ds["source"].update(n=n, size=128)
    ds["align"].update(size=64)
    ds["upscale"].update(size=64)
    ds["pack"].update(resolution=32)
    raw["workers"] = 1
    raw["train"].update({"steps": 4, "batch_size": 8, "checkpoint_every": 2, "sample_every": 2,
                         "g_channels": 8, "d_channels": 8, **train})
    raw["evaluate"].update(num_samples=16, max_real=n, batch_size=8, extractors=["dlib"])
    raw["tracking"]["enabled"] = False  # tests that track start their own MLflow server
    return parse_params(raw)


@pytest.fixture(scope="session")
def tiny_params_obj() -> Params:
    return tiny_params()


@pytest.fixture(scope="session")
def packed_root(tmp_path_factory, tiny_params_obj) -> Path:
    """A project root whose data/ holds the cartoon chain run up to `pack`."""
    root = tmp_path_factory.mktemp("project")
    for stage in ("generate", "detect", "align", "matte", "upscale", "pack"):
        run_stage(stage, "cartoon", tiny_params_obj, root)
    return root


@pytest.fixture(scope="session")
def layout(packed_root) -> Layout:
    return Layout(packed_root, "cartoon")
