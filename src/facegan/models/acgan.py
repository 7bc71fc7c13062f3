"""ACGAN (Odena et al. 2017) pieces: label encodings and the auxiliary classification loss.

Labels are (N, A) integer tensors, one column per attribute (hair colour, glasses, ...), each
indexing that attribute's values; `label_dims` holds the number of values per attribute.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def one_hot(labels: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """(N, A) indices -> (N, sum(dims)) concatenated one-hot vectors (multi-hot over attributes)."""
    return torch.cat([F.one_hot(labels[:, a], k) for a, k in enumerate(dims)], 1).float()


def split_multihot(logits: torch.Tensor, dims: Sequence[int]) -> list[torch.Tensor]:
    """One multi-hot head's logits split back into per-attribute groups."""
    return list(torch.split(logits, list(dims), dim=1))


def aux_loss(aux: list[torch.Tensor], labels: torch.Tensor, head: str) -> torch.Tensor:
    """Mean over attributes of the classification loss: softmax CE per group, or sigmoid BCE (multi-hot)."""
    if head == "softmax":
        return torch.stack([F.cross_entropy(logits, labels[:, a]) for a, logits in enumerate(aux)]).mean()
    dims = [g.shape[1] for g in aux]
    return F.binary_cross_entropy_with_logits(torch.cat(aux, 1), one_hot(labels, dims))


def predict(aux: list[torch.Tensor]) -> torch.Tensor:
    """(N, A) predicted value per attribute (argmax within each group, for either head)."""
    return torch.stack([logits.argmax(1) for logits in aux], 1)
