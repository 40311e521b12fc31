"""Backprop modifiers: replacement backward rules for ReLU-family gates.

A modifier decides, node by node, whether to replace the true backward rule.
The three built in differ only at rectifier gates:

    vanilla  dx = f'(x) * g                     (the true gradient)
    guided   dx = f'(x) * [x > 0] * max(g, 0)   (Springenberg et al. 2015)
    deconv   dx = max(g, 0)                     (Zeiler & Fergus 2014, no forward mask)

For Relu these are exactly the published rules (Captum, Zennit, keras-vis).
Decision for the rest of the family: the same two gates apply to every op
that acts as a rectifier -- ~0 for negative inputs, ~identity for positive
ones -- so that a model's activation choice never silently turns guided
backprop back into the vanilla gradient. `RECTIFIERS` lists them; a new
modifier (an LRP rule, say) is one small subclass registered in MODIFIERS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import onnx_ir as ir

from onnxsal.autodiff.engine import Ctx, Rule
from onnxsal.autodiff.rules import activations
from onnxsal.graph.builder import Builder, attr, const_array

Slope = Callable[[Builder], ir.Value]


@dataclass(frozen=True)
class Gate:
    """A rectifier found in the graph: its input and its local slope f'(x)."""

    pattern: str
    x: ir.Value
    slope: Slope


def _sole_use(value: ir.Value, node: ir.Node) -> bool:
    return all(use.node is node for use in value.uses()) and not value.is_graph_output()


def _mul_gate(node: ir.Node) -> Gate | None:
    """x * Sigmoid(x) (SiLU/Swish) and x * HardSigmoid(x) (HardSwish before opset 14)."""
    if len(node.inputs) != 2:
        return None
    for x, other in (node.inputs, reversed(node.inputs)):
        producer = other.producer() if other is not None else None
        if producer is None or producer.inputs[0] is not x or not _sole_use(other, node):
            continue
        if producer.op_type == "Sigmoid":
            return Gate("x*Sigmoid(x)", x, lambda b, x=x, s=other: activations.silu_slope(b, x, s))
        if producer.op_type == "HardSigmoid":
            alpha, beta = attr(producer, "alpha", 0.2), attr(producer, "beta", 0.5)
            return Gate(
                "x*HardSigmoid(x)",
                x,
                lambda b, x=x, a=alpha, c=beta: activations.hardswish_slope(b, x, a, c),
            )
    return None


def _max_zero_gate(node: ir.Node) -> Gate | None:
    """Max(x, 0): a ReLU written with Max."""
    if len(node.inputs) != 2:
        return None
    for x, other in (node.inputs, reversed(node.inputs)):
        value = const_array(other)
        if value is not None and value.size == 1 and float(value.reshape(())) == 0.0:
            return Gate("Max(x, 0)", x, lambda b, x=x: activations.positive(b, x))
    return None


# Op types treated as rectifiers, and the pattern name reported for them.
RECTIFIERS: dict[str, str] = {
    "Relu": "Relu",
    "Clip": "Clip with min 0 (ReLU6, bounded ReLU)",
    "LeakyRelu": "LeakyRelu",
    "PRelu": "PRelu",
    "Elu": "Elu",
    "Celu": "Celu",
    "Selu": "Selu",
    "ThresholdedRelu": "ThresholdedRelu",
    "HardSwish": "HardSwish",
    "Gelu": "Gelu",
    "Mish": "Mish",
    "Softplus": "Softplus",
    "Mul": "x*Sigmoid(x) (SiLU) or x*HardSigmoid(x) (HardSwish)",
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
    return Gate(op, node.inputs[0], lambda b, n=node: derivative(b, n))


class BackpropModifier:
    """Base class: replaces the backward of rectifier gates with `gate_backward`."""

    name = "vanilla"
    description = "the true gradient"

    def rule_for(self, node: ir.Node) -> tuple[Rule, str] | None:
        gate = find_gate(node)
        if gate is None:
            return None
        return partial(self._apply, gate), gate.pattern

    def _apply(self, gate: Gate, ctx: Ctx):
        dx = self.gate_backward(ctx.b, ctx.g, gate)
        return [dx if inp is gate.x else None for inp in ctx.node.inputs]

    def gate_backward(self, b: Builder, g: ir.Value, gate: Gate) -> ir.Value:
        raise NotImplementedError


class Vanilla(BackpropModifier):
    """No replacement: every node keeps its true vector-Jacobian rule."""

    def rule_for(self, node: ir.Node) -> tuple[Rule, str] | None:
        return None


class GuidedBackprop(BackpropModifier):
    name = "guided"
    description = "guided backprop: f'(x) * [x > 0] * max(g, 0) through rectifiers"

    def gate_backward(self, b: Builder, g: ir.Value, gate: Gate) -> ir.Value:
        x = gate.x
        zero = b.scalar(0.0, x)
        passed = b.Where(b.Greater(x, zero), b.Relu(g), zero)
        if gate.pattern in ("Relu", "Max(x, 0)"):
            return passed
        return b.Mul(passed, gate.slope(b))


class Deconvnet(BackpropModifier):
    name = "deconv"
    description = "deconvnet: max(g, 0) through rectifiers, no forward mask"

    def gate_backward(self, b: Builder, g: ir.Value, gate: Gate) -> ir.Value:
        return b.Relu(g)


MODIFIERS: dict[str, BackpropModifier] = {
    m.name: m for m in (Vanilla(), GuidedBackprop(), Deconvnet())
}


def get_modifier(name: str) -> BackpropModifier:
    try:
        return MODIFIERS[name]
    except KeyError:
        raise KeyError(name) from None
