"""Weighted layers as the LRP rules and the randomisation test see them.

A weighted node (Conv, ConvTranspose, Gemm, MatMul) whose weight is a constant --
an initializer, or one reached through Identity, Cast or Transpose -- together
with the per-output-channel affine nodes right after it that exporters split
off: BatchNormalization, tf2onnx's BatchNorm as Mul and Add by constants, a
MatMul's bias Add, and same-type Casts between them. `Layer.merged()` folds
them into one weight and bias, as Zennit's MergeBatchNorm canonizer folds a
BatchNorm module into the layer before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxsal.graph.builder import attr, const_array

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
AFFINE_TAIL = ("BatchNormalization", "Mul", "Add", "Sub", "Div", "Identity", "Cast")
_LAYOUT = ("Identity", "Cast", "Transpose")


@dataclass
class Layer:
    """A weighted node, its constants, and the affine nodes folded into it."""

    node: ir.Node
    weight: np.ndarray
    weight_source: str | None  # the initializer the weight comes from (None: computed)
    bias: np.ndarray | None
    bias_source: str | None
    fan_in: int
    tail: list[ir.Node] = field(default_factory=list)

    @property
    def channels(self) -> int:
        w, op = self.weight, self.node.op_type
        if op == "Conv":
            return w.shape[0]
        if op == "ConvTranspose":
            return w.shape[1] * attr(self.node, "group", 1)
        if op == "Gemm":
            return w.shape[0] if attr(self.node, "transB", 0) else w.shape[1]
        return w.shape[-1]

    @property
    def output(self) -> ir.Value:
        """What the merged layer computes: the last folded node's output."""
        return (self.tail[-1] if self.tail else self.node).outputs[0]

    def merged(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(weight, bias) with every tail node folded in, in the node's own layout."""
        w = self.weight.astype(np.float64)
        b = None if self.bias is None else self.bias.astype(np.float64).reshape(-1)
        for node in self.tail:
            scale, shift = _affine(node, self.channels, self._axis(node)) or (None, None)
            if scale is not None:
                w = self._scaled(w, scale)
                b = None if b is None else b * scale
            if shift is not None:
                b = shift if b is None else b + shift
        dtype = self.weight.dtype
        return w.astype(dtype), None if b is None else b.astype(dtype)

    def _axis(self, node: ir.Node) -> int:
        return 1 if self.node.op_type in ("Conv", "ConvTranspose") else -1

    def _scaled(self, w: np.ndarray, s: np.ndarray) -> np.ndarray:
        op = self.node.op_type
        if op == "Conv":
            return w * s.reshape(-1, *[1] * (w.ndim - 1))
        if op == "ConvTranspose":  # (C_in, M/g, k...): input channel c feeds group c // (C_in/g)
            g = attr(self.node, "group", 1)
            per_group = s.reshape(g, -1)
            factor = np.repeat(per_group, w.shape[0] // g, axis=0)
            return w * factor.reshape(*factor.shape, *[1] * (w.ndim - 2))
        if op == "Gemm" and attr(self.node, "transB", 0):
            return w * s[:, None]
        return w * s  # Gemm (K, N), MatMul (..., K, N): the last axis


def layer_of(node: ir.Node) -> Layer | None:
    """The node as a weighted Layer (None: not weighted, or its weight is not constant)."""
    if node.op_type not in WEIGHTED or len(node.inputs) < 2:
        return None
    if node.op_type == "Gemm" and (attr(node, "transA", 0) or attr(node, "alpha", 1.0) != 1.0):
        return None
    w, source = _constant(node.inputs[1])
    if w is None or w.dtype.kind != "f" or w.ndim < 2:
        return None
    bias = bias_source = None
    if node.op_type != "MatMul" and len(node.inputs) > 2 and node.inputs[2] is not None:
        bias, bias_source = _constant(node.inputs[2])
        if bias is None:
            return None
        if node.op_type == "Gemm":
            bias = bias * attr(node, "beta", 1.0)
    layer = Layer(node, w, source, bias, bias_source, _fan_in(node, w))
    layer.tail = _tail(layer)
    if node.op_type == "MatMul" and layer.tail:  # its bias is the first Add after it
        first = next(
            (n for n in layer.tail if n.op_type != "Cast" and n.op_type != "Identity"), None
        )
        if first is not None and first.op_type == "Add":
            const = [v for v in first.inputs if const_array(v) is not None]
            layer.bias_source = const[0].name if const and _is_initializer(const[0]) else None
    return layer


def _fan_in(node: ir.Node, w: np.ndarray) -> int:
    """Inputs per output unit, as the weight's layout reads."""
    if node.op_type == "Conv":
        return int(np.prod(w.shape[1:]))
    if node.op_type == "ConvTranspose":
        return int(w.shape[0] // attr(node, "group", 1) * np.prod(w.shape[2:]))
    if node.op_type == "Gemm":
        return w.shape[1] if attr(node, "transB", 0) else w.shape[0]
    return w.shape[-2]


def _constant(value: ir.Value | None) -> tuple[np.ndarray | None, str | None]:
    """(the value as a constant array, the initializer it comes from), through Identity,
    Cast and Transpose."""
    array = const_array(value)
    if array is not None:
        return array, value.name if _is_initializer(value) else None
    producer = value.producer() if value is not None else None
    if producer is None or producer.op_type not in _LAYOUT:
        return None, None
    inner, source = _constant(producer.inputs[0])
    if inner is None:
        return None, None
    if producer.op_type == "Cast":
        inner = inner.astype(ir.DataType(attr(producer, "to")).numpy())
    elif producer.op_type == "Transpose":
        inner = np.transpose(inner, attr(producer, "perm", None))
    return inner, source


def _is_initializer(value: ir.Value) -> bool:
    graph = value.graph
    return graph is not None and value.name in graph.initializers


def _tail(layer: Layer) -> list[ir.Node]:
    """The per-output-channel affine nodes right after the layer (each the sole user)."""
    nodes, current = [], layer.node.outputs[0]
    while True:
        uses = list(current.uses())
        if len(uses) != 1 or current.is_graph_output():
            return nodes
        node = uses[0].node
        if node.op_type not in AFFINE_TAIL or (
            node.inputs[0] is not current
            and (node.op_type not in ("Mul", "Add") or node.inputs[1] is not current)
        ):
            return nodes
        if node.op_type in ("Identity", "Cast"):
            if node.op_type == "Cast" and attr(node, "to") != current.dtype:
                return nodes
        elif _affine(node, layer.channels, layer._axis(node)) is None:
            return nodes
        nodes.append(node)
        current = node.outputs[0]


def _affine(node: ir.Node, channels: int, axis: int) -> tuple:
    """(scale, shift) per output channel of an affine tail node, or (None, None)."""
    op = node.op_type
    if op in ("Identity", "Cast"):
        return None, None
    if op == "BatchNormalization":
        params = [const_array(v) for v in node.inputs[1:5]]
        if any(p is None for p in params) or (len(node.outputs) > 1 and node.outputs[1].uses()):
            return None, None
        scale, shift, mean, var = (p.astype(np.float64) for p in params)
        factor = scale / np.sqrt(var + attr(node, "epsilon", 1e-5))
        return factor, shift - mean * factor
    consts = [const_array(v) for v in node.inputs]
    if len(consts) != 2 or (consts[0] is None) == (consts[1] is None):
        return None, None
    c = _per_channel(next(v for v in consts if v is not None), channels, axis)
    if c is None or (op in ("Sub", "Div") and consts[1] is None):  # c - x, c / x: not affine in x
        return None, None
    if op == "Div":  # x / c folds only where c has no zero
        return (1.0 / c, None) if np.all(c != 0) else None
    return {"Mul": (c, None), "Add": (None, c), "Sub": (None, -c)}[op]


def _per_channel(c: np.ndarray, channels: int, axis: int) -> np.ndarray | None:
    """A constant that varies along the output channel axis only, as a vector."""
    if c.dtype.kind != "f":
        return None
    if c.size == 1:
        return np.full(channels, float(c.reshape(())))
    shape = list(c.shape)
    at = len(shape) - 1 if axis == -1 else axis
    if axis != -1 and len(shape) < 3:  # (C, 1, 1) aligned from the end for NCHW outputs
        return None
    if axis != -1:
        at = len(shape) - 3 if len(shape) == 3 else 1
    if (
        at >= len(shape)
        or shape[at] != channels
        or any(d != 1 for i, d in enumerate(shape) if i != at)
    ):
        return None
    return c.reshape(-1).astype(np.float64)
