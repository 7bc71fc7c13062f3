"""What a training step would make the host wait for on CUDA, checked on the CPU, where CI runs.

`tests/test_cuda.py` runs steps under PyTorch's sync debug mode, but only where a GPU is present. Here every
trainer's step runs on the CPU under `HostWaits`, which follows which tensors would live on the training device
(the networks' parameters and buffers, optimiser and pool state, the batches, whatever `facegan.device.to_device`
moves or a factory makes with `device=`, and everything computed from them, through every operator, autograd's
included) and records, with the facegan line that made it:

- a read of such a tensor's values on the host (`.item()`, `float()`, `bool()`, `.tolist()`, `.cpu()`,
  `.numpy()`, printing, `torch.tensor` of a list of them) or an operator whose output size or result depends on
  them (`nonzero`, a boolean mask but for a masked fill, `masked_select`, `unique`, `repeat_interleave` without
  its size, `equal`, `allclose`, `bincount`, `histc`): on CUDA each waits for the GPU;
- a blocking copy between the host and the device: `.to(device)` of a host tensor outside `to_device` and without
  `non_blocking`, `torch.tensor` / `as_tensor` / `new_tensor` of host data on the device, `copy_` either way
  (indexed writes included), a host tensor indexing a device tensor, or a host value written through an index.
  From pageable memory PyTorch follows each with a stream synchronisation.

What this cannot see: whether a queued copy's source is really pinned (the CUDA test does); a copy to the host
written as `.to("cpu")`, which on a CPU run cannot be told from `.to(device)`; reads inside CPU kernels of
operators not listed above; and what runs only on CUDA (fused Adam, fp16's gradient scaler, compiled graphs).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakTensorKeyDictionary

import facegan.device
from conftest import tiny_gan, tiny_images
from facegan.config import CycleGANConfig, TrainConfig
from facegan.train.cyclegan import CycleTrainer
from facegan.train.stepper import Stepper
from facegan.train.vae import VAETrainer

aten = torch.ops.aten
FACEGAN = str(Path(facegan.__file__).parent)
# operators that read a tensor's values on the host, or size their output by them
READS = {aten._local_scalar_dense.default, aten.equal.default}
READ_PACKETS = {aten.nonzero, aten.masked_select, aten.unique_consecutive, aten._unique2, aten.unique_dim}
READ_PACKETS |= {aten.allclose, aten.bincount, aten.histc}
INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}
# host reads the CPU serves without an operator (or with the modes off, as printing does)
HOST_METHODS = {torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu, torch.Tensor.__array__}
HOST_METHODS |= {torch.Tensor.__repr__, torch.Tensor.__format__}


def _where() -> str:
    """The innermost facegan line on the stack (or the test's own, for a check's self-test)."""
    frames = [f for f in traceback.extract_stack() if f.filename.startswith(FACEGAN) or "_injected" in f.name]
    if not frames:
        return "(no facegan line on the stack)"
    f = frames[-1]
    return f"{os.path.relpath(f.filename, Path(FACEGAN).parents[1])}:{f.lineno} ({f.name})"


class HostWaits:
    """A context in which the syncs a CUDA step would make are recorded in `found` ("what at where")."""

    def __init__(self, device: torch.device, *on_device: torch.Tensor):
        self.device = device
        self.on_device: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
        self.found: list[str] = []
        self.moving = 0  # inside to_device: its copy is queued through pinned memory on CUDA
        self.quiet = 0  # inside a call whose read is reported, or whose reads are the CPU's own checks
        for t in on_device:
            self.mark(t)

    def mark(self, out: Any) -> None:
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.on_device[t] = True

    def there(self, *args: Any) -> bool:
        return any(isinstance(t, torch.Tensor) and t in self.on_device for t in tree_leaves(args))

    def host(self, *args: Any) -> bool:
        return any(isinstance(t, torch.Tensor) and t not in self.on_device for t in tree_leaves(args))

    def to_device(self, t: torch.Tensor, device: torch.device) -> torch.Tensor:
        """facegan.device.to_device, its result marked (a copy: on CUDA the host tensor stays on the host)."""
        self.moving += 1
        try:
            out = _to_device(t, device).clone()
        finally:
            self.moving -= 1
        self.mark(out)
        return out

    def copy(self, what: str, direction: str = "host-to-device") -> None:
        if not self.moving:
            self.found.append(f"a blocking {direction} copy ({what}) at {_where()}")

    @contextmanager
    def watching(self) -> Iterator[HostWaits]:
        with ExitStack() as stack:
            for name, module in list(sys.modules.items()):
                if name.startswith("facegan") and getattr(module, "to_device", None) is _to_device:
                    stack.enter_context(pytest.MonkeyPatch.context()).setattr(module, "to_device", self.to_device)
            stack.enter_context(_Functions(self))
            stack.enter_context(_Operators(self))
            yield self


_to_device = facegan.device.to_device


def _parse_to(args: tuple, kwargs: dict) -> tuple[torch.device | None, bool]:
    """(target device, non_blocking) of a `Tensor.to(...)` call (as PyTorch parses it; `copy` left out)."""
    kwargs = {k: v for k, v in kwargs.items() if k != "copy"}
    try:
        device, _, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
    except (RuntimeError, TypeError):  # `copy` given by position
        device, _, non_blocking, _ = torch._C._nn._parse_to(*args[:-1], **kwargs)
    return device, non_blocking


class _Functions(TorchFunctionMode):
    """Python-level calls: host reads the CPU serves without an operator, copies to the device, tensors made on it."""

    def __init__(self, w: HostWaits):
        super().__init__()
        self.w = w

    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        w = self.w
        read = func in HOST_METHODS and w.there(args[0])
        made = kwargs.get("device") is not None and torch.device(kwargs["device"]) == w.device  # a factory's
        if func is torch.Tensor.to:
            device, non_blocking = _parse_to(args[1:], kwargs)
            made = device == w.device and not w.there(args[0])
            if made and not non_blocking:
                w.copy(".to")
        elif func in (torch.tensor, torch.as_tensor, torch.Tensor.new_tensor):
            data = args[1] if func is torch.Tensor.new_tensor else args[0]
            made = made or func is torch.Tensor.new_tensor and w.there(args[0])
            read = w.there(data) and func is not torch.as_tensor  # a list of device tensors, read one by one
            if made and not read and not (func is torch.as_tensor and w.there(data)):
                w.copy(func.__name__)
        if read:
            w.found.append(f"{func.__name__}() of a device tensor at {_where()}")
        # on CUDA `one_hot` with its number of classes checks the range by a device assert and reads nothing back
        classes = args[1] if len(args) > 1 else kwargs.get("num_classes", -1)
        quiet = read or func is torch.nn.functional.one_hot and classes != -1  # its operators' reads said or none
        w.quiet += quiet
        try:
            out = func(*args, **kwargs)
        finally:
            w.quiet -= quiet
        if made:
            w.mark(out)
        return out


class _Operators(TorchDispatchMode):
    """Every operator, autograd's included: marks what device tensors compute; records their host reads and copies
    between them and host tensors (copy_, indexing with host indices or values)."""

    def __init__(self, w: HostWaits):
        super().__init__()
        self.w = w

    def __torch_dispatch__(self, func: Any, types: tuple, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        w = self.w
        there = w.there(args, kwargs)
        if there:
            if not w.quiet and _reads(func, args, kwargs):
                w.found.append(f"{func} on a device tensor at {_where()}")
            _copies(w, func, args, kwargs)
        out = func(*args, **kwargs)
        if there:
            w.mark(out)
        return out


def _reads(func: Any, args: tuple, kwargs: dict) -> bool:
    """Whether the operator reads its input's values on the host (on CUDA: waits for the GPU)."""
    packet = func.overloadpacket
    if func in READS or packet in READ_PACKETS:
        return True
    if func in (aten.repeat_interleave.Tensor, aten.repeat_interleave.self_Tensor):  # sized by its repeats
        return kwargs.get("output_size") is None
    if packet in INDEXING:  # a boolean mask is a nonzero, but for a scalar written through one (a masked_fill)
        masks = [i for i in args[1] if i is not None and i.dtype in (torch.bool, torch.uint8)]
        return bool(masks) and not _masked_fill(func, args)
    return False


def _masked_fill(func: Any, args: tuple) -> bool:
    """Whether an indexing operator writes one scalar through one boolean mask: a masked fill (no host read)."""
    if func.overloadpacket is aten.index:
        return False
    indices = [i for i in args[1] if i is not None]
    return len(indices) == 1 and indices[0].dtype in (torch.bool, torch.uint8) and args[2].dim() == 0


def _copies(w: HostWaits, func: Any, args: tuple, kwargs: dict) -> None:
    """Blocking copies between the host and the device that an operator with a device tensor makes."""
    if func is aten.copy_.default and not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False)):
        if w.there(args[0]) and w.host(args[1]):
            w.copy("copy_")
        elif w.host(args[0]) and w.there(args[1]):
            w.copy("copy_", "device-to-host")
    elif func.overloadpacket in INDEXING and w.there(args[0]):
        indices = [i for i in args[1] if i is not None]
        if w.host(indices):
            w.copy("a host index")
        if func.overloadpacket is not aten.index and w.host(args[2]) and not _masked_fill(func, args):
            w.copy("a host value")  # a written value


def device_state(obj: Any, depth: int = 3) -> list[torch.Tensor]:
    """The tensors a trainer keeps on its device: its networks' parameters and buffers, its optimisers' state and
    the tensors its parts (objective, ADA, path length, EMA, image pool) hold; not its data sets (`images`,
    `images_a`, `images_b`, `labels`: gathered on the host, then moved) nor the rows it has read back."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, torch.nn.Module):
        return [*obj.parameters(), *obj.buffers()]
    if isinstance(obj, torch.optim.Optimizer):
        # not the step counters: a fused optimiser (Adam on CUDA) reads its own on the GPU, others keep them on the
        # host (CPU Adam, RMSprop: read there, no wait)
        return [v for state in obj.state.values() for k, v in state.items() if k != "step"]
    if isinstance(obj, (list, tuple)):
        return [t for x in obj for t in device_state(x, depth)]
    if isinstance(obj, dict):
        return [t for x in obj.values() for t in device_state(x, depth)]
    if depth and type(obj).__module__.startswith("facegan") and hasattr(obj, "__dict__"):
        host = {"images", "images_a", "images_b", "labels", "_unread", "history"} if isinstance(obj, Stepper) else ()
        return [t for k, x in vars(obj).items() if k not in host for t in device_state(x, depth - 1)]
    return []


# ---- the trainers' steps ----------------------------------------------------------------------------------------

CPU = torch.device("cpu")
GAN = {
    "dcgan-diffaugment": {"model": "dcgan", "diffaugment": ["color", "translation", "cutout"]},
    "wgan-gp": {"model": "wgan-gp", "loss": "wgan-gp", "n_critic": 2},
    "acgan": {"model": "acgan"},
    "stylegan2-r1-path-length": {
        "model": "stylegan2", "z_dim": 32, "beta1": 0.0, "beta2": 0.99, "stylegan2": {"preset": "tiny"},
        "r1": {"every": 2}, "path_length": {"weight": 2.0, "every": 2},
    },
}  # fmt: skip
# as CUDA's default (`deterministic: auto`) runs it: noise maps drawn by a generator on the training device
GAN["stylegan2-fast"] = {**GAN["stylegan2-r1-path-length"], "deterministic": False, "channels_last": True}


def _watched_steps(t: Any, monkeypatch: pytest.MonkeyPatch, steps: int) -> tuple[list[list[str]], list[dict]]:
    """After 2 warm-up steps (optimiser state, lazy set-up), `steps` steps as the loop runs them, each watched
    from its start to its queued end: (what each would wait for on CUDA, the rows read)."""
    t.step()
    t.step()
    w = HostWaits(t.device, *device_state(t))
    found: list[list[str]] = []
    step = t._step

    def watched() -> None:
        n = len(w.found)
        with w.watching():
            step()
        found.append(w.found[n:])

    monkeypatch.setattr(t, "_step", watched)
    rows = [row for _ in range(steps) for row in t.advance()] + t.settle()
    return found, rows


@pytest.mark.parametrize("over", list(GAN.values()), ids=list(GAN))
def test_a_gan_step_would_not_wait_for_the_gpu(over, monkeypatch):
    t = tiny_gan(over)
    found, rows = _watched_steps(t, monkeypatch, 4)
    assert found == [[]] * 4
    assert [r["step"] for r in rows] == [3, 4, 5, 6]


def test_vae_and_cyclegan_steps_would_not_wait_for_the_gpu(monkeypatch):
    vae = VAETrainer(
        TrainConfig(model="vae", z_dim=8, g_channels=4, d_channels=4, batch_size=4), tiny_images(), None, [], CPU
    )
    cycle = CycleTrainer(
        CycleGANConfig(enabled=True, g_channels=4, res_blocks=1, d_channels=4, batch_size=2, pool_size=3),
        tiny_images(8),
        tiny_images(8, seed=1),
        CPU,
    )
    for t in (vae, cycle):
        found, rows = _watched_steps(t, monkeypatch, 3)
        assert found == [[]] * 3, type(t).__name__
        assert [r["step"] for r in rows] == [3, 4, 5]


def test_cyclegans_ssim_term_copies_its_window_and_nothing_else(monkeypatch):
    """Left on purpose (the term is optional and off by default): kornia makes SSIM's Gaussian window on the device
    from host values at each call, a small blocking copy."""
    cfg = CycleGANConfig(enabled=True, g_channels=4, res_blocks=1, d_channels=4, batch_size=2, ssim_weight=1.0)
    found, _ = _watched_steps(CycleTrainer(cfg, tiny_images(8), tiny_images(8, seed=1), CPU), monkeypatch, 2)
    assert all(f for f in found), found
    assert all(
        x.startswith("a blocking host-to-device copy (tensor) at ") and x.endswith("(ssim)") for f in found for x in f
    )


def test_ada_reads_d_back_once_every_interval_and_nowhere_else(monkeypatch):
    """ADA's one read by design: the sum of D's signs, at the steps where it moves p (every `interval`)."""
    t = tiny_gan({**GAN["stylegan2-r1-path-length"], "ada": {"enabled": True, "fixed_p": 0.5, "interval": 4}})
    found, _ = _watched_steps(t, monkeypatch, 8)
    reads = [i + 3 for i, f in enumerate(found) if f]  # steps 3..10 (1-based); ADA reads after steps 4 and 8
    assert reads == [4, 8]
    assert all(len(found[s - 3]) == 1 and "facegan/augment/ada.py" in found[s - 3][0] for s in reads), found


def _injected_read(loss: torch.Tensor) -> None:
    if float(loss.detach()) > 1e9:  # a value read mid-step: on CUDA the host waits for the GPU here
        raise AssertionError


def test_the_watch_finds_a_read_and_a_blocking_copy(monkeypatch):
    """The check can fail: a loss read on the host, a `.to(device)` of a host tensor and a boolean mask, each named
    with its line;
    the same values drawn on the host and moved by `to_device`, or read after the step, are not findings."""
    t = tiny_gan(GAN["dcgan-diffaugment"])
    g_terms = t.objective.g_terms

    def _injected_terms(*args: Any, **kwargs: Any) -> Any:
        terms = g_terms(*args, **kwargs)
        _injected_read(terms.total())
        torch.ones(2).to(t.device)  # pageable on CUDA: a blocking copy
        loss = terms.total().reshape(1)
        loss[loss > 0].sum()  # a boolean mask: its output size is read on the host
        facegan.device.to_device(torch.ones(2), t.device).sum()  # queued: fine
        float(torch.rand(()))  # a host tensor: fine
        return terms

    monkeypatch.setattr(t.objective, "g_terms", _injected_terms)
    found, rows = _watched_steps(t, monkeypatch, 2)
    assert len(found) == 2 and all(len(f) == 3 for f in found), found
    read, copy, mask = found[0]
    assert read.startswith("aten._local_scalar_dense.default on a device tensor at ") and "_injected_read" in read
    assert copy.startswith("a blocking host-to-device copy (.to) at ") and "_injected_terms" in copy
    assert mask.startswith("aten.index.Tensor on a device tensor at ") and "_injected_terms" in mask
    assert all(torch.isfinite(torch.tensor([v for k, v in r.items() if k != "step"])).all() for r in rows)


WAITS = {  # what each would do on CUDA, given a device tensor d (4 floats) and a host tensor h (4 floats)
    "item": (lambda d, h: d.sum().item(), "aten._local_scalar_dense.default on a device tensor"),
    "bool": (lambda d, h: bool(d[0] > 0), "aten._local_scalar_dense.default on a device tensor"),
    "tolist": (lambda d, h: (d * 2).tolist(), "tolist() of a device tensor"),
    "print": (lambda d, h: f"{d.mean()}", "__format__() of a device tensor"),
    "nonzero": (lambda d, h: (d > 0).nonzero(), "aten.nonzero.default on a device tensor"),
    "mask": (lambda d, h: d[d > 0], "aten.index.Tensor on a device tensor"),
    "repeat": (lambda d, h: d.repeat_interleave(d.long().abs() + 1), "aten.repeat_interleave.Tensor on a device"),
    "factory": (lambda d, h: float(torch.zeros(2, device=d.device).sum()), "aten._local_scalar_dense.default on"),
    "to": (lambda d, h: h.to(d.device), "a blocking host-to-device copy (.to)"),
    "tensor": (lambda d, h: torch.tensor([1.0], device=d.device), "a blocking host-to-device copy (tensor)"),
    "tensor-of": (lambda d, h: torch.tensor([d[0], d[1]]), "tensor() of a device tensor"),
    "copy-in": (lambda d, h: d.clone().copy_(h), "a blocking host-to-device copy (copy_)"),
    "copy-out": (lambda d, h: h.clone().__setitem__(0, d[1]), "a blocking device-to-host copy (copy_)"),
    "host-index": (lambda d, h: d[torch.tensor([0, 2])], "a blocking host-to-device copy (a host index)"),
    "host-value": (  # a number written through an index: as a host tensor (torch 2.11's cutout did this)
        lambda d, h: d.clone().__setitem__(d.long().abs(), 0.0), "a blocking host-to-device copy (a host value)"
    ),
}  # fmt: skip
QUEUED = {  # and what would not wait
    "to_device": lambda d, h: facegan.device.to_device(h, d.device) + d,
    "to non_blocking": lambda d, h: h.to(d.device, non_blocking=True) + d,
    "masked_fill": lambda d, h: d.clone().__setitem__(d > 0, 0.0),
    "host reads": lambda d, h: (float(h.sum()), h.tolist(), h[h > 0], f"{h}"),
    "one_hot": lambda d, h: torch.nn.functional.one_hot(d.long().abs(), 8),
    "sized repeat": lambda d, h: d.repeat_interleave(d.long().abs() + 1, output_size=7),
}


@pytest.mark.parametrize(("run", "said"), WAITS.values(), ids=list(WAITS))
def test_the_watch_finds_each_kind_of_wait(run, said):
    d, h = torch.tensor([0.5, -1.0, 2.0, 0.0]), torch.ones(4)
    w = HostWaits(CPU, d)
    with w.watching():
        run(d, h)
    assert len(w.found) == 1 and w.found[0].startswith(said), w.found


@pytest.mark.parametrize("run", QUEUED.values(), ids=list(QUEUED))
def test_the_watch_passes_what_would_not_wait(run):
    d, h = torch.tensor([0.5, -1.0, 2.0, 0.0]), torch.ones(4)
    w = HostWaits(CPU, d)
    with w.watching():
        run(d, h)
    assert w.found == []
