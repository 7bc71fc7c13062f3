"""Copies between the host and the training device that do not wait for the device.

A training step draws its small random inputs on the host (latents, flips, labels, style-mixing latents,
augmentation parameters: all from the step's seeded CPU generator, so a seed draws the same on CPU and CUDA).
`tensor.to("cuda")` from ordinary (pageable) memory makes PyTorch wait for every kernel already queued
(`cudaStreamSynchronize` after the copy): the GPU drains and then idles while the host works towards its next
launch. Staged in pinned memory, the copy is queued like a kernel instead; PyTorch's pinned-memory cache keeps
the staging buffer until the copy has run. The other way (a step's losses), `to_host` queues the copy into pinned
memory and returns the event to wait on before reading it.
"""

from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` (a host tensor) on `device`; on CUDA a copy queued on the current stream, without a host sync."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return (t if t.is_pinned() else t.pin_memory()).to(device, non_blocking=True)


def to_host(t: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """(`t` on the host, the event to wait on before reading it): from CUDA a copy into pinned memory queued on
    the current stream, so nothing waits for the GPU here; a host tensor is returned as it is, with no event."""
    if t.device.type != "cuda":
        return t, None
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record(torch.cuda.current_stream(t.device))
    return host, copied
