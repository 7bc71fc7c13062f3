"""Same params, same bytes: preprocessing outputs do not depend on the folder, the run or the machine's
CPU kernels, and a pipeline run leaves the git checkout clean (every DVC output is git-ignored)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, tiny_params
from facegan.chain import run_stage

PREPROCESS = ("generate", "detect", "verify", "align", "matte", "upscale", "quality", "pack")
# another machine, as far as one machine can pretend: other BLAS/LAPACK kernels (OpenBLAS), no AVX2/FMA
# loops in numpy, no SSE4/AVX paths in OpenCV. Today's CPUs differ in exactly these.
OTHER_MACHINE = {
    "OPENBLAS_CORETYPE": "Nehalem",
    "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4",
    "OPENCV_CPU_DISABLE": "AVX512_SKX,AVX2,FP16,AVX,SSE4_2,SSE4_1",
}
CHAIN = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import tiny_params
from facegan.chain import run_stage
for stage in {stages!r}:
    run_stage(stage, "cartoon", tiny_params(), Path(sys.argv[1]))
"""


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "data").rglob("*")) if p.is_file()}


def test_preprocessing_gives_the_same_bytes_in_another_folder_on_another_machine(tmp_path):
    here, there = tmp_path / "here", tmp_path / "elsewhere" / "deeper"
    for stage in PREPROCESS:
        run_stage(stage, "cartoon", tiny_params(), here)
    code = CHAIN.format(tests=str(ROOT / "tests"), stages=PREPROCESS)
    r = subprocess.run(
        [sys.executable, "-c", code, str(there)], capture_output=True, text=True, env={**os.environ, **OTHER_MACHINE}
    )
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _files(here), _files(there)
    assert len(a) > 100 and sorted(a) == sorted(b)
    differ = [name for name in a if a[name] != b[name]]
    assert not differ, f"{len(differ)} file(s) differ, e.g. {differ[:5]}"


def _ignored(path: str) -> bool:
    """Whether the committed .gitignore files ignore `path` (a folder output: `path/`), as `dvc repro` needs
    so that it does not add lines to them."""

    def check(p: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", p], cwd=ROOT).returncode == 0

    return check(path) or (not Path(path).suffix and check(path + "/"))


def test_every_dvc_output_is_ignored_by_the_committed_gitignore_files():
    from dvc.repo import Repo

    outs = sorted({str(o.def_path) for stage in Repo(str(ROOT)).index.stages for o in stage.outs})
    assert "data/models/sketch" in outs and "data/transfer/fid_table.md" in outs
    missing = [o for o in outs if not _ignored(o)]
    assert not missing, f"`dvc repro` would add these to .gitignore files (commit them): {missing}"
