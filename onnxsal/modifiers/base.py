"""What every backprop modifier is: a map from op type (or GATES) to node rules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import onnx_ir as ir

from onnxsal.autodiff.engine import Ctx, Rule
from onnxsal.graph.builder import Builder
from onnxsal.modifiers.gates import RECTIFIERS, Gate, find_gate

GATES = "rectifier gates"  # a map key: every pattern `gates.find_gate` recognises


class NodeRule(Protocol):
    """A backward rule offered for a node: (the rule, what it matched) or None (the node
    keeps its true backward)."""

    def claim(self, node: ir.Node) -> tuple[Rule, str] | None: ...


@dataclass(frozen=True)
class BackpropModifier:
    """A map from op types (or GATES) to node rules; unclaimed nodes keep the true VJP.

    `relevance`: the backward carries relevance, not a gradient (LRP): it starts from the
    score itself, so the map sums to about the score.
    """

    name: str
    description: str
    rules: tuple[tuple[str, NodeRule], ...] = ()
    relevance: bool = False

    def rule_for(self, node: ir.Node) -> tuple[Rule, str] | None:
        for key, rule in self.rules:
            if key == node.op_type or (key == GATES and node.op_type in RECTIFIERS):
                claimed = rule.claim(node)
                if claimed is not None:
                    return claimed
        return None

    def for_path(self, path: Sequence[ir.Node]) -> BackpropModifier:
        """The modifier for one graph's input-to-score path (composites pick their first
        layer there); a plain map is the same everywhere."""
        return self


GateBackward = Callable[[Builder, ir.Value, Gate], ir.Value]


@dataclass(frozen=True)
class AtGates:
    """A rule for rectifier gates: `backward(builder, incoming gradient, gate)`, sent
    straight to the gate's input (patterns span several nodes)."""

    backward: GateBackward

    def claim(self, node: ir.Node) -> tuple[Rule, str] | None:
        gate = find_gate(node)
        if gate is None:
            return None
        return partial(self._apply, gate), gate.pattern

    def _apply(self, gate: Gate, ctx: Ctx) -> dict[ir.Value, ir.Value]:
        return {gate.x: self.backward(ctx.b, ctx.g, gate)}
