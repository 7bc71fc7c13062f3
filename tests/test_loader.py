"""Training sets larger than memory: above `memory_budget_gb` the packed set is decoded once into a file and
memory-mapped, with the same rows in the same seeded order as the in-memory path (bitwise training, resume)."""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import sys
import time
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


def test_each_process_of_a_host_counts_against_the_budget_and_they_decode_the_stream_once(
    layout, tmp_path, caplog, monkeypatch
):
    """DDP ranks each held the whole set in (pinned) memory, the budget checked per process; and every rank missing
    the decoded file wrote its own set-sized temporary at once."""
    import threading

    import facegan.data.packed as packed

    memory, _, _ = load_training_data(layout.packed)
    size_gb = memory.numel() / 1e9
    with caplog.at_level(logging.INFO, logger="facegan"):
        two, _, _ = load_training_data(layout.packed, memory_budget_gb=size_gb * 3, copies=2, cache=tmp_path)
        assert "over the memory budget" not in caplog.text and torch.equal(two, memory)  # 2 copies fit
        four, _, _ = load_training_data(layout.packed, memory_budget_gb=size_gb * 3, copies=4, cache=tmp_path)
    assert f"in this host's 4 processes) is over the memory budget ({size_gb * 3:.1f} GB)" in caplog.text
    assert torch.equal(four, memory)
    decodes, decode = [], packed.decode_packed

    def slow_decode(*args, **kwargs):
        decodes.append(threading.get_ident())
        time.sleep(0.5)  # the other caller arrives while this one decodes
        decode(*args, **kwargs)

    monkeypatch.setattr(packed, "decode_packed", slow_decode)
    cache = tmp_path / "shared"
    out: list = []
    callers = [
        threading.Thread(target=lambda: out.append(decoded_memmap(layout.packed / ZIP_NAME, cache))) for _ in "ab"
    ]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert len(decodes) == 1 and len(out) == 2  # one decoded, the other waited and mapped its file
    assert all(np.array_equal(o, memory.numpy()) for o in out)
    assert sorted(p.suffix for p in cache.iterdir()) == [".lock", ".npy"]  # no temporary left
    made = tmp_path / "made-elsewhere"  # a decoded file already there (another's cache) is mapped without a lock
    made.mkdir()
    (made / next(cache.glob("*.npy")).name).write_bytes(next(cache.glob("*.npy")).read_bytes())
    assert np.array_equal(decoded_memmap(layout.packed / ZIP_NAME, made), memory.numpy())
    assert [p.suffix for p in made.iterdir()] == [".npy"] and len(decodes) == 1


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
        lock = f".{stem}.lock"  # the decoders' turn-taking: kept (removing a lock file races its next taker)
        assert sorted(f.name for f in tmp_path.iterdir()) == sorted([f"{stem}.npy", writing.name, elsewhere.name, lock])
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
    assert [p.suffix for p in tmp_path.iterdir()] == [".lock"]  # the decoders' lock file, empty; no temporary
