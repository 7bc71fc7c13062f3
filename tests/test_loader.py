"""Training sets larger than memory: above `memory_budget_gb` the packed set is decoded once into a file and
memory-mapped, with the same rows in the same seeded order as the in-memory path (bitwise training, resume)."""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import killed_at, tiny_params
from facegan.data.packed import ZIP_NAME, decoded_memmap, load_packed
from facegan.io import sha256_file
from facegan.train.images import load_training_data
from facegan.train.run import run_train


def test_streamed_and_in_memory_sets_hold_the_same_images(layout, tmp_path, caplog):
    memory, labels_m, _ = load_training_data(layout.packed, threads=2)
    assert not list(tmp_path.iterdir())
    with caplog.at_level(logging.INFO, logger="facegan"):
        streamed, labels_s, _ = load_training_data(layout.packed, threads=2, memory_budget_gb=1e-9, cache=tmp_path)
    assert "over the memory budget" in caplog.text and "streaming it from" in caplog.text
    assert streamed.shape == memory.shape and torch.equal(streamed, memory)
    assert (labels_m is None and labels_s is None) or torch.equal(labels_m, labels_s)
    file = tmp_path / f"{sha256_file(layout.packed / ZIP_NAME)[:32]}.npy"
    assert file.is_file() and file.stat().st_size >= memory.numel()  # decoded once, named by the ZIP's content
    before = file.stat().st_mtime_ns
    decoded_memmap(layout.packed / ZIP_NAME, tmp_path)
    assert file.stat().st_mtime_ns == before  # reused, not decoded again
    idx = torch.tensor([5, 0, 3])
    assert torch.equal(streamed[idx], memory[idx])
    nhwc, _, _ = load_packed(layout.packed / ZIP_NAME, threads=3)
    assert np.array_equal(nhwc.transpose(0, 3, 1, 2), memory.numpy())  # thread count never changes the result


def test_training_streamed_is_bitwise_the_in_memory_run_and_resumes(layout, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGAN_CACHE", str(tmp_path / "cache"))
    cfg = tiny_params(steps=4, checkpoint_every=2, fid_every=0).train
    memory = run_train(cfg, layout.packed, tmp_path / "memory")
    tiny = cfg.model_copy(update={"memory_budget_gb": 1e-9})
    with killed_at(monkeypatch, 3):
        run_train(tiny, layout.packed, tmp_path / "streamed")
    streamed = run_train(tiny, layout.packed, tmp_path / "streamed")
    assert streamed.losses == memory.losses
    assert list((tmp_path / "cache" / "decoded").glob("*.npy"))


PEAK = r"""
import re, sys
from pathlib import Path
from facegan.train.images import load_training_data

def kib(field):
    return int(re.search(field + r":\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))

before = kib("VmRSS")
x, _, _ = load_training_data(Path(sys.argv[1]), threads=2, memory_budget_gb=float(sys.argv[2]))
print(kib("VmHWM") - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads the RSS and its peak from /proc/self/status")
def test_the_in_memory_set_is_held_once(tmp_path):
    """Loading a set that fits the budget peaks at about one copy of it: it was decoded into an NHWC array,
    permuted into a contiguous copy (and pinned into a third), so a 100 MB set under a 101 MB budget took 200 MB
    (300 MB pinned). Measured in a fresh process, as its peak RSS over its RSS before the load, which counts
    numpy's, torch's and Pillow's memory alike (the peak before it, its imports', is below the load's)."""
    n, r = 128, 512  # 100.7 MB decoded: far above the decoder's per-image and per-thread memory
    packed = tmp_path / "packed"
    packed.mkdir()
    with zipfile.ZipFile(packed / ZIP_NAME, "w") as zf:  # PNGs of smooth gradients: small, quick to decode
        zf.writestr("dataset.json", json.dumps({"labels": None}))
        ramp = np.linspace(0, 255, r, dtype=np.uint8)
        for i in range(n):
            im = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], np.uint8(i)), axis=-1)
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, format="PNG", compress_level=1)
            zf.writestr(f"{i:05d}.png", buf.getvalue())
    size = n * 3 * r * r
    cmd = [sys.executable, "-c", PEAK, str(packed), str(size * 1.01 / 1e9)]
    grew = int(subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout) * 1024  # KiB
    assert grew < 1.4 * size, f"loading a {size / 1e6:.0f} MB set raised the peak RSS by {grew / 1e6:.0f} MB"


def test_a_killed_decode_leaves_no_temporary_behind(layout, tmp_path):
    """A process killed while decoding leaves its .<sha>.<host>.<pid>.npy, as large as the set; the next decode
    of the set (or the next load of the finished one) removes it, but not one a live process is still writing,
    nor another host's, whose pid means nothing here."""
    zip_path = layout.packed / ZIP_NAME
    stem, host = sha256_file(zip_path)[:32], socket.gethostname()
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    killed = tmp_path / f".{stem}.{host}.{gone.pid}.npy"
    writing = tmp_path / f".{stem}.{host}.{live.pid}.npy"
    elsewhere = tmp_path / f".{stem}.other-node.{gone.pid}.npy"
    for f in (killed, writing, elsewhere):
        f.write_bytes(b"half")
    try:
        decoded_memmap(zip_path, tmp_path)
        assert not killed.exists() and writing.exists() and elsewhere.exists()
        assert (tmp_path / f"{stem}.npy").is_file()
        killed.write_bytes(b"half")  # killed beside a process that went on to finish the decode
        decoded_memmap(zip_path, tmp_path)
        assert sorted(f.name for f in tmp_path.iterdir()) == sorted([f"{stem}.npy", writing.name, elsewhere.name])
    finally:
        live.kill()
        live.wait()


def test_a_decode_that_fails_takes_its_temporary_with_it(layout, tmp_path, monkeypatch):
    """A decode stopped by an error (a damaged image, a full disk) left its .<sha>.<host>.<pid>.npy, as large as
    the set, until a later process on this host swept it."""
    import facegan.data.packed as packed

    def damaged(zip_path, out, threads=1):
        out[:1] = 7  # part of the set decoded, then an image that does not decompress
        raise packed.PackedSetDamaged(f"{zip_path}:00000/img00000001.png: Bad CRC-32")

    monkeypatch.setattr(packed, "decode_packed", damaged)
    with pytest.raises(packed.PackedSetDamaged, match="Bad CRC-32"):
        decoded_memmap(layout.packed / ZIP_NAME, tmp_path)
    assert list(tmp_path.iterdir()) == []
