"""The bias terms of a graph, for FullGrad's bias-gradients.

A biased layer is a tensor z = (something linear in its input) + b. FullGrad
needs dScore/dz and b broadcast against z. Recognised:

- Conv / ConvTranspose with a bias input, Gemm with C (times beta);
- BatchNormalization, whose effective bias is B - mean * scale / sqrt(var + eps)
  (so a BatchNorm folded into its Conv by the exporter yields the same term);
- Add of a constant to the output of a bias-free Conv, ConvTranspose, MatMul or Gemm
  (how TensorFlow exports and MatMul+Add layers write the bias).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxsal.graph.builder import Builder, attr, const_array, rank_of

LINEAR = ("Conv", "ConvTranspose", "MatMul", "Gemm")


@dataclass
class Bias:
    """z (the layer's output), the bias broadcastable to z, and where it came from."""

    z: ir.Value
    bias: ir.Value
    node: str
    kind: str


def _channel_shape(rank: int) -> list[int]:
    return [1, -1] + [1] * (rank - 2)


def _unbiased_linear(value: ir.Value | None) -> bool:
    node = value.producer() if value is not None else None
    if node is None or node.op_type not in LINEAR:
        return False
    if node.op_type in ("Conv", "ConvTranspose", "Gemm"):
        return len(node.inputs) < 3 or node.inputs[2] is None
    return True


def find_biases(b: Builder, graph: ir.Graph) -> list[Bias]:
    """Every biased layer of the graph, in topological order."""
    found: list[Bias] = []
    for node in graph:
        if node.domain not in ("", "ai.onnx") or not node.outputs:
            continue
        z = node.outputs[0]
        r = rank_of(z)
        op = node.op_type
        name = node.name or op
        if op in ("Conv", "ConvTranspose") and len(node.inputs) > 2 and node.inputs[2] is not None:
            if r is not None:
                found.append(
                    Bias(z, b.Reshape(node.inputs[2], b.ints(_channel_shape(r))), name, op)
                )
        elif op == "Gemm" and len(node.inputs) > 2 and node.inputs[2] is not None:
            beta = attr(node, "beta", 1.0)
            bias = node.inputs[2] if beta == 1.0 else b.Mul(node.inputs[2], b.scalar(beta, z))
            found.append(Bias(z, bias, name, op))
        elif op == "BatchNormalization" and r is not None:
            scale, shift, mean, var = (const_array(v) for v in node.inputs[1:5])
            if any(a is None for a in (scale, shift, mean, var)):
                continue
            eps = attr(node, "epsilon", 1e-5)
            effective = shift - mean * scale / np.sqrt(var.astype(np.float64) + eps)
            found.append(Bias(z, b.array(effective.reshape(_channel_shape(r)), z), name, op))
        elif op == "Add" and len(node.inputs) == 2:
            for other, const in (node.inputs, tuple(reversed(node.inputs))):
                if const_array(const) is not None and _unbiased_linear(other):
                    found.append(Bias(z, const, name, "Add"))
                    break
    return found
