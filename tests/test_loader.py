"""Training sets larger than memory: above `memory_budget_gb` the packed set is decoded once into a file and
memory-mapped, with the same rows in the same seeded order as the in-memory path (bitwise training, resume)."""

from __future__ import annotations

import logging

import numpy as np
import torch

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
