"""Per-seed draws: a seed's noise vector and label row, the same in `facegan sample`, the explorer, the registered
model and StyleGAN2's style figures, whatever else is drawn beside it; seeds outside 0 .. 2^63 - 1 are refused."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from facegan.errors import FaceganError

MAX_SEED = 2**63 - 1  # torch.Generator takes seeds up to 2^64 - 1 but wraps negative ones onto them: 0 .. 2^63 - 1


class SeedError(FaceganError, ValueError):
    """A seed out of 0 .. 2^63 - 1."""


def check_seeds(first: int, n: int = 1) -> None:
    """Seeds first .. first + n - 1 must lie in 0 .. MAX_SEED (a negative one would draw a large one's numbers)."""
    if first < 0 or first + n - 1 > MAX_SEED:
        said = f"seed {first}" if n == 1 else f"seeds {first} .. {first + n - 1}"
        raise SeedError(f"{said}: seeds are 0 .. {MAX_SEED}")


def seed_z(z_dim: int, seeds: Sequence[int]) -> torch.Tensor:
    """(N, z_dim): one normal vector per seed (a torch.Generator seeded with it): a seed's image is the same in
    `facegan sample`, the explorer and the registered model, whatever else is drawn beside it."""
    return torch.stack([torch.randn(z_dim, generator=generator(s)) for s in seeds])


def seed_labels(seeds: Sequence[int], sizes: Sequence[int]) -> torch.Tensor:
    """(N, attributes) label indices, one row per seed from a stream of its own (independent of the seed's z):
    attribute a uniform over its `sizes[a]` values."""
    rows = []
    for s in seeds:
        gen = _label_stream(s)
        rows.append([int(torch.randint(k, (), generator=gen)) for k in sizes])
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), len(sizes))


def seed_rows(seeds: Sequence[int], count: int) -> torch.Tensor:
    """(N,) indices into `count` rows (a dataset's label rows), one per seed from the stream `seed_labels` draws
    from: a seed's row is the same whatever else is drawn beside it."""
    return torch.tensor([int(torch.randint(count, (), generator=_label_stream(s))) for s in seeds], dtype=torch.long)


def generator(seed: int, offset: int = 0) -> torch.Generator:
    """A torch.Generator seeded with `seed` + `offset`; SeedError for a seed out of 0 .. MAX_SEED (a negative seed drew
    a large one's numbers, 2^64 a traceback). Every per-seed draw of this module, and the explorer's, go through
    here; seeds of params (train.seed, ...) are validated with the params."""
    check_seeds(int(seed))
    return torch.Generator().manual_seed(int(seed) + offset)


def _label_stream(seed: int) -> torch.Generator:
    """A seed's own stream for its labels, apart from its z's."""
    return generator(seed, 1_000_003)
