"""Reverse-mode differentiation of an ONNX graph, emitting standard ONNX nodes.

Only nodes on a path from the explained input to the score get a rule: a
value is differentiable when it is floating point and depends on the input,
so shape arithmetic (int64), masks (bool) and constant branches drop out by
themselves. Weight gradients are never built.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import onnx_ir as ir

from onnxsal.errors import UnsupportedModelError
from onnxsal.graph.builder import Builder, attr, is_float
from onnxsal.graph.dependence import computed_from, reads


@dataclass
class Ctx:
    """What a gradient rule sees: the forward node, incoming gradients, a builder."""

    b: Builder
    node: ir.Node
    dy: list[ir.Value | None]
    wants: list[bool]

    @property
    def x(self) -> Sequence[ir.Value | None]:
        return self.node.inputs

    @property
    def y(self) -> Sequence[ir.Value]:
        return self.node.outputs

    @property
    def g(self) -> ir.Value:
        """The incoming gradient of a single-output node."""
        g = self.dy[0]
        assert g is not None, "rules of single-output ops are only called with a gradient"
        return g

    def attr(self, name: str, default: Any = None) -> Any:
        return attr(self.node, name, default)

    def input(self, i: int) -> ir.Value | None:
        return self.node.inputs[i] if i < len(self.node.inputs) else None


# A rule returns one gradient per input (None: nothing flows there), or a
# mapping {value: gradient} when it differentiates a pattern of several nodes
# (a backprop modifier's gate) and the value is not among the node's inputs.
Rule = Callable[[Ctx], "Sequence[ir.Value | None] | Mapping[ir.Value, ir.Value]"]


def wrt(*indices: int) -> Callable[[Rule], Rule]:
    """Declare which inputs a rule differentiates (default: all of them).

    The engine refuses, before emitting anything, a graph that needs the
    gradient of any other input (a Conv whose weights depend on the image).
    """

    def mark(rule: Rule) -> Rule:
        rule.wrt = frozenset(indices)  # type: ignore[attr-defined]
        return rule

    return mark


def integer_valued(rule: Rule) -> Rule:
    """Declare that a rule's integer outputs stand for real numbers (quantised values).

    The engine otherwise treats integer tensors as indices and shapes, through
    which no gradient flows; a QuantizeLinear's int8 output carries one, in
    units of its scale (the straight-through convention).
    """
    rule.integer_valued = True  # type: ignore[attr-defined]
    return rule


def rule_key(node: ir.Node) -> str:
    """The rule table's key of a node: the op type, prefixed by any non-standard domain."""
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def _differentiates(rule: Rule, index: int) -> bool:
    declared = getattr(rule, "wrt", None)
    return declared is None or index in declared


class Modifier(Protocol):
    """Replaces the backward rule of some nodes (see onnxsal.modifiers)."""

    name: str

    def rule_for(self, node: ir.Node) -> tuple[Rule, str] | None: ...

    def for_path(self, path: Sequence[ir.Node]) -> Modifier: ...


@dataclass(frozen=True)
class Rewrite:
    """One node whose backward a modifier replaced."""

    node: str
    op_type: str
    pattern: str


@dataclass
class Backward:
    """The result of `backprop`: the input gradient and what the modifier touched."""

    grad: ir.Value
    rewrites: list[Rewrite] = field(default_factory=list)
    path_ops: dict[str, int] = field(default_factory=dict)
    # gradients of the intermediate values asked for with keep= (None: no path)
    kept: dict[ir.Value, ir.Value | None] = field(default_factory=dict)


def _path_nodes(
    graph: ir.Graph, wrt: ir.Value, score: ir.Value, rules: Mapping[str, Rule]
) -> tuple[list[ir.Node], set]:
    """Nodes through which the score depends on `wrt`, in topological order.

    Gradients flow through floating-point values, and through the integer
    outputs of rules marked `integer_valued` (quantised tensors).
    """
    nodes = list(graph)
    inputs = {node: reads(node) for node in nodes}

    def carries(node: ir.Node, value: ir.Value) -> bool:
        return is_float(value) or getattr(rules.get(rule_key(node)), "integer_valued", False)

    forward = computed_from(nodes, [wrt], carries)
    needed: set[ir.Value] = {score}
    for node in reversed(nodes):
        if any(o in needed for o in node.outputs):
            needed.update(inputs[node])
    on_path = forward & needed
    # wrt's own producer is not on the path: its gradient stops at wrt
    return [n for n in nodes if any(o in on_path and o is not wrt for o in n.outputs)], on_path


def _choose_rules(path, on_path, rules, modifier):
    """Each path node's rule; what is missing; op counts; the first node without a rule."""
    chosen: dict[ir.Node, Rule] = {}
    rewrites: list[Rewrite] = []
    missing: dict[str, list[str]] = defaultdict(list)
    path_ops: dict[str, int] = defaultdict(int)
    first = None
    for node in path:
        key = rule_key(node)
        path_ops[key] += 1
        override = modifier.rule_for(node) if modifier is not None else None
        rule = override[0] if override is not None else rules.get(key)
        label = node.name or f"<unnamed {node.op_type}>"
        gaps = [] if rule is not None else [key]
        if rule is not None:
            gaps = [
                f"{key} (w.r.t. input {i}, '{inp.name}')"
                for i, inp in enumerate(node.inputs)
                if inp is not None and inp in on_path and not _differentiates(rule, i)
            ]
            captured = [v for v in reads(node)[len(node.inputs) :] if v in on_path]
            if captured:  # a rule for the node itself cannot reach into its subgraphs
                gaps.append(f"{key} (through its subgraph)")
        for gap in gaps:
            missing[gap].append(label)
        if gaps:
            first = first or node
            continue
        chosen[node] = rule
        if override is not None:
            rewrites.append(Rewrite(node.name or "", node.op_type, override[1]))
    return chosen, rewrites, missing, dict(path_ops), first


class NoDependenceError(UnsupportedModelError):
    """The score is not computed from what it is differentiated with respect to."""


class MissingRulesError(UnsupportedModelError):
    """Operators without a gradient rule stand between the input and the score."""

    def __init__(
        self,
        missing: dict[str, list[str]],
        layer: str | None,
        source: str,
        reasons: Mapping[str, str],
    ):
        self.missing = missing
        self.layer = layer  # a tensor strictly between the input and the first of them
        lines = []
        for op, names in sorted(missing.items()):
            why = reasons.get(op.split(" ")[0])
            lines.append(
                f"  {op}: {len(names)} node(s), first '{names[0]}'" + (f": {why}" if why else "")
            )
        advice = (
            f" Tensors before them still work: layer='{layer}' (with unit=) or output='{layer}'."
            if layer is not None
            else ""
        )
        super().__init__(
            f"No gradient rule for these operators on the path from '{source}' to the score:\n"
            + "\n".join(lines)
            + "\nNo gradient method can pass them."
            + advice
        )


@dataclass
class Coverage:
    """Which ops lie on the input-to-score path, which have no rule, and which are rewritten
    for each input before differentiation (control flow, recurrences)."""

    path_ops: dict[str, int]
    missing: dict[str, list[str]]
    specialised: dict[str, list[str]] = field(default_factory=dict)


def coverage(
    graph: ir.Graph, wrt: ir.Value, score: ir.Value, rules: Mapping[str, Rule]
) -> Coverage:
    """Rule coverage of the path from `wrt` to `score`, without building anything."""
    path, on_path = _path_nodes(graph, wrt, score, rules)
    _, _, missing, path_ops, _ = _choose_rules(path, on_path, rules, None)
    return Coverage(path_ops, dict(missing))


def backprop(
    b: Builder,
    wrt: ir.Value,
    score: ir.Value,
    seed: ir.Value,
    rules: Mapping[str, Rule],
    modifier: Modifier | None = None,
    keep: Sequence[ir.Value] = (),
    reasons: Mapping[str, str] | None = None,
) -> Backward:
    """Append the gradient of `score` (weighted by `seed`) w.r.t. `wrt` to b's graph.

    `keep` lists intermediate values whose total gradient is returned as well
    (FullGrad's bias-gradients): one backward pass serves them all. `reasons`
    says why some operators have no rule, for the error that names them.
    """
    path, on_path = _path_nodes(b.graph, wrt, score, rules)
    if score not in on_path:
        raise NoDependenceError(
            f"'{score.name}' does not depend on '{wrt.name}', so its gradient is zero "
            "everywhere. Choose an output or layer computed from it."
        )

    if modifier is not None:
        modifier = modifier.for_path(path)
    chosen, rewrites, missing, path_ops, first = _choose_rules(path, on_path, rules, modifier)
    if missing:
        earlier = [i for i in first.inputs if i is not None and i in on_path and i is not wrt]
        raise MissingRulesError(
            dict(missing), earlier[0].name if earlier else None, wrt.name, reasons or {}
        )

    grads: dict[ir.Value, list[ir.Value]] = defaultdict(list)
    grads[score].append(seed)

    def total(v: ir.Value) -> ir.Value | None:
        parts = grads.pop(v, None)
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        acc = b.op("Sum", *parts)
        return acc

    kept: dict[ir.Value, ir.Value | None] = {v: None for v in keep}
    for node in reversed(path):
        dy = [total(o) if o in on_path else None for o in node.outputs]
        for o, g in zip(node.outputs, dy):
            if o in kept:
                kept[o] = g
        if all(g is None for g in dy):
            continue
        wants = [i is not None and i in on_path for i in node.inputs]
        results = chosen[node](Ctx(b, node, dy, wants))
        if isinstance(results, Mapping):
            for value, g in results.items():
                if value in on_path and g is not None:
                    grads[value].append(g)
            continue
        results = list(results) + [None] * (len(node.inputs) - len(results))
        for inp, want, g in zip(node.inputs, wants, results):
            if want and g is not None:
                grads[inp].append(g)
    grad = total(wrt)
    if grad is None:  # every path went through a piecewise-constant op (Floor, Sign...)
        grad = b.zeros_like(wrt)
    return Backward(grad, rewrites, path_ops, kept)
