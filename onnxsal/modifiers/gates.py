"""Rectifier gates: the ReLU-family activations, however an exporter wrote them.

A gate is a node (or a pattern of nodes, such as x * Sigmoid(x)) that acts as a
rectifier -- ~0 for negative inputs, ~identity for positive ones. Modifiers
that treat rectifiers specially (guided backprop, deconvnet, LRP's pass-through)
find them here, so that a model's activation choice never silently escapes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx_ir as ir

from onnxsal.autodiff.rules import activations
from onnxsal.graph.builder import Builder, attr, const_array

Slope = Callable[[Builder], ir.Value]


@dataclass(frozen=True)
class Gate:
    """A rectifier found in the graph: its input and its local slope f'(x)."""

    pattern: str
    x: ir.Value
    slope: Slope
    # What [x > 0] is read from: the gate's output where that is equivalent
    # (Relu, Clip from 0), which keeps Conv+activation fusable in the forward.
    probe: ir.Value | None = None


def _sole_use(value: ir.Value, node: ir.Node) -> bool:
    return all(use.node is node for use in value.uses()) and not value.is_graph_output()


def _inner(value: ir.Value | None, op_type: str, user: ir.Node) -> ir.Node | None:
    """value's producer if it is an `op_type` node feeding only `user`."""
    producer = value.producer() if value is not None else None
    if producer is None or producer.op_type != op_type or not _sole_use(value, user):
        return None
    return producer


def _scalar(value: ir.Value | None) -> float | None:
    array = const_array(value)
    return float(array.reshape(())) if array is not None and array.size == 1 else None


def _pairs(node: ir.Node):
    a, b = node.inputs
    return ((a, b), (b, a))


def _mul_gate(node: ir.Node) -> Gate | None:
    """Gating activations exporters write as x * s(x): SiLU, HardSwish, Mish, GELU."""
    if len(node.inputs) != 2:
        return None
    for x, other in _pairs(node):
        if (p := _inner(other, "Sigmoid", node)) is not None and p.inputs[0] is x:
            return Gate(
                "x*Sigmoid(x) (SiLU)", x, lambda b, x=x, s=other: activations.silu_slope(b, x, s)
            )
        if (p := _inner(other, "HardSigmoid", node)) is not None and p.inputs[0] is x:
            a, c = attr(p, "alpha", 0.2), attr(p, "beta", 0.5)
            return Gate(
                "x*HardSigmoid(x) (HardSwish)",
                x,
                lambda b, x=x, a=a, c=c: activations.hardswish_slope(b, x, a, c),
            )
        if (p := _inner(other, "Tanh", node)) is not None:
            sp = _inner(p.inputs[0], "Softplus", p)
            if sp is not None and sp.inputs[0] is x:
                return Gate(
                    "x*Tanh(Softplus(x)) (Mish)", x, lambda b, x=x: activations.mish_slope(b, x)
                )
    return _gelu_erf_gate(node)


def _gelu_erf_gate(node: ir.Node) -> Gate | None:
    """(x * (1 + erf(x / sqrt 2))) * 0.5: GELU as TorchScript and opset-18 exports write it."""
    for half, inner in _pairs(node):
        if _scalar(half) != 0.5 or (m := _inner(inner, "Mul", node)) is None:
            continue
        for x, one_plus in _pairs(m):
            add = _inner(one_plus, "Add", m)
            if add is None:
                continue
            for erf_out, one in _pairs(add):
                erf = _inner(erf_out, "Erf", add)
                if _scalar(one) != 1.0 or erf is None:
                    continue
                scaled = erf.inputs[0].producer()
                if scaled is None or scaled.inputs[0] is not x or not _sole_use(erf.inputs[0], erf):
                    continue
                k = _scalar(scaled.inputs[1])
                if (scaled.op_type == "Div" and k is not None and abs(k - 2**0.5) < 1e-5) or (
                    scaled.op_type == "Mul" and k is not None and abs(k - 2**-0.5) < 1e-5
                ):
                    return Gate(
                        "x*(1+erf(x/sqrt2))/2 (GELU)",
                        x,
                        lambda b, x=x: activations.gelu_slope(b, x, "none"),
                    )
    return None


def _max_zero_gate(node: ir.Node) -> Gate | None:
    """Max(x, 0): a ReLU written with Max."""
    if len(node.inputs) != 2:
        return None
    for x, other in _pairs(node):
        if _scalar(other) == 0.0:
            return Gate("Max(x, 0)", x, lambda b, x=x: activations.positive(b, x))
    return None


# Op types that can act as rectifiers, and what is recognised for each.
RECTIFIERS: dict[str, str] = {
    "Relu": "Relu",
    "Clip": "Clip with min 0 (ReLU6, bounded ReLU)",
    "LeakyRelu": "LeakyRelu",
    "PRelu": "PRelu",
    "ThresholdedRelu": "ThresholdedRelu",
    "Elu": "Elu",
    "Celu": "Celu",
    "Selu": "Selu",
    "HardSwish": "HardSwish",
    "Gelu": "Gelu (both approximations)",
    "Mish": "Mish",
    "Softplus": "Softplus",
    "Mul": "x*Sigmoid(x) (SiLU), x*HardSigmoid(x) (HardSwish), x*Tanh(Softplus(x)) (Mish), "
    "x*(1+erf(x/sqrt2))/2 (GELU)",
    "Max": "Max(x, 0)",
}


def find_gate(node: ir.Node) -> Gate | None:
    """The rectifier this node implements, if any."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx") or op not in RECTIFIERS:
        return None
    if op == "Mul":
        return _mul_gate(node)
    if op == "Max":
        return _max_zero_gate(node)
    if op == "Clip" and not activations.clip_is_rectifier(node):
        return None
    derivative = activations.DERIVATIVES[op]
    probe = node.outputs[0] if op in ("Relu", "Clip") else None
    return Gate(op, node.inputs[0], lambda b, n=node: derivative(b, n), probe)
