"""`facegan dataset add/list/show/remove`: safe imports, params blocks, DVC, and the README walkthrough."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from skimage.data import astronaut

from conftest import ROOT, SUPERRES, YUNET, make_dvc_project, needs_superres, needs_yunet, sh, u2net_standin
from facegan.config import load_params
from facegan.data.sources import NoImages, UnsafeArchive, import_images
from facegan.datasets import add, dataset_block, describe, pick_backends, remove
from facegan.errors import StageError, StageInputMissing

FACES = ROOT.parent / "shared" / "assets" / "faces" / "face_recognition" / "examples"


def _photos(folder: Path, refs: Path) -> None:
    """A few real photos of one person (+ one of another) and reference photos of the first."""
    folder.mkdir(parents=True)
    refs.mkdir(parents=True)
    if FACES.is_dir():
        for name in ("obama.jpg", "obama2.jpg", "obama-480p.jpg", "biden.jpg"):
            shutil.copy(FACES / name, folder / name)
        shutil.copy(FACES / "knn_examples" / "train" / "obama" / "obama.jpg", refs / "ref.jpg")
    else:
        from skimage import data

        face = Image.fromarray(data.astronaut())
        for i, s in enumerate((512, 448, 384)):
            face.resize((s, s)).save(folder / f"astro{i}.png")
        face.save(refs / "ref.png")
    (folder / "notes.txt").write_text("not an image")
    shutil.copy(next(folder.glob("*.*g")), folder / "copy_of_first.jpg" if FACES.is_dir() else folder / "copy.png")


def _zip(path: Path, entries: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"../evil.png": b"x"}, "leaving the archive"),
        ({"/abs/evil.png": b"x"}, "absolute path"),
        ({"ok.png": b"x"}, "symbolic link"),
    ],
)
def test_unsafe_zips_are_refused_and_write_nothing(tmp_path, bad, match):
    z = _zip(tmp_path / "a.zip", bad, symlink="link.png" if match == "symbolic link" else None)
    with pytest.raises(UnsafeArchive, match=match):
        import_images(z, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_zip_caps_and_dedupe_and_non_images(tmp_path):
    png = _png()
    z = _zip(tmp_path / "a.zip", {"a/1.png": png, "b/2.png": png, "readme.md": b"hi", "3.png": png + b"\0"})
    report = import_images(z, tmp_path / "out")
    assert report.imported == ["3.png", "a/1.png"] and report.duplicates == {"b/2.png": "a/1.png"}
    long = "照" * 100 + ".png"  # 100 characters, as Windows counts: 304 bytes, an Errno 36 traceback here
    got = import_images(_zip(tmp_path / "long.zip", {long: png, "ok.png": png}), tmp_path / "out_long")
    assert got.imported == ["ok.png"] and got.skipped[long].startswith("a name of over 255 bytes")
    assert report.skipped == {"readme.md": "not an image file (by its suffix)"}
    with pytest.raises(UnsafeArchive, match="more than the limit of 2"):
        import_images(z, tmp_path / "out2", max_files=2)
    bomb = _zip(tmp_path / "bomb.zip", {"big.png": b"\0" * 5_000_000})
    with pytest.raises(UnsafeArchive, match="expands to more than"):
        import_images(bomb, tmp_path / "out3", max_bytes=1_000_000)
    with pytest.raises(ValueError, match="no images found"):
        import_images(_zip(tmp_path / "empty.zip", {"x.txt": b"1"}), tmp_path / "out4")


def _patched(path: Path, name: str, flag: int | None = None, method: int | None = None, flip: bool = False) -> None:
    """Rewrite one stored member of a zip as other tools write it: encrypted (flag bit 0), compressed by another
    method (9: Deflate64), or with a damaged data byte. Both its local header and its central directory record."""
    data = bytearray(path.read_bytes())
    raw = name.encode()
    local = next(
        i for i in range(len(data)) if data[i : i + 4] == b"PK\x03\x04" and data[i + 30 : i + 30 + len(raw)] == raw
    )
    central = next(
        i for i in range(len(data)) if data[i : i + 4] == b"PK\x01\x02" and data[i + 46 : i + 46 + len(raw)] == raw
    )
    for header, flag_at, method_at in ((local, 6, 8), (central, 8, 10)):
        if flag is not None:
            data[header + flag_at] |= flag
        if method is not None:
            data[header + method_at : header + method_at + 2] = method.to_bytes(2, "little")
    if flip:
        extra = int.from_bytes(data[local + 28 : local + 30], "little")
        data[local + 30 + len(raw) + extra + 20] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_zip_entry_that_cannot_be_read_is_skipped_with_its_reason(tmp_path):
    # an encrypted entry raised RuntimeError, Deflate64 NotImplementedError, a damaged one BadZipFile: a traceback
    png = _png()
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as zf:  # stored: a data byte flipped stays a flipped byte
        for i, name in enumerate(("crc.png", "deflate64.png", "locked.png", "ok.png")):
            zf.writestr(name, png + bytes([i]))
    _patched(z, "crc.png", flip=True)
    _patched(z, "deflate64.png", method=9)
    _patched(z, "locked.png", flag=0x1)
    report = import_images(z, tmp_path / "out")
    assert report.imported == ["ok.png"]
    assert report.skipped["crc.png"].startswith("damaged in the zip (BadZipFile: Bad CRC-32 for file 'crc.png')")
    assert report.skipped["deflate64.png"] == (
        "compression method 9, which Python's zipfile does not read: extract the zip, then add the folder"
    )
    assert report.skipped["locked.png"] == "encrypted (a password-protected zip: extract it, then add the folder)"
    locked = tmp_path / "locked.zip"
    with zipfile.ZipFile(locked, "w") as zf:
        zf.writestr("a.png", png)
    _patched(locked, "a.png", flag=0x1)
    with pytest.raises(NoImages, match=r"1 such file\(s\) refused, e.g. a.png: encrypted \(a password-protected"):
        import_images(locked, tmp_path / "out2")
    assert not (tmp_path / "out2").exists() and not list(tmp_path.glob(".out2*"))


def test_an_import_shows_its_progress(tmp_path, capfd):
    # a folder of tens of thousands of photos was silent for minutes
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.png").write_bytes(_png() + bytes([i]))
    (src / "notes.txt").write_text("x")
    import_images(src, tmp_path / "out")
    import_images(_zip(tmp_path / "a.zip", {"a.png": _png()}), tmp_path / "out2")
    err = capfd.readouterr().err
    assert re.search(r"import photos: 100%.* 4/4 ", err) and re.search(r"import a.zip: 100%.* 1/1 ", err), err


def test_files_the_reader_refuses_from_their_header_are_skipped_with_the_reason(tmp_path):
    png = _png()
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.png").write_bytes(png)
    (src / "half.png").write_bytes(png[:60])  # cut off after its header: the detect stage rejects it when it decodes
    (src / "notes.jpg").write_bytes(b"not an image, named like one")
    (src / "never.png").write_bytes(b"")  # a copy that never started: said as such, not "no image format"
    Image.new("1", (10_001, 10_000)).save(src / "huge.png")  # 100,010,000 pixels in a small file
    report = import_images(src, tmp_path / "out")
    assert report.imported == ["half.png", "ok.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["half.png", "ok.png"]
    assert report.skipped == {
        "huge.png": "too large: 10001x10000 > 100000000 pixels",
        "notes.jpg": "unreadable image: no image format Pillow knows",
        "never.png": "unreadable image: an empty file (0 bytes)",
    }
    for name in ("ok.png", "half.png"):
        (src / name).unlink()
    with pytest.raises(NoImages, match=r"no images found .*; 3 such file\(s\) refused, e.g. huge.png: too large"):
        import_images(src, tmp_path / "out2")
    assert not (tmp_path / "out2").exists() and not list(tmp_path.glob(".out2*"))


@pytest.fixture
def project(tmp_path) -> tuple[Path, Path, str]:
    """A project root holding a copy of params.yaml: (root, params file, its original text)."""
    root = tmp_path / "proj"
    root.mkdir()
    params = root / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    return root, params, params.read_text()


def test_add_writes_a_valid_block_keeps_comments_reports_labels_and_remove_restores(tmp_path, project):
    root, params, before = project
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 40, 3), 40 * i, np.uint8)).save(photos / f"{i}.png")
    (tmp_path / "labels.csv").write_text("file,glasses\n0.png,1\n1.png,0\nghost.png,1\n2.png\n")
    out = add("mine", photos, "drawings", labels=tmp_path / "labels.csv", params_file=params, root=root)
    assert out["import"].startswith("3 images imported")
    assert any("ghost.png" in p for p in out["label_problems"]) and any("line 5" in p for p in out["label_problems"])
    p = load_params(params)
    assert p.datasets["mine"].detect.backend == "haar" and p.datasets["mine"].pack.labels == "labels.csv"
    assert describe("mine", params, root)["label_columns"] == ["glasses"]
    imported = root / "data" / "raw" / "mine" / "labels.csv"
    keep = imported.read_bytes()
    imported.write_text('file,"hair, colour",glasses\n0.png,"red, short",1\n')  # a quoted comma in a column name
    assert describe("mine", params, root)["label_columns"] == ["hair, colour", "glasses"]
    imported.write_text("")  # shown as a problem, not a crash
    d = describe("mine", params, root)
    assert d["label_columns"] == [] and "needs a header row" in d["label_problem"]
    imported.unlink()  # named in params, not there: said ("labels: none" before)
    assert describe("mine", params, root)["label_problem"] == f"{imported}: not found (pack.labels names it)"
    imported.write_bytes(keep)
    assert params.read_text().startswith(before.split("datasets:")[0])  # header comments kept
    with pytest.raises(ValueError, match="already exists"):
        add("mine", photos, params_file=params, root=root)
    with pytest.raises(ValueError, match="unknown kind"):
        add("other", photos, "paintings", params_file=params, root=root)
    with pytest.raises(ValueError, match="transfer.source/target"):
        remove("sketch", params, root)
    assert remove("mine", params, root)[0] == f"{params}: datasets.mine"
    assert params.read_text() == before and not (root / "data" / "raw" / "mine").exists()


def test_label_rows_of_duplicate_images_say_so(tmp_path, project):
    """A row for a file skipped as a duplicate said "no such image", though the file is there; a label that
    disagrees with its twin's, or stands for a twin without a row, was dropped without a word. Every problem is in
    the import's report file (the terminal shows the first 20)."""
    root, params, _ = project
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "a_copy.png", "b.png", "b_copy.png", "c.png", "c_copy.png"):
        Image.fromarray(np.full((20, 20, 3), ord(name[0]), np.uint8)).save(photos / name)
    (tmp_path / "labels.csv").write_text("file,smile\na.png,1\na_copy.png,0\nb.png,1\nb_copy.png,1\nc_copy.png,1\n")
    out = add("mine", photos, "drawings", labels=tmp_path / "labels.csv", params_file=params, root=root)
    assert out["label_problems"] == [
        "row for 'a_copy.png': not imported, the same bytes as 'a.png', whose row says otherwise",
        "row for 'b_copy.png': not imported, the same bytes as 'b.png': its row is not used",
        "row for 'c_copy.png': not imported, the same bytes as 'c.png', which has no row: give it this",
        "1 image(s) without a label row (they will be rejected at pack), e.g. c.png",
    ]
    assert json.loads(out["report_file"].read_text())["label_problems"] == out["label_problems"]
    (tmp_path / "only.csv").write_text("file,smile\nc_copy.png,1\n")  # rows of duplicates alone: not "no row names"
    out = add("other", photos, "drawings", labels=tmp_path / "only.csv", params_file=params, root=root)
    assert (
        out["label_problems"][0]
        == "row for 'c_copy.png': not imported, the same bytes as 'c.png', which has no row: give it this"
    )


def test_add_imports_every_format_pillow_opens_and_lists_every_file_it_skipped(tmp_path, project):
    """JPEGs saved as .jfif (Windows, browsers) and .jpe, APNG, PGM are images; `dataset add` printed only the first
    20 files it skipped, with nothing to say there were more: the rest are counted and all are in a file."""
    import subprocess
    import sys

    root, params, before = project
    photos = tmp_path / "photos"
    photos.mkdir()
    gray = np.arange(40 * 40, dtype=np.uint8).reshape(40, 40)
    for i, name in enumerate(("a.jfif", "b.jpe", "c.apng", "d.pgm")):
        Image.fromarray((gray + 50 * i).astype(np.uint8)).save(
            photos / name, format=Image.registered_extensions()[Path(name).suffix]
        )
    for i in range(25):
        (photos / f"notes{i:02d}.txt").write_text("no image")
    r = subprocess.run(
        [sys.executable, "-c", "from facegan.cli import main; main()", "dataset", "add", "mine", str(photos)]
        + ["-p", str(params), "--root", str(root)],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert r.returncode == 0, r.stderr
    assert "mine: 4 images imported, 0 duplicates skipped, 25 other files skipped" in r.stdout
    assert (
        r.stdout.count("  skipped notes") == 20 and "skipped notes19.txt: not an image file (by its suffix)" in r.stdout
    )
    listed = root / ".facegan" / "imports" / "mine.json"
    assert f"... and 5 more: every one in {listed}" in r.stdout
    report = json.loads(listed.read_text())
    assert sorted(report["skipped"]) == [f"notes{i:02d}.txt" for i in range(25)] and report["duplicates"] == {}
    assert sorted(p.name for p in (root / "data" / "raw" / "mine" / "images").iterdir()) == [
        "a.jfif",
        "b.jpe",
        "c.apng",
        "d.pgm",
    ]
    assert ".facegan/imports/mine.json" in remove("mine", params, root) and not listed.exists()
    assert params.read_text() == before
    # a clean import replaces the list of an earlier one, and lists the references' skipped files too
    listed.parent.mkdir(parents=True, exist_ok=True)
    listed.write_text('{"skipped": {"old.txt": "from before"}}')
    for f in photos.glob("notes*"):
        f.unlink()
    refs = tmp_path / "refs"
    refs.mkdir()
    shutil.copy(photos / "a.jfif", refs / "me.jfif")  # a gradient, no face: verify stopped on a set of such
    (refs / "IMG_1.HEIC").write_bytes(b"\0" * 64)
    with pytest.raises(
        StageInputMissing,
        match=rf"^dataset add mine --references: no face found in any of the 1 photos in {re.escape(str(refs))}: add",
    ):
        add("mine", photos, references=refs, params_file=params, root=root)
    assert params.read_text() == before and not (root / "data" / "raw" / "mine").exists()
    assert json.loads(listed.read_text()) == {"skipped": {"old.txt": "from before"}}  # a failed add: as it was
    Image.fromarray(astronaut()).save(refs / "astronaut.png")
    out = add("mine", photos, references=refs, params_file=params, root=root)
    assert out["references_skipped"] == {"IMG_1.HEIC": "not an image file (by its suffix)"}
    assert out["references_without_face"] == {"me.jfif": "no face found"}  # as verify will find: left out there
    assert json.loads(listed.read_text()) == {
        "source": str(photos),
        "skipped": {},
        "duplicates": {},
        "references": {
            "skipped": {"IMG_1.HEIC": "not an image file (by its suffix)"},
            "duplicates": {},
            "without_face": {"me.jfif": "no face found"},
        },
    }


def test_add_and_remove_that_cannot_finish_change_nothing_or_can_be_run_again(tmp_path, project, monkeypatch):
    """A read-only params.yaml stopped an add after the images were copied (its undo failed too, so the copy stayed
    and every retry was refused); a full disk while importing was a traceback; a folder remove could not delete
    left params.yaml without the block and the data there. Now params.yaml changes last, at once."""
    import errno

    from facegan import datasets
    from facegan.errors import OutputError

    root, params, before = project
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(np.full((40, 40, 3), 90 * i, np.uint8)).save(photos / f"{i}.png")
    raw = root / "data" / "raw" / "mine"

    real_access = os.access
    monkeypatch.setattr(datasets.os, "access", lambda p, mode: Path(p) != params and real_access(p, mode))
    with pytest.raises(OutputError, match=r"dataset add mine: cannot write .*params.yaml .*nothing was changed"):
        add("mine", photos, params_file=params, root=root)
    assert params.read_text() == before and not raw.exists()
    monkeypatch.setattr(datasets.os, "access", real_access)

    real_import = datasets.import_images

    def full_disk(src, dst, *args, **kwargs):
        real_import(src, dst, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device", str(dst / "1.png"))

    monkeypatch.setattr(datasets, "import_images", full_disk)
    with pytest.raises(OutputError, match=r"dataset add mine: .*1.png: No space left on device; nothing was kept"):
        add("mine", photos, params_file=params, root=root)
    assert params.read_text() == before and not raw.exists()
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".params")) == []
    monkeypatch.setattr(datasets, "import_images", real_import)

    add("mine", photos, params_file=params, root=root)
    added = params.read_text()
    real_rmtree = datasets.shutil.rmtree

    def read_only(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(Path(path) / "images" / "0.png"))

    monkeypatch.setattr(datasets.shutil, "rmtree", read_only)
    with pytest.raises(OutputError, match=r"cannot remove .*0.png: Permission denied; .*still lists mine: fix"):
        remove("mine", params, root)
    assert params.read_text() == added and raw.is_dir()  # as it was: run it again once fixed
    assert not (root / ".params.yaml.facegan-new").exists()  # the checked copy that was to replace it: gone
    monkeypatch.setattr(datasets.shutil, "rmtree", real_rmtree)
    assert remove("mine", params, root)[0] == f"{params}: datasets.mine"
    assert params.read_text() == before and not raw.exists()
    assert [p.name for p in root.iterdir() if p.name.startswith(".params")] == []

    def dvc_fails(root, *args):  # after the checked copy of params.yaml was written
        assert (root / ".params.yaml.facegan-new").is_file()
        raise StageError("dvc add failed: the cache is full")

    monkeypatch.setattr(datasets, "_dvc", dvc_fails)
    with pytest.raises(StageError, match="the cache is full"):
        add("mine", photos, params_file=params, root=root)
    assert params.read_text() == before and not raw.exists()
    assert [p.name for p in root.iterdir() if p.name.startswith(".params")] == []


def test_a_ctrl_c_in_add_or_remove_says_what_was_kept(tmp_path, project, monkeypatch, caplog):
    """Ctrl-C ended an add or a remove with exit code 130 and not a word: whether the images, the DVC entry or
    params.yaml's block were kept was for the user to find out. Now a warning says it (the undo was right)."""
    from facegan import datasets

    root, params, before = project
    photos = _one_image(tmp_path / "photos")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets, "_install", interrupted)  # the last step of an add: everything else done
    with pytest.raises(KeyboardInterrupt):
        add("mine", photos, params_file=params, root=root)
    assert params.read_text() == before and not (root / "data" / "raw" / "mine").exists()
    assert not (root / "data" / "raw" / "mine.dvc").exists()
    assert re.search(r"dataset add mine: interrupted; nothing was kept \(.*params.yaml as it was\)", caplog.text)
    monkeypatch.undo()

    add("mine", photos, params_file=params, root=root)
    added = params.read_text()
    monkeypatch.setattr(datasets.shutil, "rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        remove("mine", params, root)
    assert params.read_text() == added
    assert "dataset remove mine: interrupted; " in caplog.text
    assert "still lists mine: run `facegan dataset remove mine` again" in caplog.text
    monkeypatch.undo()
    remove("mine", params, root)  # as the warning says
    assert params.read_text() == before and not (root / "data" / "raw" / "mine").exists()


def test_add_and_remove_edit_the_file_a_linked_params_yaml_names(tmp_path, project):
    """params.yaml as a link (a shared config): the edit goes to the file it names, with its mode; the link stays
    (a replace of the link itself left the shared file as it was)."""
    root, params, before = project
    shared = tmp_path / "shared.yaml"
    params.rename(shared)
    shared.chmod(0o664)
    params.symlink_to(shared)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(photos / "0.png")
    add("mine", photos, params_file=params, root=root)
    assert params.is_symlink() and "  mine:" in shared.read_text() and shared.stat().st_mode & 0o777 == 0o664
    remove("mine", params, root)
    assert params.is_symlink() and shared.read_text() == before


def test_remove_takes_every_folder_of_the_dataset_and_only_the_link_to_a_folder_of_the_user_s(tmp_path, project):
    """`dataset remove` left training's work folder (data/checkpoints/<name>, hundreds of MB) and the stages' lock
    files; a data folder that is a link stopped it with "Cannot call rmtree on a symbolic link", naming no path."""
    root, params, before = project
    add("mine", _one_image(tmp_path / "imgs"), params_file=params, root=root)
    data = root / "data"
    (data / "checkpoints" / "mine" / "main").mkdir(parents=True)
    (data / "checkpoints" / "mine" / "main" / "last.pt").write_bytes(b"x" * 1000)
    (data / "processed").mkdir()
    (data / "processed" / ".mine.lock").touch()
    (data / "processed" / ".mine.0a1b2c").mkdir()  # a killed run's temporary folder
    (data / "processed" / ".mine-2.lock").touch()  # another dataset's
    mine = tmp_path / "my-models"
    (mine / "sub").mkdir(parents=True)
    (mine / "sub" / "keep.pt").write_bytes(b"mine")
    (data / "models").mkdir()
    (data / "models" / "mine").symlink_to(mine)
    assert describe("mine", params, root)["size"].startswith("1.")  # the checkpoint counts: KiB
    removed = remove("mine", params, root)
    assert "data/checkpoints/mine" in removed
    assert f"data/models/mine (a link to {mine}: what it names is kept)" in removed
    assert (mine / "sub" / "keep.pt").read_bytes() == b"mine" and not (data / "models" / "mine").exists()
    assert sorted(p.name for p in (data / "processed").iterdir()) == [".mine-2.lock"]
    assert not (data / "checkpoints" / "mine").exists() and params.read_text() == before


def test_remove_refuses_while_a_stage_or_a_training_of_the_dataset_writes(tmp_path, project):
    """`dataset remove` deleted a live pack's temporary folder and lock file (the pack then died with a traceback)
    and a live training's work folder. It now takes each folder's lock first, as a second writer would."""
    from facegan.errors import FolderBusy
    from facegan.io import exclusive

    root, params, before = project
    add("mine", _one_image(tmp_path / "imgs"), params_file=params, root=root)
    added = params.read_text()
    data = root / "data"
    (data / "processed").mkdir()
    work = data / "checkpoints" / "mine" / "main"
    work.mkdir(parents=True)
    (work / "checkpoint.pt").write_bytes(b"step 3")
    (data / "interim" / "mine").mkdir(parents=True)  # a first detect run: its lock, not yet its folder
    for busy in (data / "processed" / "mine", work, data / "interim" / "mine" / "detect"):
        with exclusive(busy, "pack run"), pytest.raises(FolderBusy, match=rf"{busy}: another stage or training"):
            remove("mine", params, root)
        assert params.read_text() == added and (data / "raw" / "mine").is_dir() and work.is_dir()
    remove("mine", params, root)
    assert params.read_text() == before and not (data / "checkpoints" / "mine").exists()
    assert [p.name for p in (data / "processed").iterdir()] == []


def test_remove_refuses_another_project_s_params_file(tmp_path, project):
    """`dataset remove NAME -p OTHER/params.yaml` from a project took the block out of OTHER and the data out of the
    current folder; only a DVC project's params file was checked."""
    root, params, before = project
    add("mine", _one_image(tmp_path / "imgs"), params_file=params, root=root)
    added = params.read_text()
    here = tmp_path / "here"
    (here / "data" / "raw" / "mine").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"params.yaml is the project .*proj's, but the folders to remove are under"):
        remove("mine", params, here)
    assert params.read_text() == added and (here / "data" / "raw" / "mine").is_dir()
    remove("mine", params, root)
    assert params.read_text() == before


def test_a_failed_add_leaves_params_and_data_as_they_were(tmp_path, project):
    root, params, before = project
    with pytest.raises(FileNotFoundError, match="--cascade"):
        add("anim", _one_image(tmp_path / "imgs"), "anime", params_file=params, root=root)
    assert params.read_text() == before and not (root / "data" / "raw" / "anim").exists()
    (tmp_path / "l.csv").write_text("file,glasses\na.png,1\n")  # taken for the cascade, found out at detect
    (tmp_path / "cut.xml").write_text('<?xml version="1.0"?>\n<opencv_storage>\n<cascade>')
    for wrong in ("l.csv", "cut.xml"):
        with pytest.raises(ValueError, match=f"{wrong}: OpenCV could not load this cascade"):
            add("anim", tmp_path / "imgs", "anime", cascade=tmp_path / wrong, params_file=params, root=root)
        assert params.read_text() == before and not (root / "data" / "raw" / "anim").exists()
    (tmp_path / "cut.zip").write_bytes(b"PK\x03\x04 and then nothing")  # a download cut off
    with pytest.raises(FileNotFoundError, match=r"cut.zip: not a readable .zip file \(damaged, or cut off\)"):
        add("anim", tmp_path / "cut.zip", "drawings", params_file=params, root=root)
    with pytest.raises(FileNotFoundError, match=r"label file .*imgs \(--labels\): a folder, not a CSV file"):
        add("anim", tmp_path / "imgs", "drawings", labels=tmp_path / "imgs", params_file=params, root=root)
    with pytest.raises(FileNotFoundError, match=r"reference photos .*nope \(--references\): not found"):
        add("anim", tmp_path / "imgs", "drawings", references=tmp_path / "nope", params_file=params, root=root)
    assert params.read_text() == before and not (root / "data" / "raw" / "anim").exists()
    # a cascade path that is not there was "needs --cascade PATH", as if none was given; one given with another kind
    # was ignored without a word (the set imported as drawings)
    with pytest.raises(
        FileNotFoundError, match=r"needs --cascade PATH to lbpcascade_animeface.xml \(.*nope.xml: not f"
    ):
        add("anim", tmp_path / "imgs", "anime", cascade=tmp_path / "nope.xml", params_file=params, root=root)
    with pytest.raises(ValueError, match=r"^--cascade is for --kind anime, not --kind drawings: leave it out, or add"):
        add("anim", tmp_path / "imgs", "drawings", cascade=tmp_path / "cut.xml", params_file=params, root=root)
    assert params.read_text() == before and not (root / "data" / "raw" / "anim").exists()


def test_add_refuses_a_name_dvc_still_tracks_and_a_root_that_is_not_the_params_project(tmp_path, project, monkeypatch):
    """A failed add removed a data/raw/<name>.dvc that was there before it (a committed file: lost), and a
    successful one replaced it. `-p` of a DVC project run from another folder copied the images there, skipped DVC
    with a warning and left params naming a dataset DVC has no images for."""
    root, params, before = project
    copied: list[Path] = []
    monkeypatch.setattr("facegan.datasets.import_images", lambda src, dst: copied.append(dst))
    stale = root / "data" / "raw" / "stale.dvc"
    stale.parent.mkdir(parents=True)
    stale.write_text("outs:\n- md5: 0123.dir\n  path: stale\n")
    with pytest.raises(
        ValueError,
        match=r"stale.dvc already exists \(DVC tracks images under that name, though .*"
        r"params.yaml lists no dataset 'stale'\); remove it \(`dvc remove .*stale.dvc`\) or choose",
    ):
        add("stale", _one_image(tmp_path / "imgs"), params_file=params, root=root)
    assert stale.read_text() == "outs:\n- md5: 0123.dir\n  path: stale\n"
    (root / ".dvc").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(
        ValueError,
        match=rf"is the DVC project {re.escape(str(root.resolve()))}'s, but the images "
        rf"would go under {re.escape(str(elsewhere.resolve()))}: run it in",
    ):
        add("mine", tmp_path / "imgs", params_file=params, root=elsewhere)
    (elsewhere / ".dvc").mkdir()  # another DVC project: the images would go there, the block here
    with pytest.raises(ValueError, match=r"is the DVC project .*'s, but the images would go under "):
        add("mine", tmp_path / "imgs", params_file=params, root=elsewhere)
    assert copied == [] and params.read_text() == before and not (elsewhere / "data").exists()
    # the cascade is checked before any image is copied
    with pytest.raises(FileNotFoundError, match=r"needs --cascade PATH"):
        add("anim", tmp_path / "imgs", "anime", cascade=tmp_path / "nope.xml", params_file=params, root=root)
    (tmp_path / "cut.xml").write_text('<?xml version="1.0"?>\n<opencv_storage>\n<cascade>')
    with pytest.raises(ValueError, match=r"cut.xml: OpenCV could not load this cascade"):
        add("anim", tmp_path / "imgs", "anime", cascade=tmp_path / "cut.xml", params_file=params, root=root)
    assert copied == []


def test_an_edit_of_params_that_would_not_load_is_said_to_be_facegan_s(tmp_path, project, monkeypatch):
    """The edited file's YAML error read as the user's ("params.yaml: not valid YAML at line 49"), naming a line
    only the edited copy has; the file the user has loads, so the edit is at fault."""
    root, params, before = project
    monkeypatch.setattr("facegan.datasets.insert_block", lambda text, block: text + "  oops: [\n")
    with pytest.raises(
        ValueError,
        match=r"^dataset add mine: the edited .*params.yaml would not load, so it is left "
        r"as it was \(.*params.yaml: not valid YAML.*\); please report this with your .*params.yaml$",
    ):
        add("mine", _one_image(tmp_path / "imgs"), "drawings", params_file=params, root=root)
    assert params.read_text() == before and not (root / "data" / "raw" / "mine").exists()


def test_add_and_remove_keep_a_params_file_s_own_indentation_and_its_last_line(tmp_path, project):
    """A params.yaml whose datasets are indented by 4 spaces, or whose `datasets:` is last without a final line
    break, loads, but add glued its block onto the last line or indented it by 2 ("not valid YAML at line 49"), and
    remove did not find a dataset it lists."""
    root, params, _ = project
    raw = yaml.safe_load(params.read_text())
    raw = {**{k: v for k, v in raw.items() if k != "datasets"}, "datasets": raw["datasets"]}  # datasets last
    params.write_text(yaml.safe_dump(raw, indent=4, sort_keys=False).rstrip("\n"))
    original = load_params(params)
    out = add("mine", _one_image(tmp_path / "imgs"), "drawings", params_file=params, root=root)
    assert out["import"].startswith("1 images imported")
    text = params.read_text()
    assert "\n    mine:  " in text and "\n        detect: {backend: haar" in text, text[-600:]
    assert load_params(params).datasets["mine"].detect.backend == "haar"
    remove("mine", params, root)
    assert load_params(params) == original and "mine" not in params.read_text()


@pytest.mark.parametrize(
    "name, expect",
    [
        ("Sketch", "dataset names 'sketch' and 'Sketch' differ only in case"),
        ("my faces", "dataset name 'my faces': use ASCII letters, digits, '-' and '_'"),
    ],
)
def test_a_name_that_cannot_be_a_folder_is_refused_before_any_copy(tmp_path, project, monkeypatch, name, expect):
    root, params, before = project
    copied: list[Path] = []
    monkeypatch.setattr("facegan.datasets.import_images", lambda src, dst: copied.append(dst))
    with pytest.raises(ValueError) as e:
        add(name, _one_image(tmp_path / "imgs"), params_file=params, root=root)
    assert expect in str(e.value) and "invalid value" not in str(e.value)
    assert copied == [] and params.read_text() == before and not (root / "data" / "raw" / name).exists()


def _one_image(folder: Path) -> Path:
    folder.mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "a.png")
    return folder


@pytest.mark.parametrize("kind", ["photos", "drawings", "anime"])
def test_blocks_for_every_kind_are_valid_params(kind):
    block = dataset_block("x", kind, has_labels=False, has_references=kind == "photos")
    cfg = yaml.safe_load("datasets:\n" + block)["datasets"]["x"]
    assert cfg["source"] == {"kind": "folder"} and cfg["pack"]["labels"] is None
    assert (cfg["verify"]["backend"] == "dlib") == (kind == "photos")
    # with reference photos every face of a group photo is detected, so verify can keep the person's (the largest
    # face only lost them where someone else's face was bigger)
    assert cfg["detect"]["multi_face"] == ("all" if kind == "photos" else "largest")


def test_remove_takes_a_block_with_blank_lines_inside_it_whole():
    """The block ended at its first blank line: the rest attached itself to the dataset before it, whose setting
    YAML then took from the removed one (the last of a key given twice)."""
    from facegan.datasets import remove_block

    text = (
        "datasets:\n  cartoon:\n    detect: {backend: annotations}\n    quality: {min_sharpness: 10.0}\n"
        "  mine:\n    detect: {backend: hog}\n\n    quality: {min_sharpness: 99.0}\n\n"
        "  sketch:\n    detect: {backend: annotations}\ntrain:\n  model: dcgan\n"
    )
    assert remove_block(text, "mine") == (
        "datasets:\n  cartoon:\n    detect: {backend: annotations}\n    quality: {min_sharpness: 10.0}\n\n"
        "  sketch:\n    detect: {backend: annotations}\ntrain:\n  model: dcgan\n"
    )
    assert remove_block(text, "sketch").endswith("quality: {min_sharpness: 99.0}\n\ntrain:\n  model: dcgan\n")
    # a comment line inside a dataset (at any indent) is its own too; one after its last setting stays
    text = "datasets:\n    a:\n        source: {kind: folder}\n# note\n        detect: {backend: haar}\n"
    text += "    # b's\n    b:\n"
    assert remove_block(text, "a") == "datasets:\n    # b's\n    b:\n"


def test_a_key_given_twice_in_a_params_file_is_refused(tmp_path):
    from facegan.config import ParamsError, read_yaml

    f = tmp_path / "params.yaml"
    f.write_text("datasets:\n  cartoon:\n    quality: {min_sharpness: 10.0}\n    quality: {min_sharpness: 99.0}\n")
    with pytest.raises(ParamsError, match=r"found the key 'quality' a second time \(first on line 3\)"):
        read_yaml(f)
    # merge keys are not keys given twice: `<<: *base` (twice, too) reads as yaml.safe_load reads it
    f.write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\ntwo:\n  <<: *b\n  <<: {z: 4}\n")
    assert (
        read_yaml(f)
        == yaml.safe_load(f.read_text())
        == {
            "base": {"x": 1, "y": 2},
            "other": {"x": 1, "y": 3},
            "two": {"x": 1, "y": 2, "z": 4},
        }
    )


@needs_yunet
@needs_superres
def test_photos_kind_picks_the_best_backends_whose_files_are_here_and_load_and_says_why(tmp_path, monkeypatch):
    """A model file that was there was picked, though it did not load (a download cut off): `detect` then failed on
    the first image. Now a backend's files must load and run at import; one that does not is passed over, saying so."""
    monkeypatch.setenv("FACEGAN_MODELS", str(tmp_path / "empty"))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "empty"))
    chosen, notes = pick_backends("photos")
    assert {s: v["backend"] for s, v in chosen.items()} == {
        "detect": "hog",
        "align": "dlib68",
        "matte": "grabcut",
        "upscale": "lanczos",
    }
    assert any(n.startswith("detect: hog (not yunet: YuNet model") and str(tmp_path / "empty") in n for n in notes)
    assert any(n.startswith("matte: grabcut (not rembg: rembg model u2net.onnx not found") for n in notes)
    assert any(
        n.startswith("upscale: lanczos (not opencv: super-resolution model FSRCNN_x2.pb not found") for n in notes
    )

    yunet = tmp_path / "models" / "detectors" / "face_detection_yunet_2023mar.onnx"
    fsrcnn = tmp_path / "models" / "superres" / "FSRCNN_x2.pb"
    u2net = tmp_path / "u2net" / "u2net.onnx"
    for path, real in ((yunet, YUNET[-1]), (fsrcnn, SUPERRES / "FSRCNN_x2.pb"), (u2net, None)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(real.read_bytes()[:1000] if real is not None else b"\x08\x08 cut off")  # a cut download
    monkeypatch.setenv("FACEGAN_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    chosen, notes = pick_backends("photos")
    assert [chosen[s]["backend"] for s in ("detect", "matte", "upscale")] == ["hog", "grabcut", "lanczos"]
    for stage, backend, path, what in (
        ("detect", "hog", yunet, "YuNet face detector"),
        ("matte", "grabcut", u2net, "rembg u2net model"),
        ("upscale", "lanczos", fsrcnn, "OpenCV dnn_superres FSRCNN x2 model"),
    ):
        note = next(n for n in notes if n.startswith(f"{stage}: {backend} (not "))
        assert f"{path}: not a usable {what}" in note and "the file is truncated or of another kind: replace it" in note

    shutil.copyfile(YUNET[-1], yunet)
    shutil.copyfile(SUPERRES / "FSRCNN_x2.pb", fsrcnn)
    u2net_standin(u2net)
    chosen, notes = pick_backends("photos")
    assert chosen["detect"] == {"backend": "yunet", "min_size": 40} and chosen["matte"] == {"backend": "rembg"}
    assert chosen["upscale"] == {"backend": "opencv", "model": "FSRCNN", "scale": 2}  # the winner in docs/benchmarks.md
    assert "detect: yunet" in notes and "matte: rembg" in notes and "upscale: opencv" in notes
    cfg = yaml.safe_load("datasets:\n" + dataset_block("x", "photos", False, False, chosen))["datasets"]["x"]
    assert (
        cfg["detect"]["backend"] == "yunet"
        and cfg["align"]["backend"] == "dlib68"
        and cfg["matte"]["backend"] == "rembg"
    )


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(tmp_path):
    """The README's 'Add your own dataset' commands, run line by line in a DVC copy of the project."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- walkthrough:start -->\s*```bash\n(.*?)```", text, re.S).group(1)
    commands = [line.split()[:] for line in block.strip().splitlines()]
    (tmp_path / "proj").mkdir()
    root, env = make_dvc_project(tmp_path / "proj", tracking=False)
    _photos(root / "my_photos", root / "my_refs")
    bin_dir = Path(env["PATH"].split(":")[0])
    outputs = []
    for cmd in commands:
        outputs.append(sh([str(bin_dir / cmd[0]), *cmd[1:]], root, env))
    added, shown = outputs[0], outputs[2]
    assert "images imported" in added and "skipped notes.txt: not an image file" in added and "duplicate" in added
    assert "detect" in shown and "verify" in shown and "pack" in shown
    assert "backend detect: " in added and "backends used: detect " in shown and "align dlib68" in shown
    if FACES.is_dir():
        assert "another person" in shown  # biden.jpg is not the reference person
    assert "me" in outputs[3] and "removed data/raw/me.dvc" in outputs[4]
    assert "me:" not in (root / "params.yaml").read_text()
    assert not (root / "data" / "raw" / "me").exists() and not (root / "data" / "raw" / "me.dvc").exists()
    assert set(load_params(root / "params.yaml").datasets) == {"cartoon", "sketch"}


def test_symbolic_links_in_a_folder_are_followed_to_files_and_the_others_reported(tmp_path):
    """Symbolic links used to be left out without a word: neither imported nor listed as skipped."""
    src, elsewhere = tmp_path / "src", tmp_path / "elsewhere"
    src.mkdir()
    elsewhere.mkdir()
    far = elsewhere / "far.png"
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(far)
    (src / "own.png").write_bytes(_png())
    (src / "link.png").symlink_to(far)  # outside the folder: followed (the folder is the user's own)
    (src / "broken.png").symlink_to(tmp_path / "gone.png")
    (src / "folder_link").symlink_to(elsewhere)
    report = import_images(src, tmp_path / "out")
    assert report.imported == ["link.png", "own.png"]
    assert report.skipped == {
        "broken.png": "broken symbolic link",
        "folder_link": "symbolic link to a folder (not followed)",
    }
    copied = tmp_path / "out" / "link.png"
    assert not copied.is_symlink() and copied.read_bytes() == far.read_bytes()


@pytest.mark.parametrize(
    "content, match",
    [
        (None, r"label file .*nope\.csv \(--labels\): not found"),
        (b"file\n", r"nope\.csv: needs a header row"),
        (b"file,glasses\n", r"nope\.csv: no usable label row under the header"),
        ("file,hair\na.png,\xe9\n".encode("latin-1"), r"not UTF-8 text \(byte 0xe9 at offset 16\); save it as UTF-8"),
        (b"file,glasses\na.png,1\na.png,0\n", r"nope\.csv: line 3 labels 'a\.png' again, with other values"),
        # a figure per attribute, samples_by_<name>.png: 'hair/color' made a folder the train stage did not log
        (b"file,hair/color\na.png,1\n", r"nope\.csv: column 2 of the header is named 'hair/color': give it a name"),
        (b"file,smile,\na.png,1,0\n", r"nope\.csv: column 3 of the header has no name: name it, or remove the column"),
        (b"file,smile,smile\na.png,1,0\n", r"column 3 of the header, 'smile', names the same figure and metric as col"),
        (b"file,Smile,smile\na.png,1,0\n", r"column 3 .*, 'smile', names the same .* as column 2 \('Smile'\)"),
        (b"file,hair colour,hair_colour\na.png,1,0\n", r"column 3 .*, 'hair_colour', names the same"),
        (b"file," + b"x" * 201 + b"\na.png,1\n", r"column 2 of the header has a name of 201 bytes: at most 200"),
        # a spreadsheet's export in a locale whose separator is ';': the header was there, the message said it was not
        (b"file;smile\na.png;1\n", r"nope\.csv: its columns are separated by ';'; separate them by commas \(CSV\)$"),
        (b"file\tsmile\na.png\t1\n", r"nope\.csv: its columns are separated by '\\t'; separate them by commas"),
        # absolute paths: every image unlabelled, the add succeeded, and pack rejected every image
        (
            b"file,smile\n/home/me/imgs/a.png,1\n",
            r"nope\.csv: no row names an imported image \(rows name e.g. '/home/me/imgs/a.png', images are e.g. "
            r"'a.png'\): its first column must give each image's path inside the source folder or .zip$",
        ),
    ],
)
def test_a_label_file_that_cannot_be_used_is_one_clear_error_and_add_keeps_nothing(tmp_path, project, content, match):
    """A missing, header-only or Latin-1 file used to be a traceback (FileNotFoundError, ValueError,
    UnicodeDecodeError); one image labelled twice kept its last row without a word."""
    from facegan.errors import FaceganError

    root, params, before = project
    labels = tmp_path / "nope.csv"
    if content is not None:
        labels.write_bytes(content)
    with pytest.raises(FaceganError, match=match):
        add("mine", _one_image(tmp_path / "imgs"), "drawings", labels=labels, params_file=params, root=root)
    assert params.read_text() == before and not (root / "data" / "raw" / "mine").exists()


def test_label_files_may_start_with_a_byte_order_mark_and_repeat_a_row(tmp_path):
    from facegan.data.pack import read_labels

    path = tmp_path / "labels.csv"
    path.write_bytes("file,glasses\na.png,1\na.png,1\n".encode("utf-8-sig"))  # Excel's "CSV UTF-8"
    assert read_labels(path) == ({"a.png": {"glasses": "1"}}, ["glasses"], [])
