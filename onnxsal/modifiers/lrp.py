"""Layer-wise relevance propagation: LRP rules as small objects, composites as maps.

A rule for a weighted node (Conv, ConvTranspose, Gemm, MatMul with initializer
weights) is Zennit's recipe in ONNX: for each k, an input modifier and a
parameter modifier give a replay of the layer, z_k = layer(in_k; w_k, b_k);
the gradient mapper turns the incoming relevance R and the z_k into the
gradients g_k; the reducer combines the inputs with the layer's VJPs of the g_k
into the relevance of the layer's input. Parameter modifiers act on the
weights at build time (numpy); the VJPs come from the rule table.

The layer is seen whole (graph.weights): a BatchNormalization after it, or its
Mul/Add form, and a MatMul's bias Add are folded into its weights for the
replay, as Zennit's MergeBatchNorm canonizer merges the modules, and pass
relevance through themselves. Denominators are stabilised as Zennit does:
z + ε where z ≥ 0, z − ε elsewhere.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxsal.autodiff.engine import Ctx, Rule, rule_key
from onnxsal.autodiff.rules import RULES
from onnxsal.errors import OnnxsalWarning, OptionError
from onnxsal.graph.builder import Builder, const_array
from onnxsal.graph.weights import AFFINE_TAIL, Layer, layer_of
from onnxsal.modifiers.base import GATES, BackpropModifier
from onnxsal.modifiers.gates import RECTIFIERS, find_gate

STABILIZER = 1e-6
CONVOLUTIONS, DENSE = ("Conv", "ConvTranspose"), ("Gemm", "MatMul")


# -- the layer a rule replays ------------------------------------------------------------------
def replay(
    b: Builder, layer: Layer, x: ir.Value, w: np.ndarray, bias: np.ndarray | None
) -> ir.Value:
    """z = the layer (its tail folded in) on x with weights w and bias `bias`."""
    node = layer.node
    attrs = {k: a.value for k, a in node.attributes.items() if k != "beta"}  # in the bias
    weight = b.const(w, hint="lrp_weight")
    if node.op_type == "MatMul":
        z = b.MatMul(x, weight)
        return z if bias is None else b.Add(z, b.const(bias, hint="lrp_bias"))
    inputs = [x, weight] + ([b.const(bias, hint="lrp_bias")] if bias is not None else [])
    return b.op(node.op_type, *inputs, **attrs)


def input_vjp(b: Builder, z: ir.Value, g: ir.Value) -> ir.Value:
    """The VJP of a replay w.r.t. its input: the rule table's, on the replay's node."""
    node = z.producer()
    if node.op_type == "Add":  # MatMul + bias: the bias Add passes g through
        node = node.inputs[0].producer()
    wants = [True] + [False] * (len(node.inputs) - 1)
    return RULES[rule_key(node)](Ctx(b, node, [g], wants))[0]


def tail_head(node: ir.Node) -> Layer | None:
    """The weighted layer whose folded tail `node` is part of, if any."""
    current = node
    while current is not None and current.op_type in AFFINE_TAIL:
        inner = [v for v in current.inputs if v is not None and const_array(v) is None]
        current = inner[0].producer() if len(inner) == 1 else None
    layer = layer_of(current) if current is not None else None
    return layer if layer is not None and node in layer.tail else None


# -- building blocks of rules --------------------------------------------------------------------
def stabilize(b: Builder, z: ir.Value, epsilon: float) -> ir.Value:
    """z + ε where z ≥ 0, z − ε elsewhere (Zennit's stabilizer: no division by zero)."""
    eps = b.scalar(epsilon, z)
    return b.Where(b.GreaterOrEqual(z, b.scalar(0.0, z)), b.Add(z, eps), b.Sub(z, eps))


def positive(b: Builder, x: ir.Value) -> ir.Value:
    return b.Relu(x)


def negative(b: Builder, x: ir.Value) -> ir.Value:
    return b.Min(x, b.scalar(0.0, x))


def same(b: Builder, x: ir.Value) -> ir.Value:
    return x


def ones(b: Builder, x: ir.Value) -> ir.Value:
    out = b.ones_like(x)
    out.shape = x.shape  # the rank, which MatMul's VJP needs
    return out


Params = Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray | None]]


def keep(w, bias):
    return w, bias


def plus(w, bias, *, with_bias=True):
    return np.maximum(w, 0), (np.maximum(bias, 0) if with_bias and bias is not None else None)


def minus(w, bias, *, with_bias=True):
    return np.minimum(w, 0), (np.minimum(bias, 0) if with_bias and bias is not None else None)


def gamma_mod(w, bias, *, gamma, sign, with_bias=True):
    part = (lambda p: np.maximum(p, 0)) if sign > 0 else (lambda p: np.minimum(p, 0))
    new_bias = bias + gamma * part(bias) if with_bias and bias is not None else None
    return w + gamma * part(w), new_bias


# -- the rules (Zennit's definitions) --------------------------------------------------------------
@dataclass(frozen=True)
class Basic:
    """One LRP rule for weighted nodes: inputs[k] and params[k] make the replay z_k;
    `mapper(b, R, zs)` gives the gradients g_k, `reducer(b, ins, vjps)` the relevance."""

    name: str
    inputs: tuple[Callable, ...]
    params: tuple[Params, ...]
    mapper: Callable[..., list[ir.Value]]
    reducer: Callable[..., ir.Value]

    def claim(self, node: ir.Node) -> tuple[Rule, str] | None:
        layer = layer_of(node)
        if layer is None:
            warnings.warn(
                f"LRP: {node.op_type} '{node.name}' has no constant weights, so it keeps its "
                "gradient (the map is not LRP through it).",
                OnnxsalWarning,
                stacklevel=2,
            )
            return None
        return partial(self._apply, layer), self.name

    def _apply(self, layer: Layer, ctx: Ctx) -> list[ir.Value | None]:
        b, x = ctx.b, ctx.node.inputs[0]
        w, bias = layer.merged()
        ins = [modify(b, x) for modify in self.inputs]
        zs = [replay(b, layer, i, *param(w, bias)) for i, param in zip(ins, self.params)]
        gs = self.mapper(b, ctx.g, zs)
        vjps = [None if g is None else input_vjp(b, z, g) for z, g in zip(zs, gs)]
        return [self.reducer(b, ins, vjps)] + [None] * (len(ctx.node.inputs) - 1)


def _over(b: Builder, r: ir.Value, z: ir.Value, eps: float) -> ir.Value:
    return b.Div(r, stabilize(b, z, eps))


def _sum(b: Builder, values: Sequence[ir.Value]) -> ir.Value:
    return values[0] if len(values) == 1 else b.op("Sum", *values)


def _dot(b: Builder, ins, vjps, indices) -> ir.Value:
    return _sum(b, [b.Mul(ins[k], vjps[k]) for k in indices])


def epsilon(eps: float = STABILIZER) -> Basic:
    return Basic(
        f"Epsilon({eps:g})", (same,), (keep,),
        lambda b, r, zs: [_over(b, r, zs[0], eps)],
        lambda b, ins, v: b.Mul(ins[0], v[0]),
    )  # fmt: skip


def zplus(stabilizer: float = STABILIZER) -> Basic:
    return Basic(
        "ZPlus", (positive, negative), (plus, partial(minus, with_bias=False)),
        lambda b, r, zs: [_over(b, r, b.Add(zs[0], zs[1]), stabilizer)] * 2,
        lambda b, ins, v: _dot(b, ins, v, (0, 1)),
    )  # fmt: skip


def alpha_beta(alpha: float = 2.0, beta: float = 1.0, stabilizer: float = STABILIZER) -> Basic:
    if alpha < 0 or beta < 0 or alpha - beta != 1:
        raise OptionError(
            f"AlphaBeta needs alpha, beta >= 0 and alpha - beta = 1; got {alpha}, {beta}."
        )

    def reducer(b, ins, v):
        return b.Sub(b.Mul(b.scalar(alpha, ins[0]), _dot(b, ins, v, (0, 1))),
                     b.Mul(b.scalar(beta, ins[0]), _dot(b, ins, v, (2, 3))))  # fmt: skip

    return Basic(
        f"AlphaBeta({alpha:g},{beta:g})", (positive, negative, positive, negative),
        (plus, partial(minus, with_bias=False), minus, partial(plus, with_bias=False)),
        lambda b, r, zs: [_over(b, r, b.Add(zs[0], zs[1]), stabilizer)] * 2
        + [_over(b, r, b.Add(zs[2], zs[3]), stabilizer)] * 2,
        reducer,
    )  # fmt: skip


def gamma(g: float = 0.25, stabilizer: float = STABILIZER) -> Basic:
    def mapper(b, r, zs):
        up = b.Cast(b.Greater(zs[4], b.scalar(0.0, zs[4])), to=zs[4].dtype)
        down = b.Cast(b.Less(zs[4], b.scalar(0.0, zs[4])), to=zs[4].dtype)
        pos = b.Mul(up, _over(b, r, b.Add(zs[0], zs[1]), stabilizer))
        neg = b.Mul(down, _over(b, r, b.Add(zs[2], zs[3]), stabilizer))
        return [pos, pos, neg, neg, None]

    return Basic(
        f"Gamma({g:g})", (positive, negative, positive, negative, same),
        (partial(gamma_mod, gamma=g, sign=1), partial(gamma_mod, gamma=g, sign=-1, with_bias=False),
         partial(gamma_mod, gamma=g, sign=-1), partial(gamma_mod, gamma=g, sign=1, with_bias=False),
         keep),
        mapper,
        lambda b, ins, v: _dot(b, ins, v, (0, 1, 2, 3)),
    )  # fmt: skip


def flat(stabilizer: float = STABILIZER) -> Basic:
    return Basic(
        "Flat", (ones,), (lambda w, bias: (np.ones_like(w), None),),
        lambda b, r, zs: [_over(b, r, zs[0], stabilizer)],
        lambda b, ins, v: v[0],
    )  # fmt: skip


def w_square(stabilizer: float = STABILIZER) -> Basic:
    return Basic(
        "WSquare", (ones,), (lambda w, bias: (w**2, None if bias is None else bias**2),),
        lambda b, r, zs: [_over(b, r, zs[0], stabilizer)],
        lambda b, ins, v: v[0],
    )  # fmt: skip


def z_box(low: Any, high: Any, stabilizer: float = STABILIZER) -> Basic:
    low_a, high_a = np.asarray(low, np.float64), np.asarray(high, np.float64)

    def bound(value: np.ndarray) -> Callable:
        def make(b: Builder, x: ir.Value) -> ir.Value:
            v = value.reshape(-1, *([1] * 2)) if value.ndim == 1 else value  # per channel
            return b.Add(b.zeros_like(x), b.array(v, x))

        return make

    def mapper(b, r, zs):
        return [_over(b, r, b.Sub(b.Sub(zs[0], zs[1]), zs[2]), stabilizer)] * 3

    def reducer(b, ins, v):
        return b.Sub(b.Sub(b.Mul(ins[0], v[0]), b.Mul(ins[1], v[1])), b.Mul(ins[2], v[2]))

    return Basic(
        f"ZBox({low_a.tolist()},{high_a.tolist()})", (same, bound(low_a), bound(high_a)),
        (keep, plus, minus), mapper, reducer,
    )  # fmt: skip


@dataclass(frozen=True)
class Pass:
    """Relevance passes through unchanged: activations (rectifier patterns from their
    gate's input)."""

    name: str = "Pass"

    def claim(self, node: ir.Node) -> tuple[Rule, str] | None:
        if node.op_type in RECTIFIERS:  # Mul, Max, Clip: only when they act as a rectifier
            gate = find_gate(node)
            return None if gate is None else (partial(self._apply, gate.x), self.name)
        return partial(self._apply, node.inputs[0]), self.name

    def _apply(self, target: ir.Value, ctx: Ctx) -> dict[ir.Value, ir.Value]:
        return {target: ctx.g}


@dataclass(frozen=True)
class Norm:
    """Zennit's Norm for parameter-free layers (sums at residual joins, average pools):
    each input's share x ⊙ VJP(R / s(z)) of the layer's output z."""

    stabilizer: float = STABILIZER
    name: str = "Norm"

    def claim(self, node: ir.Node) -> tuple[Rule, str] | None:
        return partial(self._apply), self.name

    def _apply(self, ctx: Ctx) -> list[ir.Value | None]:
        b, node = ctx.b, ctx.node
        inputs = [v for v, w in zip(node.inputs, ctx.wants) if w]
        if node.op_type in ("Add", "Sum") and len(inputs) < 2:
            return RULES[rule_key(node)](ctx)  # a constant added: relevance passes through
        g = _over(b, ctx.g, node.outputs[0], self.stabilizer)
        vjps = RULES[rule_key(node)](replace(ctx, dy=[g]))
        return [None if v is None or not w else b.Mul(x, v)
                for x, v, w in zip(node.inputs, vjps, ctx.wants)]  # fmt: skip


ACTIVATIONS = (*RECTIFIERS, "Sigmoid", "Tanh", "Softsign", "HardSigmoid")
PARAMETER_FREE = ("Add", "Sum", "AveragePool", "GlobalAveragePool", "ReduceMean")  # joins, pools


# -- composites: maps from op type to rule -------------------------------------------------------
@dataclass(frozen=True)
class Composite:
    """Which LRP rule each kind of node gets: convolutions, dense layers, the first
    weighted layer on the input's path (None: like the others); activations pass relevance,
    sums and average pools take Norm, everything else its gradient."""

    name: str
    convolution: Basic
    dense: Basic
    first: Basic | None = None
    stabilizer: float = STABILIZER
    extra: tuple[tuple[str, Any], ...] = field(default=())  # (op type, rule) checked first

    def modifier(self) -> BackpropModifier:
        rules = (
            *self.extra,
            *((op, self.convolution) for op in CONVOLUTIONS),
            *((op, self.dense) for op in DENSE),
            *((op, MergedTail()) for op in AFFINE_TAIL),
            (GATES, Pass()),
            *((op, Pass()) for op in ACTIVATIONS if op not in RECTIFIERS),
            *((op, Norm(self.stabilizer)) for op in PARAMETER_FREE),
        )
        return LrpModifier(f"lrp:{self.name}", f"LRP, composite {self.name}", rules, True,
                           first=self.first)  # fmt: skip


@dataclass(frozen=True)
class MergedTail:
    """A node folded into the weighted layer before it (BatchNorm, its Mul/Add form, a
    MatMul's bias): that layer's rule accounts for it, so relevance passes through."""

    def claim(self, node: ir.Node) -> tuple[Rule, str] | None:
        if tail_head(node) is None:
            return None
        return partial(Pass()._apply, _variable(node)), "Pass (folded into the layer before)"


@dataclass(frozen=True)
class LrpModifier(BackpropModifier):
    """A composite's map; `first` replaces the rule of the first weighted node on the path."""

    first: Basic | None = None
    first_node: str | None = None
    before: tuple[str, ...] = ()  # elementwise ops with a constant before the first layer

    def for_path(self, path: Sequence[ir.Node]) -> BackpropModifier:
        """Find the first weighted node on the path, and the elementwise operations with a
        constant before it (a model's own input normalisation), which pass relevance."""
        first = next((n for n in path if layer_of(n) is not None), None)
        before = path[: path.index(first)] if first is not None else []
        scaling = tuple(n.name for n in before if _constant_elementwise(n))
        return replace(self, first_node=None if first is None else first.name, before=scaling)

    def rule_for(self, node: ir.Node) -> tuple[Rule, str] | None:
        if self.first is not None and node.name == self.first_node:
            claimed = self.first.claim(node)
            if claimed is not None:
                return claimed[0], f"{claimed[1]} (first layer)"
        if node.name in self.before:
            return partial(Pass()._apply, _variable(node)), "Pass (input preprocessing)"
        return super().rule_for(node)


def _variable(node: ir.Node) -> ir.Value:
    """The input of a node that is not a constant (its other inputs are)."""
    return next(v for v in node.inputs if v is not None and const_array(v) is None)


def _constant_elementwise(node: ir.Node) -> bool:
    if node.op_type not in ("Sub", "Add", "Mul", "Div") or len(node.inputs) != 2:
        return False
    consts = [const_array(v) is not None for v in node.inputs]
    return consts == [False, True] or (consts == [True, False] and node.op_type in ("Add", "Mul"))


def _composites() -> dict[str, Composite]:
    return {
        c.name: c
        for c in (
            Composite("epsilon_plus_flat", zplus(), epsilon(), flat()),
            Composite("epsilon_alpha2_beta1", alpha_beta(2.0, 1.0), epsilon()),
            Composite("epsilon", epsilon(), epsilon()),
        )
    }


COMPOSITES: dict[str, Composite] = _composites()
BOX_COMPOSITE = "epsilon_gamma_box"  # needs the input's bounds: epsilon_gamma_box(low, high)


def epsilon_gamma_box(low: Any, high: Any) -> Composite:
    """Conv → Gamma(0.25), dense → Epsilon, the first layer → ZBox(low, high) (bounds of the
    input in model space: scalars or one per channel)."""
    return Composite(BOX_COMPOSITE, gamma(0.25), epsilon(), z_box(low, high))


def composite_modifier(key: Any) -> BackpropModifier:
    """The modifier of a composite given as "lrp:NAME", a name, or a Composite."""
    if isinstance(key, Composite):
        return key.modifier()
    name = key[4:] if isinstance(key, str) and key.startswith("lrp:") else key
    if name in COMPOSITES:
        return COMPOSITES[name].modifier()
    raise OptionError(
        f"Unknown composite {name!r}; the composites are: {', '.join(COMPOSITES)}, "
        f"{BOX_COMPOSITE} (epsilon_gamma_box(low, high)), or a Composite(...)."
    )
