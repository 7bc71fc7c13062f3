"""Images as training tensors: uint8 <-> [-1, 1] floats, seeded subsets and batches, the packed set in memory.

Batches are drawn from seeded permutations of (seed, epoch), so the batch of any step is known without
sampler state: a resumed run sees exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import torch

from facegan.data.packed import ZIP_NAME, decode_packed, decoded_memmap, load_labels, packed_meta, packed_shape
from facegan.io import cache_root

log = logging.getLogger(__name__)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> floats in [-1, 1] (the inverse of to_uint8's scaling)."""
    return x.float().div(127.5).sub(1)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    return x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def seeded_subset(images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n images picked by a permutation fixed by `seed` (all of them when there are fewer)."""
    return images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]]


def subset(
    images: torch.Tensor, labels: torch.Tensor | None, n: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n images (and their labels) picked by a permutation fixed by `seed`, kept in packed order: the small
    training set of a small-data study, the same for every run that shares the seed."""
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return images[idx], (labels[idx] if labels is not None else None)


@functools.lru_cache(maxsize=4)  # the current epoch and the next, for up to two sets (CycleGAN's A and B)
def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of `epoch`, drawn once: ~0.3 ms for 70,000 images, which every step paid (~7% of a CUDA-graphed
    DCGAN step at 64², 4.1 ms on the H200). Read-only: callers take slices of it."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7_919 + epoch))


def batch_indices(n: int, batch: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the step's batch (a new tensor): epochs are seeded permutations, so no sampler state is needed."""
    out: list[torch.Tensor] = []
    pos, need = step * batch, batch
    while need:
        epoch, off = divmod(pos, n)
        perm = _epoch_permutation(n, seed, epoch)
        take = min(need, n - off)
        out.append(perm[off : off + take])
        pos, need = pos + take, need - take
    return torch.cat(out)


def default_cache() -> Path:
    """Where sets too large for memory are decoded once (FACEGAN_CACHE, else ~/.cache/facegan/decoded)."""
    return cache_root() / "decoded"


def load_training_data(
    packed: Path,
    threads: int = 1,
    pin: bool = False,
    memory_budget_gb: float = float("inf"),
    cache: Path | None = None,
    copies: int = 1,
) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """The packed set as one (N, 3, R, R) uint8 tensor: decoded into memory when `copies` of it (one per process
    of the run on this host: DDP ranks each hold their own) fit `memory_budget_gb` (pinned for fast, asynchronous
    GPU copies), else memory-mapped from a file decoded once into `cache`, whose pages the processes share.
    Both paths index the same rows in the same seeded order, so training is the same bit for bit.

    In memory, the PNGs are decoded straight into that one (pinned) tensor, so the set is held once: an NHWC
    array permuted into a contiguous copy, then pinned, held it two or three times at once, over the budget."""
    zip_path = packed / ZIP_NAME
    n, h, w = packed_shape(zip_path)
    size_gb = n * 3 * h * w / 1e9
    meta = packed_meta(zip_path)
    labels = load_labels(zip_path, meta)
    if size_gb * copies <= memory_budget_gb:
        x = torch.empty((n, 3, h, w), dtype=torch.uint8, pin_memory=pin)
        decode_packed(zip_path, x.numpy(), threads)
    else:
        folder = cache or default_cache()
        held = f"{size_gb:.1f} GB" + (
            f", {size_gb * copies:.1f} GB in this host's {copies} processes" if copies > 1 else ""
        )
        log.info(
            "the decoded set (%s) is over the memory budget (%.1f GB): streaming it from %s",
            held,
            memory_budget_gb,
            folder,
        )
        x = torch.from_numpy(decoded_memmap(zip_path, folder, threads))
    return x, (torch.from_numpy(labels) if labels is not None else None), meta
