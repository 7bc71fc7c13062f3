"""facegan.ops under torch.compile: the custom autograd nodes give eager's gradients when dynamo traces them.
torch 2.11 routes the gradient of an autograd.Function whose output was written in place to the wrong slot, so
everything behind the node silently got zero gradients (pytorch/pytorch#180642): the nodes write out of place
while compiling (`ops.inplace`). On torch 2.13 the gradients agree either way, so the guard is checked in what
dynamo traces: no in-place call in any node's forward or backward graph."""

from __future__ import annotations

import pytest
import torch

from facegan import ops
from facegan.ops.bias_act import bias_lrelu, lrelu_backward
from facegan.ops.conv import conv2d
from facegan.ops.modconv import demod_noise_bias_lrelu


def _t(*shape, seed=0, grad=True):
    t = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return t.requires_grad_(grad)


def test_the_nodes_write_out_of_place_only_while_compiling():
    assert ops.inplace()
    assert torch.compile(lambda x: x + 1 if ops.inplace() else x - 1, backend="eager")(torch.zeros(1)).item() == -1


NODES = {
    "bias + lrelu x gain": (lambda x, b: bias_lrelu(x, b), lambda: (_t(4, 8, 5, 5), _t(8, seed=1))),
    "bias + lrelu + clamp": (lambda x, b: bias_lrelu(x, b, clamp=0.5), lambda: (_t(4, 8, 5, 5), _t(8, seed=1))),
    "lrelu x gain, no bias": (lambda x: bias_lrelu(x * 1, None), lambda: (_t(4, 8, 5, 5),)),
    "activation gradient node": (
        lambda g, y: lrelu_backward(g, y, clamp=1.0), lambda: (_t(4, 8), _t(4, 8, seed=1, grad=False)),
    ),
    "demodulate + noise + bias + lrelu": (
        lambda out, d, noise, nw, b: demod_noise_bias_lrelu(out, d, noise, nw, b, clamp=2.0),
        lambda: (_t(2, 4, 5, 5), _t(2, 4, seed=1), _t(2, 1, 5, 5, seed=2), _t(1, seed=3), _t(4, seed=4)),
    ),
    "conv + bias + lrelu": (
        lambda x, w, b: bias_lrelu(conv2d(x, w, None, 1, 1), b),
        lambda: (_t(2, 3, 6, 6), _t(4, 3, 3, 3, seed=1), _t(4, seed=2)),
    ),
    "conv, then an in-place lrelu (as DCGAN's D)": (
        lambda x, w, b: torch.nn.functional.leaky_relu(conv2d(x, w, b, 2, 1), 0.2, inplace=True),
        lambda: (_t(2, 3, 8, 8), _t(4, 3, 4, 4, seed=1), _t(4, seed=2)),
    ),
}  # fmt: skip
COMPOSED = ("conv + bias + lrelu", "conv, then an in-place lrelu (as DCGAN's D)")  # not one node of ours


def _inplace_calls(gm: torch.fx.GraphModule) -> list[str]:
    """In-place calls (`mul_`, `clamp_`, ..., `inplace=True`) in a traced graph and its subgraphs (the
    autograd.Function's forward and backward bodies)."""
    found = []
    for mod in gm.modules():
        for node in mod.graph.nodes if isinstance(mod, torch.fx.GraphModule) else ():
            name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
            trailing = name.endswith("_") and not name.startswith("_")
            if node.op in ("call_method", "call_function") and (trailing or node.kwargs.get("inplace")):
                found.append(name)
    return found


def _traced_inplace_calls(name: str) -> list[str]:
    fn, make = NODES[name]
    found: list[str] = []

    def backend(gm, example_inputs):
        found.extend(_inplace_calls(gm))
        return gm.forward

    torch._dynamo.reset()
    torch.compile(fn, backend=backend, fullgraph=True)(*make())
    return found


@pytest.mark.parametrize("name", [n for n in NODES if n not in COMPOSED])
def test_no_node_writes_in_place_while_compiled(name, monkeypatch):
    assert _traced_inplace_calls(name) == []
    monkeypatch.setattr(ops, "inplace", lambda: True)  # without the guard the same trace shows them
    assert _traced_inplace_calls(name)


@pytest.mark.parametrize("name", list(NODES))
def test_compiled_nodes_give_the_eager_outputs_and_gradients(name):
    fn, make = NODES[name]
    results = []
    for compiled in (False, True):
        torch._dynamo.reset()
        inputs = make()
        run = torch.compile(fn, backend="aot_eager", fullgraph=True) if compiled else fn
        out = run(*inputs)
        (out * _t(*out.shape, seed=9, grad=False)).sum().backward()
        results.append((out.detach(), [i.grad for i in inputs if i.requires_grad]))
    (out_e, grads_e), (out_c, grads_c) = results
    torch.testing.assert_close(out_c, out_e)
    for i, (ge, gc) in enumerate(zip(grads_e, grads_c, strict=True)):
        assert ge.abs().sum() > 0, i
        torch.testing.assert_close(gc, ge, msg=f"{name}: gradient of input {i}")
