"""Exactness against pytorch-fid itself: same weights file, same folders, same numbers.

pytorch-fid needs torchvision, which here comes only with a 5 GB torch build, so it lives in its
own environment (`make test` builds `.venv-ref`; FACEGAN_REF_PYTHON points elsewhere). Without the
real Inception file a deterministic stand-in of the same architecture is written to a temporary
TORCH_HOME and loaded by both sides; with the file in the torch hub cache the real one is used too.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, STRICT
from facegan.config import CartoonSource, EvaluateConfig
from facegan.data.cartoon import render
from facegan.evaluate import inception
from facegan.evaluate.compare import compare_folders
from facegan.evaluate.extractors import make_extractor
from facegan.evaluate.standin import write_stand_in_weights
from facegan.io import list_images, write_image

REF_PYTHON = Path(os.environ.get("FACEGAN_REF_PYTHON", ROOT / ".venv-ref" / "bin" / "python"))
# `make test` builds the reference environment and sets FACEGAN_TEST_STRICT: there a missing one is a failure
pytestmark = pytest.mark.skipif(
    not REF_PYTHON.is_file() and not STRICT,
    reason=f"pytorch-fid reference environment missing ({REF_PYTHON}); `make test` builds it",
)


def test_the_reference_environment_is_there():
    assert REF_PYTHON.is_file(), f"pytorch-fid reference environment missing ({REF_PYTHON}): `make test` builds it"


DUMP = """
import sys, numpy as np, pathlib
from pytorch_fid.fid_score import get_activations
from pytorch_fid.inception import InceptionV3
files = sorted(str(p) for p in pathlib.Path(sys.argv[1]).glob('*.png'))
model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
np.save(sys.argv[2], get_activations(files, model, batch_size=20, dims=2048, device='cpu', num_workers=0))
"""


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fidfolders")
    cfg = CartoonSource(n=60, size=64, seed=5)
    for i in range(60):
        write_image(root / ("a" if i < 30 else "b") / f"{i:03d}.png", render(cfg, i).image)
    return root / "a", root / "b"


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("torchhome")
    write_stand_in_weights(home / "hub" / "checkpoints" / inception.WEIGHTS_NAME)
    return home


def _ref(args: list[str], home: Path) -> str:
    env = {**os.environ, "TORCH_HOME": str(home), "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([str(REF_PYTHON), *args], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.fixture()
def ours(torch_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    path = torch_home / "hub" / "checkpoints" / inception.WEIGHTS_NAME
    monkeypatch.setattr(inception, "WEIGHTS_SHA256_PREFIX", inception.sha256_file(path)[:8])  # accept the stand-in
    return EvaluateConfig(mode="legacy", batch_size=20)


def test_features_equal_pytorch_fid(folders, torch_home, ours, tmp_path):
    a, _ = folders
    _ref(["-c", DUMP, str(a), str(tmp_path / "ref.npy")], torch_home)
    ref = np.load(tmp_path / "ref.npy")
    mine = make_extractor("inception", ours).folder(list_images(a))
    assert ref.shape == mine.shape == (30, 2048)
    assert np.abs(ref).max() > 1e-3, "stand-in features must not be degenerate"
    np.testing.assert_allclose(mine, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


@pytest.mark.slow  # ~1.8 min on 2 cores (60 images through Inception on each side); the features test above
def test_fid_equals_pytorch_fid(folders, torch_home, ours):  # keeps the exactness of the features in `make test`
    a, b = folders
    out = _ref(
        ["-m", "pytorch_fid", str(a), str(b), "--device", "cpu", "--batch-size", "20", "--num-workers", "0"], torch_home
    )
    ref_fid = float(re.search(r"FID:\s+([-0-9.eE+]+)", out).group(1))
    mine = compare_folders(a, b, ours)["fd"]
    assert ref_fid > 0
    assert mine == pytest.approx(ref_fid, rel=1e-3), f"ours {mine} vs pytorch-fid {ref_fid}"
