"""A training step's device work captured once as a CUDA graph and replayed every step after (`train.graph`).

A small net's step (DCGAN at 64²: some 300 kernels, most of them tiny) is bound by the host launching kernels, not
by the GPU running them; `compile: reduce-overhead` graphs each network call but still launches the losses, the
optimisers and the EMA one by one. Here the whole step after its inputs is one graph: D's update, G's update through
a frozen D, both optimisers (capturable, their step counts on the device) and the EMA.

What a replay cannot redo is host work: every host-side decision is frozen at capture. So the step is split in
two: `draw(step)` makes the step's inputs on the host as the eager step would (the seeded batch and flips, latents,
labels, in the same order from the same generator) and queues them to the device; `update(step, inputs)` is the
device work, which for the configurations `TrainConfig.graph` admits draws nothing and decides nothing per step.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

log = logging.getLogger(__name__)


class Batch(NamedTuple):
    """One D update's inputs, on the training device."""

    real: torch.Tensor
    y_real: torch.Tensor | None
    z: torch.Tensor
    y_fake: torch.Tensor | None

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in self if t is not None]

    def clone(self) -> Batch:
        y_real, y_fake = (None if y is None else y.clone() for y in (self.y_real, self.y_fake))
        return Batch(self.real.clone(), y_real, self.z.clone(), y_fake)


Inputs = list[Batch]  # a step's, one per D update
Values = dict[str, torch.Tensor]  # the step's named values, as `Stepper.record` takes them

WARMUP = 3  # eager steps before the capture


class StepGraph:
    """`graph(step)`: one training step, returning its named values (on CUDA the graph's own output tensors, valid
    until the next step's replay: `Stepper.record` queues their copy at once).

    The first `warmup` steps run eagerly on a side stream (what a capture must find done: cuDNN's autotuning, cuBLAS
    workspaces, the optimisers' state, torch.compile's compilation); the next is captured and replayed, and every
    step after copies its inputs into the captured ones and replays. On a device without CUDA graphs (the CPU) each
    step is `update(step, draw(step))`, eagerly: the same split, so the same values as a captured run's order of
    draws, and what tests can run without a GPU.
    """

    def __init__(
        self,
        draw: Callable[[int], Inputs],
        update: Callable[[int, Inputs], Values],
        device: torch.device,
        warmup: int = WARMUP,
    ):
        self.draw, self.update, self.device, self.warmup = draw, update, device, warmup
        self.eager_steps = 0
        self._side: torch.cuda.Stream | None = None  # the warm-up steps' stream
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: Inputs = []
        self.outputs: Values = {}

    def __call__(self, step: int) -> Values:
        inputs = self.draw(step)
        if self.device.type != "cuda":
            return self.update(step, inputs)
        if self.graph is None and self.eager_steps < self.warmup:
            self.eager_steps += 1
            with warnings.catch_warnings():  # a capturable optimiser stepping outside a capture: meant, here
                warnings.filterwarnings("ignore", "This instance was constructed with capturable=True", UserWarning)
                return self._on_side_stream(lambda: self.update(step, inputs))
        if self.graph is None:
            self._capture(step, inputs)
        for mine, given in zip(self.inputs, inputs, strict=True):
            for dst, src in zip(mine.tensors(), given.tensors(), strict=True):
                dst.copy_(src)
        assert self.graph is not None
        self.graph.replay()
        return dict(self.outputs)

    def _on_side_stream(self, fn: Callable[[], Values]) -> Values:
        """fn() on a side stream, ordered after and before the current one (PyTorch's recipe for warm-up steps)."""
        current = torch.cuda.current_stream(self.device)
        self._side = side = self._side or torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            out = fn()
        current.wait_stream(side)
        return out

    def _capture(self, step: int, inputs: Inputs) -> None:
        """Record `update` on inputs of its own (filled before each replay); the capture runs no kernel, so the step it
        is made at is replayed like the others."""
        self.inputs = [b.clone() for b in inputs]
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.outputs = self.update(step, self.inputs)
        self.graph = graph  # only once captured: a failed capture is tried again, never replayed
        log.info("graph: step %d captured as one CUDA graph; replayed from here on", step)
