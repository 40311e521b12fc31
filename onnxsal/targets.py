"""The score a saliency map explains, appended to the graph as ordinary ONNX nodes.

The explained tensor A (logits, or any layer) is reduced to per-unit scores
M (N, C): the mean over every axis but the batch and the unit axis (the last
axis for model outputs, the channel axis for layers). Sample n's score is
M[n, t_n], with t_n fed at run time through the int64 input `target`
(negative = that sample's top unit). Because the score is made of graph
nodes, the gradient engine differentiates it like the rest of the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxsal.errors import TargetError
from onnxsal.graph.builder import Builder, rank_of

PASS_THROUGH = ("Reshape", "Flatten", "Identity", "Squeeze", "Unsqueeze")
SOFTMAX = ("Softmax", "LogSoftmax")

TARGET_INPUT = "target"
SCORE = "score"
ATTRIBUTION = "attribution"
TARGET_USED = "target_index"
UNIT_SCORES = "unit_scores"
WEIGHTS_INPUT = "weights"


def logits_of(b: Builder, output: ir.Value) -> tuple[ir.Value, ir.Node | None]:
    """The model output with a final Softmax/LogSoftmax removed (and the node removed).

    Shape-only ops after the softmax (Reshape/Flatten/Identity/...) are
    replayed on its input, so the logits have the output's shape.
    """
    chain: list[ir.Node] = []
    value = output
    while (node := value.producer()) is not None and node.op_type in PASS_THROUGH:
        chain.append(node)
        value = node.inputs[0]
    node = value.producer()
    if node is None or node.op_type not in SOFTMAX:
        return output, None
    logits = node.inputs[0]
    for step in reversed(chain):
        attrs = {name: a.value for name, a in step.attributes.items()}
        logits = b.op(step.op_type, logits, *step.inputs[1:], **attrs)
        logits.shape = step.outputs[0].shape  # softmax keeps shapes
    return logits, node


@dataclass
class Score:
    score: ir.Value
    target_input: ir.Value
    target_used: ir.Value
    unit_scores: ir.Value


def unit_scores(b: Builder, tensor: ir.Value, unit_axis: int) -> ir.Value:
    """(N, C): the mean of each unit's slice of `tensor` (the tensor itself for (N, C))."""
    r = rank_of(tensor)
    if r is None:
        raise TargetError(f"The rank of '{tensor.name}' is unknown, so it cannot be explained.")
    if r == 1:
        tensor, r, unit_axis = b.unsqueeze(tensor, [1]), 2, 1
    axis = unit_axis % r
    if axis == 0:
        raise TargetError(
            f"The unit axis of '{tensor.name}' cannot be its batch axis; pass channel_axis=1 "
            "(NCHW) or -1 (NHWC)."
        )
    others = [a for a in range(1, r) if a != axis]
    return b.reduce_mean(tensor, others, keepdims=0) if others else tensor


def add_weighted_score(
    b: Builder, tensors: list[tuple[ir.Value, int]], batch_dim: object
) -> tuple[ir.Value, list[ir.Value]]:
    """score = sum_k sum_c W_k[n, c] * M_k[n, c], the W_k fed as inputs `weights_k` (N, C_k).

    keras-vis's weighted losses: several targets, of the output and of layers,
    explained in one backward pass.
    """
    total = None
    weights = []
    for k, (tensor, axis) in enumerate(tensors):
        per_unit = unit_scores(b, tensor, axis)
        w = ir.Value(
            name=f"{WEIGHTS_INPUT}_{k}",
            shape=ir.Shape([batch_dim, None]),
            type=ir.TensorType(tensor.dtype or b.dtype),
        )
        b.graph.inputs.append(w)
        weights.append(w)
        term = b.reduce_sum(b.Mul(per_unit, w), [1], keepdims=0)
        total = term if total is None else b.Add(total, term)
    assert total is not None
    return total, weights


def add_score(b: Builder, tensor: ir.Value, unit_axis: int, batch_dim: object) -> Score:
    """Append the per-sample score of `tensor` to the graph (see module doc)."""
    per_unit = unit_scores(b, tensor, unit_axis)
    target = ir.Value(
        name=TARGET_INPUT, shape=ir.Shape([batch_dim]), type=ir.TensorType(ir.DataType.INT64)
    )
    b.graph.inputs.append(target)
    top = b.ArgMax(per_unit, axis=1, keepdims=0)
    chosen = b.Where(b.Less(target, b.ints(0)), top, target)
    depth = b.shape(per_unit, 1, 2)
    onehot = b.OneHot(chosen, depth, b.array(np.array([0.0, 1.0]), tensor), axis=-1)
    score = b.reduce_sum(b.Mul(per_unit, onehot), [1], keepdims=0)
    return Score(score, target, chosen, per_unit)
