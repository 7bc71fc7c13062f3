"""The plumbing every trainer shares: device and determinism, DDP and torch.compile wrapping, mixed
precision with grad scaling, seeded per-step randomness and batches, the step counter and the loss history.

Backward passes happen in one place, `Stepper.update`, so AMP grad scaling and optimiser stepping are
written once; trainers and the GAN objective only build loss tensors.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from facegan.config import RunSettings
from facegan.device import to_device, to_host
from facegan.errors import DeviceUnavailable, TrainingDiverged
from facegan.train.dist import Dist, setup
from facegan.train.images import batch_indices

log = logging.getLogger(__name__)

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that replay CUDA graphs
NOISE_STREAM = 1 << 32  # seed offset of the fast runs' noise stream (the augmentations' is 104,729 x rank)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(f"device is {name!r} but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(name)


def deterministic(setting: bool | str, device: torch.device) -> bool:
    """`deterministic: auto` means exact on CPU, fast (cudnn autotuning, TF32) on CUDA."""
    return device.type != "cuda" if setting == "auto" else bool(setting)


def apply_determinism(setting: bool | str, device: torch.device) -> bool:
    """Deterministic kernels (bitwise resume on CPU), or cudnn.benchmark + TF32 for speed; returns which."""
    exact = deterministic(setting, device)
    if exact and device.type == "cuda":  # cuBLAS is deterministic only with a fixed workspace (read at first use)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(exact, warn_only=True)
    # deterministic mode also fills every new tensor with NaN (a debugging aid against reading uninitialised
    # memory): ~2% of a CPU StyleGAN2 step. Results do not depend on it (no kernel here reads its output first).
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]  # a module property
    torch.backends.cudnn.benchmark = not exact
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not exact
    return exact


def keep_freed_memory() -> bool:
    """glibc: serve allocations below 32 MB from the heap and keep what is freed, instead of mapping and
    unmapping every activation-sized buffer (measured: ~10,000 page faults and ~7% of a CPU StyleGAN2 step).
    Results are unchanged; the process keeps its peak heap. False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return bool(
        mallopt(m_mmap_threshold, 32 << 20) and mallopt(m_trim_threshold, 1 << 30) and mallopt(m_top_pad, 64 << 20)
    )


def warn_batchnorm(module: nn.Module, world: int) -> None:
    """Say so when a net with BatchNorm trains on `world` processes: each normalises its own 1/world of the batch
    with that shard's statistics, so the gradient is close to, not the same as, one process's over the global batch
    (DCGAN's and ACGAN's nets, WGAN-GP's G; StyleGAN2 has no BatchNorm and matches one process)."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        log.warning(
            "%s has BatchNorm: each of the %d processes normalises its own 1/%d of the batch, so training is close "
            "to, not the same as, one process's over the global batch",
            type(module).__name__,
            world,
            world,
        )


def runtime(run: RunSettings) -> tuple[Dist, torch.device]:
    """A run's threads, process group, device, determinism and (on CPU) allocator: what `run_train`, the CycleGAN
    stage and the benchmarks all set up, so a benchmark times the settings training uses."""
    if run.threads:
        torch.set_num_threads(run.threads)
    dist, device_name = setup(run.device)
    device = resolve_device(device_name)
    apply_determinism(run.deterministic, device)
    if device.type == "cpu":
        keep_freed_memory()
    return dist, device


def interned(rows: list[dict]) -> list[dict]:
    """Rows loaded from a checkpoint with their keys interned, like the ones the code writes: the next checkpoint
    then pickles to the same bytes as an uninterrupted run's (pickle shares one copy of identical key objects)."""
    return [{sys.intern(k): v for k, v in row.items()} for row in rows]


RUN_FLAGS = ("fused", "foreach", "capturable")  # how an optimiser steps on this run's device, not what it learnt


def load_optimizer(opt: torch.optim.Optimizer, state: dict) -> None:
    """opt.load_state_dict, with the per-parameter state keys interned (see `interned`) and the optimiser's own
    `RUN_FLAGS` in place of the saved ones, before loading, so PyTorch puts each step count where this run steps
    (a fused or capturable one on the parameters' device): a CPU run resumed on CUDA, a graphed CUDA run's capturable
    Adam resumed on the CPU, an eager run resumed graphed."""
    flags = [{k: group[k] for k in RUN_FLAGS if k in group} for group in opt.param_groups]
    if len(state["param_groups"]) != len(flags):
        raise ValueError("loaded state dict has a different number of parameter groups")  # load_state_dict's words
    groups = [{**saved, **kept} for saved, kept in zip(state["param_groups"], flags, strict=True)]
    opt.load_state_dict({**state, "param_groups": groups})
    for p, st in list(opt.state.items()):
        opt.state[p] = {sys.intern(k): v for k, v in st.items()}


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of one step's randomness (batches, flips, noise, labels): a function of (seed, step)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


@dataclass(frozen=True)
class _Unread:
    """A recorded step whose values `settle` has not read yet: on the host, or (CUDA) being copied there."""

    step: int
    names: tuple[str, ...]
    values: torch.Tensor
    extra: dict[str, float]
    copied: torch.cuda.Event | None  # set when the copy to the host has run


class Stepper:
    """Device, DDP/compile wrapping, AMP + grad scaler, seeded batches, step counter and loss history.

    Trainers subclass it and implement `_step()`, `state_dict()`, `load_state_dict()` and `write_samples()`.
    """

    def __init__(self, run: RunSettings, device: torch.device, dist: Dist, *, batch_size: int, mirror: bool):
        if batch_size % dist.world:
            raise ValueError(
                f"the batch size {batch_size} (the global batch) is not divisible by the {dist.world} processes"
            )
        self.device, self.dist = device, dist
        self.batch_size, self.seed, self.mirror, self.compile = batch_size, run.seed, mirror, run.compile
        self.memory_format = torch.channels_last if run.channels_last else torch.contiguous_format
        self.amp_dtype = AMP_DTYPES[run.amp] if device.type == "cuda" else None
        if run.amp != "off" and self.amp_dtype is None:
            log.warning("amp=%s applies to CUDA only: training in float32 on %s", run.amp, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self._noise_gen = None if deterministic(run.deterministic, device) else torch.Generator(device)
        self.graphed = False  # steps replayed from a CUDA graph (`train.graph`): set by a trainer before `adam`
        self.step_done = 0
        self.history: list[dict[str, float]] = []
        self._unread: list[_Unread] = []

    # ---- randomness and data ------------------------------------------------------------------

    def generators(self, step: int) -> tuple[torch.Generator, torch.Generator]:
        """(the step's generator, the augmentation generator): augmentations differ per process (their images
        differ); a single process draws both from one stream."""
        gen = step_generator(self.seed, step)
        if not self.dist.active:
            return gen, gen
        return gen, step_generator(self.seed + 104_729 * (self.dist.rank + 1), step)

    def noise_generator(self, gen: torch.Generator, step: int) -> torch.Generator:
        """The generator of step `step`'s large draws (StyleGAN2's noise maps, path length's image-space noise),
        given the step's generator `gen`. Exact runs (`deterministic` true; auto on CPU) draw them from `gen` itself
        on the host, so a seed draws the same on CPU and CUDA. Fast runs draw them on the training device from one
        generator, reseeded each step from a stream of its own (every other draw stays `gen`'s, as in exact runs):
        still a function of (seed, step) on one kind of device, and on CUDA no host time for them (at 256², batch
        16: 2.8M normals, 14 ms on one core of the AMD VM and 10 ms on two, and 13 blocking copies, 10.7 MiB, each
        a stream sync, every step). The same object every step: a reference kept from an earlier step is reseeded."""
        if self._noise_gen is None:
            return gen
        seed = int(torch.randint(2**62, (), generator=step_generator(self.seed + NOISE_STREAM, step)))
        return self._noise_gen.manual_seed(seed)

    def batch(
        self, images: torch.Tensor, index: int, gen: torch.Generator, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(this process's rows of batch `index` of `images` as floats in [-1, 1], their indices)."""
        idx = self.dist.shard(batch_indices(len(images), self.batch_size, index, seed))
        x = to_device(self._gather(images, idx), self.device).float().div_(127.5).sub_(1)
        x = x.contiguous(memory_format=self.memory_format)
        if self.mirror:
            flip = to_device(self.dist.shard(torch.rand(self.batch_size, generator=gen) < 0.5), self.device)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x, idx

    def _gather(self, images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """images[idx]; going to a GPU, into pinned memory (indexing gives pageable memory, even from a pinned set
        or a memory map, and a copy from it to the GPU waits for the GPU). PyTorch's pinned-memory cache does not
        reuse the buffer before the copy reading it has finished."""
        if self.device.type != "cuda":
            return images[idx]
        out = torch.empty((len(idx), *images.shape[1:]), dtype=images.dtype, pin_memory=True)
        return torch.index_select(images, 0, idx, out=out)

    # ---- networks -------------------------------------------------------------------------------

    def channels_last(self, *modules: nn.Module) -> None:
        if self.memory_format is torch.channels_last:
            for p in (p for m in modules for p in m.parameters()):
                if p.dim() == 4:  # conv weights (StyleGAN2's modulated weights are 5-D and stay as they are)
                    p.data = p.data.contiguous(memory_format=torch.channels_last)

    def wrap(self, module: nn.Module, broadcast_buffers: bool = True) -> tuple[nn.Module, nn.Module]:
        """(what first-order passes go through, what passes differentiated twice go through): DDP across
        processes for both, then torch.compile for the first, as configured. torch.compile's graphs have no double
        backward, so R1, path length and gradient penalties run their passes through the eager (DDP) module; it
        shares the parameters.

        G's buffers (StyleGAN2's w_avg, BN statistics) are averaged over ranks after each step instead of
        broadcast from rank 0: a running mean (w_avg, BN's running_mean) then equals the single-process one over the
        global batch; BN's running_var, the mean of the ranks' variances, leaves out the spread between their
        means (slightly below the global batch's variance).
        """
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            warn_batchnorm(module, self.dist.world)

            ids = [self.device.index] if self.device.type == "cuda" else None
            module = DistributedDataParallel(module, device_ids=ids, broadcast_buffers=broadcast_buffers)
        if not self.compile:
            return module, module
        import torch._inductor.config as inductor

        inductor.layout_optimization = False  # its NHWC re-layout broke conv backward (torch 2.11, H100)
        mode = None if self.compile is True else self.compile
        return torch.compile(module, mode=mode), module  # type: ignore[return-value]  # a callable module wrapper

    def _step(self) -> None:
        """One training step's work, ending with `record`: what each trainer implements."""
        raise NotImplementedError

    def advance(self, read_all: bool = False) -> list[dict[str, float]]:
        """One training step as the loop runs it; returns the rows `settle` read: the steps' before it, or with
        `read_all` every step's. Its own values are read during the next step, so on CUDA the host queues step n + 1
        while the GPU still runs step n (a value read back waits for its step to finish)."""
        if self.compile in CUDA_GRAPH_MODES and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs may be overwritten now
        self._step()
        return self.settle(keep=0 if read_all else 1)

    def step(self) -> dict[str, float]:
        """One training step and its row of values, read at once (on CUDA a wait for the step to finish)."""
        return self.advance(read_all=True)[-1]

    def adam(self, params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
        """Adam, fused on CUDA: one kernel for every parameter instead of several per tensor (small nets are
        launch-bound), and fp16's inf check stays on the GPU; capturable in a graphed run (the same arithmetic:
        fused Adam keeps its step counts on the device either way)."""
        cuda = self.device.type == "cuda"
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=cuda, capturable=self.graphed)

    @contextmanager
    def through(self, module: nn.Module, wrapped: nn.Module | None = None) -> Iterator[None]:
        """While another network trains through `module` (G's step through D): its parameters take no
        gradients (those already frozen, e.g. FreezeD's, stay frozen) and its DDP wrapper does not sync."""
        held = [p for p in module.parameters() if p.requires_grad]
        with ExitStack() as stack:
            ddp = getattr(wrapped, "_orig_mod", wrapped)  # under torch.compile, the DDP module inside
            no_sync = getattr(ddp, "no_sync", None)
            if no_sync is not None:
                stack.enter_context(no_sync())
            for p in held:
                p.requires_grad_(False)
            try:
                yield
            finally:
                for p in held:
                    p.requires_grad_(True)

    # ---- the update -------------------------------------------------------------------------------

    def autocast(self) -> torch.autocast:
        """Mixed precision as configured; a graphed run does not cache the weights' casts (a cache made while capturing
        would hold tensors of the graph's memory across the step; PyTorch's CUDA-graph notes ask for it off)."""
        return torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
            cache_enabled=not self.graphed,
        )

    def update(self, loss: torch.Tensor, *opts: torch.optim.Optimizer) -> None:
        """The one backward pass: zero the optimisers' gradients, backward (through the fp16 gradient scaler
        when it is on), step each optimiser."""
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for opt in opts:
            self.scaler.step(opt)
        self.scaler.update()

    # ---- bookkeeping ------------------------------------------------------------------------------

    def record(self, values: dict[str, torch.Tensor], **extra: float) -> None:
        """Count the step and keep its named values (and the numbers `extra`) for `settle` to read. On CUDA they go
        to pinned host memory by a copy queued behind the step's work: nothing here waits for the GPU."""
        stack = torch.stack([v.detach().float() for v in values.values()])
        # under DDP every rank logs (and checks) the values of the global batch, not of its own shard
        vals, copied = to_host(self.dist.mean(stack) if self.dist.active else stack)
        self.step_done += 1
        self._unread.append(_Unread(self.step_done, tuple(values), vals, extra, copied))

    def settle(self, keep: int = 0) -> list[dict[str, float]]:
        """Read the values of every unread step but the newest `keep` into the history (a wait for the GPU only
        until those steps are done); returns their rows. A non-finite value raises FloatingPointError once the rows
        are in the history (TrainingDiverged, a FloatingPointError; the loop saves the state aside first)."""
        ready = self._unread[: max(0, len(self._unread) - keep)]
        rows = [self._row(u) for u in ready]
        del self._unread[: len(ready)]
        self.history += rows
        bad = next((row for row, u in zip(rows, ready, strict=True) if not torch.isfinite(u.values).all()), None)
        if bad is not None:
            raise TrainingDiverged(f"non-finite loss at step {bad['step']}: {bad}")
        return rows

    @staticmethod
    def _row(u: _Unread) -> dict[str, float]:
        if u.copied is not None:
            u.copied.synchronize()
        return {"step": u.step, **dict(zip(u.names, u.values.tolist(), strict=True)), **u.extra}

    @property
    def fields(self) -> list[str]:
        """Columns of losses.csv: every name recorded, in first-seen order."""
        return list(dict.fromkeys(k for row in self.history for k in row))

    @property
    def kimg(self) -> float:
        return self.step_done * self.batch_size / 1000

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step_done,
            "kimg": self.kimg,
            "world": self.dist.world,
            "scaler": self.scaler.state_dict(),
            "rng_torch": torch.get_rng_state(),
            # every step's row: the loop reads all before a checkpoint; one taken between (the best-FID one, the
            # one after an error) holds the unread too, left for the loop to read, check and report
            "losses": self.history + [self._row(u) for u in self._unread],
        }

    def warn_world(self, state: dict[str, Any]) -> None:
        """Say so when a checkpoint of another number of processes is resumed (a torchrun by hand against params'
        nproc, another machine): it continues as this number would train, not as the run that made it (each process
        draws its own slice's augmentations, and BatchNorm nets normalise per process); nets without either train
        the same (tested)."""
        world = state.get("world", self.dist.world)  # not recorded by an older facegan: not compared
        if world != self.dist.world:
            log.warning(
                "the checkpoint was made by %d training process(es) and this run has %d: it continues as %d would "
                "train (augmentations are drawn per process, BatchNorm statistics are per process)",
                world,
                self.dist.world,
                self.dist.world,
            )

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_torch"])
        self.step_done = int(state["step"])
        self.history = interned(state["losses"])
        self._unread = []
