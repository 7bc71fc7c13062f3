"""Host tensors onto the training device without waiting for the device.

A training step draws its small random inputs on the host (latents, flips, labels, style-mixing latents,
augmentation parameters: all from the step's seeded CPU generator, so a seed draws the same on CPU and CUDA).
`tensor.to("cuda")` from ordinary (pageable) memory makes PyTorch wait for every kernel already queued
(`cudaStreamSynchronize` after the copy): the GPU drains and then idles while the host works towards its next
launch. Staged in pinned memory, the copy is queued like a kernel instead; PyTorch's pinned-memory cache keeps
the staging buffer until the copy has run.
"""

from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` (a host tensor) on `device`; on CUDA a copy queued on the current stream, without a host sync."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return (t if t.is_pinned() else t.pin_memory()).to(device, non_blocking=True)
