"""Bad input gets a clear reason and loses nothing: odd formats decode, broken files are named."""

from __future__ import annotations

import io
import os
import re
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from facegan.io import ImageError, atomic_dir, image_grid, read_image


def _rgb(h=40, w=60):
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (200, 30, 30)
    a[:, w // 2 :] = (20, 40, 220)
    return a


def test_cmyk_jpeg(tmp_path):
    p = tmp_path / "c.jpg"
    Image.fromarray(_rgb()).convert("CMYK").save(p, quality=95)
    im = read_image(p)
    assert im.shape == (40, 60, 3) and abs(int(im[5, 5, 0]) - 200) < 20


def test_16bit_grayscale_png_scaled_not_clipped(tmp_path):
    p = tmp_path / "g16.png"
    a = np.full((10, 12), 32768, np.uint16)
    Image.fromarray(a).save(p)
    im = read_image(p)
    assert im.shape == (10, 12, 3) and 126 <= im[0, 0, 0] <= 129


def test_grayscale_and_rgba_and_palette(tmp_path):
    Image.fromarray(np.full((8, 8), 77, np.uint8)).save(tmp_path / "g.png")
    assert (read_image(tmp_path / "g.png") == 77).all()
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent -> white
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert (read_image(tmp_path / "a.png") == 255).all()
    Image.fromarray(_rgb()).convert("P").save(tmp_path / "p.gif")
    assert read_image(tmp_path / "p.gif").shape == (40, 60, 3)


def test_exif_rotation_applied(tmp_path):
    p = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    Image.fromarray(_rgb(40, 60)).save(p, exif=exif, quality=95)
    im = read_image(p)
    assert im.shape == (60, 40, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_as_pillow_turns_it(tmp_path, orientation):
    p = tmp_path / "r.png"  # lossless: the turned pixels compare exactly
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_rgb(40, 60)).save(p, exif=exif)
    with Image.open(p) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert np.array_equal(read_image(p), expected)


def test_damaged_exif_block_keeps_the_photo(tmp_path):
    # a tag whose value no longer packs: ImageOps.exif_transpose raised struct.error writing the EXIF back, which
    # stopped the whole detect stage on one photo
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Canon"
    buf = io.BytesIO()
    Image.fromarray(_rgb(40, 60)).save(buf, "JPEG", exif=exif, quality=95)
    data = bytearray(buf.getvalue())
    data[41] = 64  # the Make tag's type byte: BYTE -> an unknown type
    p = tmp_path / "bad.jpg"
    p.write_bytes(bytes(data))
    with Image.open(p) as im, pytest.raises(struct.error):  # the damage this test is about (this Pillow's layout)
        ImageOps.exif_transpose(im)
    assert read_image(p).shape == (60, 40, 3)  # still turned: its orientation tag reads


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", r"^unreadable image: an empty file \(0 bytes\)$"),  # was "no image format Pillow knows"
        (b"this is not an image at all", r"^unreadable image: no image format Pillow knows$"),
    ],
)
def test_garbage_files_give_a_reason(tmp_path, content, reason):
    p = tmp_path / "x.png"
    p.write_bytes(content)
    with pytest.raises(ImageError, match=reason):
        read_image(p)


def test_truncated_png(tmp_path):
    p = tmp_path / "t.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(ImageError, match="unreadable image"):
        read_image(p)


def test_too_large_is_refused_before_decoding(tmp_path):
    p = tmp_path / "big.png"
    Image.fromarray(_rgb(100, 100)).save(p)
    with pytest.raises(ImageError, match=r"too large: 100x100 > 5000 pixels"):
        read_image(p, max_pixels=5000)


def test_atomic_dir_keeps_old_output_on_failure(tmp_path):
    dst = tmp_path / "out"
    with atomic_dir(dst) as tmp:
        (tmp / "a.txt").write_text("v1")
    with pytest.raises(RuntimeError), atomic_dir(dst) as tmp:
        (tmp / "a.txt").write_text("v2")
        raise RuntimeError("boom")
    assert (dst / "a.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_file_written_whole_or_not_at_all_leaves_no_temporary_file(tmp_path, monkeypatch):
    """A failed write (a full disk) of a checkpoint, feature statistics or a text file left its hidden temporary
    file behind (up to a checkpoint's hundreds of MB, on the disk that was full); the old file stays."""
    import errno

    import torch

    from facegan.evaluate.fid import feature_stats, load_stats, save_stats
    from facegan.io import write_text
    from facegan.train.checkpoint import save_checkpoint

    def full(f) -> None:  # writes part of the file, then the disk is full
        Path(f).write_bytes(b"part")
        raise OSError(errno.ENOSPC, "No space left on device")

    def fails(write, target, name: str, replacement) -> None:
        with monkeypatch.context() as m:
            m.setattr(target, name, replacement)
            with pytest.raises(OSError, match="No space left"):
                write()
        assert not [p.name for p in tmp_path.glob(".*")]

    ckpt = tmp_path / "checkpoint.pt"
    save_checkpoint(ckpt, {"step": 1})
    fails(lambda: save_checkpoint(ckpt, {"step": 2}), torch, "save", lambda obj, f, **k: full(f))
    assert torch.load(ckpt, weights_only=True)["step"] == 1
    write_text(tmp_path / "a.txt", "old")
    fails(lambda: write_text(tmp_path / "a.txt", "new"), Path, "write_text", lambda self, *a, **k: full(self))
    assert (tmp_path / "a.txt").read_text() == "old"
    save_stats(tmp_path / "dlib.npz", feature_stats(np.ones((3, 2)), False))
    fails(
        lambda: save_stats(tmp_path / "dlib.npz", feature_stats(np.ones((4, 2)), False)),
        np,
        "savez",
        lambda f, **arrays: full(f),
    )
    assert load_stats(tmp_path / "dlib.npz").n == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "checkpoint.pt", "dlib.npz"]
    (tmp_path / ".b.txt.tmp").mkdir()  # the temporary name taken (by a folder): the write's own error is raised
    with pytest.raises(IsADirectoryError, match=r"\.b\.txt\.tmp") as e:
        write_text(tmp_path / "b.txt", "x")
    assert e.value.__context__ is None  # the write's, not the clean-up's (which would have it as its context)


def test_image_grid_layout():
    ims = np.stack([np.full((4, 5, 3), i * 10, np.uint8) for i in range(5)])
    g = image_grid(ims, ncols=3, pad=1)
    assert g.shape == (2 * 5 + 1, 3 * 6 + 1, 3)
    assert g[1, 1, 0] == 0 and g[6, 1, 0] == 30 and g[6, 7, 0] == 40


def test_host_free_cuts_absolute_paths_but_not_urls():
    from facegan.io import host_free

    text = (
        "not found. Looked in /home/u/.cache/torch/hub/checkpoints/w.pth (hub cache) and could not download "
        "https://github.com/a/b/w.pth; copy it to /home/u/.cache/torch/hub/checkpoints/, or 'x/y' or /z"
    )
    assert host_free(text) == (
        "not found. Looked in .../checkpoints/w.pth (hub cache) and could not download "
        "https://github.com/a/b/w.pth; copy it to .../hub/checkpoints/, or 'x/y' or /z"
    )


def test_files_in_hidden_folders_are_no_images_of_the_folder(tmp_path):
    """`facegan sample`'s unfinished folder, a desktop's thumbnail folder: hidden, as a hidden file is."""
    from facegan.io import is_hidden, list_images, split_images

    for rel in ("a.png", "sub/b.png", ".c.png", ".partial/d.png", "sub/.thumbs/e.png", "notes.txt", ".x/n.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a.png", "sub/b.png"]
    assert [p.name for p in split_images(tmp_path)[1]] == ["notes.txt"]
    assert is_hidden(Path(".partial/d.png")) and not is_hidden(Path("sub/b.png"))


def test_a_folder_s_files_follow_linked_folders_once_and_list_a_link_to_nothing(tmp_path):
    """rglob passed over a linked subfolder and a link to nothing without a word: detect gave them no row (a raw
    folder of links into a photo library lost those photos unseen)."""
    from facegan.io import list_images, open_image, visible_files

    images, library = tmp_path / "images", tmp_path / "library"
    for rel in ("a.png", "sub/b.png"):
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(images / rel)
    (library / ".hidden").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(library / "c.png")
    Image.new("RGB", (8, 8)).save(library / ".hidden" / "d.png")
    (images / "linked").symlink_to(library)
    (images / "loop").symlink_to(images)  # a link back up: walked once
    (images / "sub" / "up").symlink_to(images / "sub")
    (images / "gone.png").symlink_to(tmp_path / "deleted.png")
    (images / "fifo").mkdir()
    os.mkfifo(images / "fifo" / "pipe")  # neither a file nor a link
    assert [p.relative_to(images).as_posix() for p in visible_files(images)] == [
        "a.png",
        "gone.png",
        "linked/c.png",
        "sub/b.png",
    ]
    assert [p.name for p in list_images(images)] == ["a.png", "gone.png", "c.png", "b.png"]
    gone = rf"^a link to nothing \({re.escape(str(tmp_path / 'deleted.png'))}\)$"
    with pytest.raises(ImageError, match=gone), open_image(images / "gone.png"):
        pass


def test_atomic_dir_output_has_the_umask_permissions(tmp_path):
    # tempfile.mkdtemp's folder is 0700: a stage's output renamed from it was private to its writer
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "a.txt").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
