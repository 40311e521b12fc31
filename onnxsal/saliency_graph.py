"""Compile a model plus a score into one ONNX graph computing the gradients a method needs.

A `GraphSpec` says what to explain (the output's logits, layers, weighted
mixtures), which backprop modifier to use, and which gradients to return:
the input's (always, unless forward-only), a layer's activation and gradient
(Grad-CAM), and every bias-gradient (FullGrad) -- all from one backward pass.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import onnx
import onnx_ir as ir

from onnxsal.autodiff import RULES, Rewrite, backprop
from onnxsal.errors import OnnxsalWarning
from onnxsal.graph.biases import find_biases
from onnxsal.graph.builder import Builder, static_dims
from onnxsal.graph.export import finish, sizes_trustworthy
from onnxsal.graph.layers import LayerIndex
from onnxsal.modifiers import MODIFIERS
from onnxsal.targets import (
    ATTRIBUTION,
    SCORE,
    TARGET_USED,
    UNIT_SCORES,
    add_score,
    add_weighted_score,
    logits_of,
)

ACTIVATION = "activation"
ACTIVATION_GRAD = "activation_grad"
BIAS_GRAD = "bias_grad"  # + _i: dScore/dz at the i-th biased layer
BIAS_MAP = "bias_map"  # + _i: that gradient times the bias


@dataclass(frozen=True)
class GraphSpec:
    """What one compiled graph explains and returns (hashable: the cache key)."""

    modifier: str = "vanilla"
    explained: tuple[str | None, ...] = (None,)  # None: the model output; else layer names
    weighted: bool = False  # one `weights_k` input per explained tensor instead of `target`
    channel_axis: int | None = None
    wrt: str | None = None  # also return this layer's activation and its gradient
    bias_maps: bool = False  # also return every bias-gradient
    backward: bool = True  # False: scores only
    keep_outputs: bool = False  # also return the model's own outputs (standalone explainers)


@dataclass
class SaliencyGraph:
    """A compiled graph, what its modifier rewrote, and facts the runner checks."""

    model: onnx.ModelProto
    rewrites: list[Rewrite] = field(default_factory=list)
    path_ops: dict[str, int] = field(default_factory=dict)
    units: list[int | None] = field(default_factory=list)
    biases: list[str] = field(default_factory=list)
    session: Any = None


@dataclass(frozen=True)
class ModelFacts:
    """The explainer's choices a graph is built against."""

    base: bytes  # the normalised model, serialized
    input_name: str
    output_name: str
    keep_softmax: bool
    layout: str | None


def build(facts: ModelFacts, spec: GraphSpec) -> SaliencyGraph:
    model = ir.from_proto(onnx.load_model_from_string(facts.base))
    graph = model.graph
    x = next(v for v in graph.inputs if v.name == facts.input_name)
    b = Builder(graph, dtype=x.dtype, trust_sizes=sizes_trustworthy(graph))
    # names resolve in this fresh copy, so its own index (only when a layer is named)
    layers = LayerIndex(model) if spec.wrt is not None or any(spec.explained) else None
    batch = x.shape[0] if x.shape is not None and len(x.shape) else "N"
    explained, units = [], []
    for name in spec.explained:
        if name is None:
            out = next(v for v in graph.outputs if v.name == facts.output_name)
            tensor = out if facts.keep_softmax else logits_of(b, out)[0]
            axis = -1 if spec.channel_axis is None else spec.channel_axis
        else:
            tensor = layers.resolve(name)
            axis = spec.channel_axis
            if axis is None:
                axis = layers.axes.get(tensor.name, -1 if facts.layout == "NHWC" else 1)
        explained.append((tensor, axis))
        dims = static_dims(tensor)
        unit = dims[axis % len(dims)] if dims is not None and len(dims) >= 2 else None
        units.append(unit if isinstance(unit, int) else None)

    originals = []
    if spec.keep_outputs:
        for v in graph.outputs:
            name = v.name
            v.name = f"{name}__model"  # the graph output below takes the original name
            originals.append((name, v, v.dtype, v))
    outputs: list = []
    if spec.weighted:
        score, _ = add_weighted_score(b, explained, batch)
    else:
        ((tensor, axis),) = explained
        s = add_score(b, tensor, axis, batch)
        score = s.score
        outputs += [
            (TARGET_USED, s.target_used, ir.DataType.INT64, [batch]),
            (UNIT_SCORES, s.unit_scores, x.dtype, [batch, None]),
        ]
    outputs.insert(0, (SCORE, score, x.dtype, [batch]))
    rewrites: list[Rewrite] = []
    path_ops: dict[str, int] = {}
    biases: list[str] = []
    if spec.backward:
        bias_terms = find_biases(b, graph) if spec.bias_maps else []
        keep = [t.z for t in bias_terms]
        activation = layers.resolve(spec.wrt) if spec.wrt is not None else None
        if activation is not None:
            keep.append(activation)
        seed = b.ones_like(score)
        back = backprop(b, x, score, seed, RULES, MODIFIERS[spec.modifier], keep=keep)
        rewrites, path_ops = back.rewrites, back.path_ops
        outputs.append((ATTRIBUTION, back.grad, x.dtype, x.shape))
        if activation is not None:
            grad = back.kept.get(activation)
            if grad is None:
                grad = b.zeros_like(activation)
            outputs += [
                (ACTIVATION, activation, x.dtype, activation),
                (ACTIVATION_GRAD, grad, x.dtype, activation),
            ]
        for term in bias_terms:
            grad = back.kept.get(term.z)
            if grad is None:  # a bias the score does not depend on
                continue
            i = len(biases)
            biases.append(term.node)
            outputs += [
                (f"{BIAS_GRAD}_{i}", grad, x.dtype, term.z),
                (f"{BIAS_MAP}_{i}", b.Mul(grad, term.bias), x.dtype, term.z),
            ]
        if spec.modifier != "vanilla" and not back.rewrites:
            warnings.warn(
                f"Method '{spec.modifier}' found no ReLU-family gate between the input and the "
                "score, so its map is the vanilla gradient. Explainer.rewritten_nodes() lists "
                "the gates a modifier replaces.",
                OnnxsalWarning,
                stacklevel=5,
            )
    proto = finish(model, b, originals + outputs)
    return SaliencyGraph(proto, rewrites, path_ops, units, biases)
