"""Backprop modifiers: maps from op type (or a recognised pattern) to a backward rule.

A modifier replaces the backward of the nodes its map claims; every other node
keeps its true vector-Jacobian rule. Which nodes are rectifiers is decided in
`gates` (the ReLU family in every form exporters write); what backward a node
gets is a rule object here or in `lrp`. The three gradient modifiers differ
only at rectifier gates:

    vanilla  dx = f'(x) * g                     (the true gradient: an empty map)
    guided   dx = f'(x) * [x > 0] * max(g, 0)   (Springenberg et al. 2015)
    deconv   dx = max(g, 0)                     (Zeiler & Fergus 2014, no forward mask)

For Relu these are exactly the published rules (Captum, Zennit, keras-vis);
the same two gates apply to every op that acts as a rectifier, so that a
model's activation choice never silently turns guided backprop back into the
vanilla gradient. LRP composites (`lrp`) are maps too: a new modifier is one
map, a new rule one small class.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir

from onnxsal.autodiff.rules import activations
from onnxsal.graph.builder import Builder
from onnxsal.modifiers.base import GATES, AtGates, BackpropModifier, NodeRule
from onnxsal.modifiers.gates import RECTIFIERS, Gate
from onnxsal.modifiers.lrp import composite_modifier


def guided_gate(b: Builder, g: ir.Value, gate: Gate) -> ir.Value:
    if gate.pattern == "Clip":  # lower bound 0: the slope is already 0 where x <= 0
        return b.Mul(b.Relu(g), gate.slope(b))
    passed = b.Mul(b.Relu(g), activations.positive(b, gate.probe or gate.x))
    if gate.pattern in ("Relu", "Max(x, 0)", "LeakyRelu", "PRelu"):
        return passed  # their slope is 1 wherever x > 0
    return b.Mul(passed, gate.slope(b))


def deconv_gate(b: Builder, g: ir.Value, gate: Gate) -> ir.Value:
    return b.Relu(g)


MODIFIERS: dict[str, BackpropModifier] = {
    m.name: m
    for m in (
        BackpropModifier("vanilla", "the true gradient"),
        BackpropModifier(
            "guided",
            "guided backprop: f'(x) * [x > 0] * max(g, 0) through rectifiers",
            ((GATES, AtGates(guided_gate)),),
        ),
        BackpropModifier(
            "deconv",
            "deconvnet: max(g, 0) through rectifiers, no forward mask",
            ((GATES, AtGates(deconv_gate)),),
        ),
    )
}


def get_modifier(key: Any) -> BackpropModifier:
    """A modifier by name (MODIFIERS), or an LRP composite ("lrp:NAME", or the object)."""
    if isinstance(key, BackpropModifier):
        return key
    if isinstance(key, str) and key in MODIFIERS:
        return MODIFIERS[key]
    return composite_modifier(key)


__all__ = [
    "GATES",
    "MODIFIERS",
    "RECTIFIERS",
    "AtGates",
    "BackpropModifier",
    "NodeRule",
    "get_modifier",
]
