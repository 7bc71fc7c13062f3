"""Images as training tensors: uint8 <-> [-1, 1] floats, seeded subsets and batches, the packed set in memory.

Batches are drawn from seeded permutations of (seed, epoch), so the batch of any step is known without
sampler state: a resumed run sees exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facegan.data.packed import ZIP_NAME, load_packed


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> floats in [-1, 1] (the inverse of to_uint8's scaling)."""
    return x.float().div(127.5).sub(1)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    return x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def seeded_subset(images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n images picked by a permutation fixed by `seed` (all of them when there are fewer)."""
    return images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]]


def batch_indices(n: int, batch: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the step's batch: epochs are seeded permutations, so no sampler state is needed."""
    out: list[torch.Tensor] = []
    pos, need = step * batch, batch
    while need:
        epoch, off = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7_919 + epoch))
        take = min(need, n - off)
        out.append(perm[off : off + take])
        pos, need = pos + take, need - take
    return torch.cat(out)


def load_training_data(packed: Path, threads: int = 1, pin: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """The whole packed set as one (N, 3, R, R) uint8 tensor (pinned for fast, asynchronous GPU copies)."""
    images, labels, meta = load_packed(packed / ZIP_NAME, threads=threads)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return (x.pin_memory() if pin else x), (torch.from_numpy(labels) if labels is not None else None), meta
