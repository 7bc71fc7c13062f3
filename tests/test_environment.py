"""The installed environment: one OpenCV, with every feature the project uses, and no GUI/libGL dependency;
the packages installed without their declared dependencies (no-deps.txt) have all their other requirements."""

from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
OPENCV = "opencv-contrib-python-headless"  # the one distribution that may provide `cv2`
OPENCV_NAMES = {"opencv-python", "opencv-python-headless", "opencv-contrib-python", OPENCV}


def _name(dist: md.Distribution) -> str:
    return re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()


def _no_deps() -> list[Requirement]:
    lines = (ROOT / "no-deps.txt").read_text().splitlines()
    return [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]


def test_exactly_one_distribution_provides_cv2():
    providers = sorted(
        {
            _name(d)
            for d in md.distributions()
            if any(f.parts[0] == "cv2" for f in (d.files or [])) or _name(d) in OPENCV_NAMES
        }
    )
    assert providers == [OPENCV], f"cv2 is provided by {providers}: uninstall all but {OPENCV} and reinstall it"


def test_cv2_has_every_feature_the_project_uses():
    import cv2

    assert Path(cv2.data.haarcascades, "haarcascade_frontalface_default.xml").is_file()
    assert not cv2.CascadeClassifier(str(Path(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))).empty()
    assert cv2.dnn_superres.DnnSuperResImpl_create() is not None
    assert callable(cv2.FaceDetectorYN.create)
    assert int(cv2.__version__.split(".")[0]) == 4


def test_cv2_needs_no_gui_libraries():
    """`import cv2` must work on a bare server: the extension links no libGL/X11/Qt (libGL is installed on this
    machine, so a plain import would not show it; the dynamic section does)."""
    import cv2

    libs = sorted(Path(cv2.__file__).parent.rglob("cv2*.so"))
    assert libs, f"no cv2 extension module under {Path(cv2.__file__).parent}"
    needed = subprocess.run(["ldd", *map(str, libs)], capture_output=True, text=True, check=True).stdout
    gui = sorted({m for m in re.findall(r"\b(libGL\S*|libX11\S*|libQt\S*|libgtk\S*)", needed)})
    assert not gui, f"cv2 links GUI libraries {gui}: a non-headless OpenCV is installed"
    env_check = subprocess.run(
        [sys.executable, "-c", "import cv2; print(cv2.__version__)"], capture_output=True, text=True
    )
    assert env_check.returncode == 0, env_check.stderr


@pytest.mark.parametrize("req", _no_deps(), ids=str)
def test_packages_installed_without_deps_have_their_real_dependencies(req):
    """Every requirement they declare is installed, except the GUI OpenCV, which the one OpenCV replaces."""
    dist = md.distribution(req.name)
    assert req.specifier.contains(dist.version), f"{req.name} {dist.version} installed, no-deps.txt pins {req}"
    missing = []
    for line in dist.requires or []:
        dep = Requirement(line)
        if dep.marker is not None and not dep.marker.evaluate({"extra": ""}):
            continue
        if re.sub(r"[-_.]+", "-", dep.name).lower() in OPENCV_NAMES:
            continue
        try:
            version = md.version(dep.name)
        except md.PackageNotFoundError:
            missing.append(f"{dep} (not installed)")
            continue
        if not dep.specifier.contains(version, prereleases=True):
            missing.append(f"{dep} ({version} installed)")
    assert not missing, f"{req.name} needs {missing}: add them to pyproject.toml"


def test_the_optional_face_libraries_import():
    import face_alignment  # noqa: F401
    import onnxruntime  # noqa: F401
    import rembg  # noqa: F401
