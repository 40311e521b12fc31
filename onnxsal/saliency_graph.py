"""Compile a model plus a score into one ONNX graph computing the gradients a method needs.

A `GraphSpec` says what to explain (a target's form), which backprop
modifier to use, with respect to what (the model input, or any tensor cut
out of the graph as an input of its own), and which gradients to return: the
explained input's (always, unless forward-only), a layer's activation and
gradient (Grad-CAM), and every bias-gradient (FullGrad) -- all from one
backward pass.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import onnx
import onnx_ir as ir

from onnxsal.autodiff import NO_RULE_REASONS, RULES, Rewrite, backprop
from onnxsal.errors import OnnxsalWarning
from onnxsal.graph.biases import find_biases
from onnxsal.graph.builder import Builder, recording_reads
from onnxsal.graph.export import finish, sizes_trustworthy
from onnxsal.graph.values import cut_out, values_by_name
from onnxsal.modifiers import get_modifier
from onnxsal.targets import ATTRIBUTION, SCORE, TARGET_USED, UNIT_SCORES, Form, append_score

ACTIVATION = "activation"
ACTIVATION_GRAD = "activation_grad"
BIAS_GRAD = "bias_grad"  # + _i: dScore/dz at the i-th biased layer
BIAS_MAP = "bias_map"  # + _i: that gradient times the bias


@dataclass(frozen=True)
class GraphSpec:
    """What one compiled graph explains and returns (hashable: the cache key)."""

    score: Form  # the target's compiled structure
    modifier: Any = "vanilla"  # a MODIFIERS name, or an LRP composite (its name or object)
    wrt: str | None = None  # differentiate w.r.t. this tensor (fed as an input) instead of x
    layer_gradient: str | None = None  # also return this layer's activation and gradient
    bias_maps: bool = False  # also return every bias-gradient
    backward: bool = True  # False: scores only
    keep_outputs: bool = False  # also return the model's own outputs (standalone explainers)


@dataclass
class SaliencyGraph:
    """A compiled graph, what its modifier rewrote, and facts the runner reports."""

    model: onnx.ModelProto
    rewrites: list[Rewrite] = field(default_factory=list)
    path_ops: dict[str, int] = field(default_factory=dict)
    biases: list[str] = field(default_factory=list)
    peeled: tuple[str | None, ...] = ()  # the final activation stepped over, per tensor
    input_name: str = ""  # the name x is fed under (the model input, or the wrt tensor)
    reads: frozenset[str] = frozenset()  # constants whose values the build read (folded in)
    session: Any = None


@dataclass(frozen=True)
class ModelFacts:
    """The normalised model a graph is built from, and its explained input."""

    base: bytes  # the normalised model, serialized
    input_name: str


def build(facts: ModelFacts, spec: GraphSpec) -> SaliencyGraph:
    with recording_reads() as reads:
        graph = _build(facts, spec)
    graph.reads = frozenset(reads)
    return graph


def _build(facts: ModelFacts, spec: GraphSpec) -> SaliencyGraph:
    model = ir.from_proto(onnx.load_model_from_string(facts.base))
    graph = model.graph
    x = next(v for v in graph.inputs if v.name == facts.input_name)
    batch = x.shape[0] if x.shape is not None and len(x.shape) else "N"
    values = values_by_name(graph)
    if spec.wrt is not None:
        x = values[spec.wrt] = cut_out(graph, values[spec.wrt])
    b = Builder(graph, dtype=x.dtype, trust_sizes=sizes_trustworthy(graph))

    originals = []
    if spec.keep_outputs:
        for v in graph.outputs:
            name = v.name
            v.name = f"{name}__model"  # the graph output below takes the original name
            originals.append((name, v, v.dtype, v))
    appended = append_score(b, spec.score, values.__getitem__, batch)
    compiled = appended.compiled
    score = compiled.score
    real = score.dtype or ir.DataType.FLOAT  # x may hold integers (tokens): scores do not
    outputs: list = [(SCORE, score, real, [batch])]
    if compiled.chosen is not None:
        dims = [batch] + [None] * (compiled.chosen_rank - 1)
        outputs.append((TARGET_USED, compiled.chosen, ir.DataType.INT64, dims))
    if compiled.unit_scores is not None:
        outputs.append((UNIT_SCORES, compiled.unit_scores, real, [batch, None]))
    rewrites: list[Rewrite] = []
    path_ops: dict[str, int] = {}
    biases: list[str] = []
    if spec.backward:
        bias_terms = find_biases(b, graph) if spec.bias_maps else []
        keep = [t.z for t in bias_terms]
        activation = values[spec.layer_gradient] if spec.layer_gradient is not None else None
        if activation is not None:
            keep.append(activation)
        modifier = get_modifier(spec.modifier)
        seed = b.ones_like(score)
        if modifier.relevance:  # relevance starts as the score itself (LRP)
            seed = b.Mul(seed, score)
        score.name = f"score of {spec.score.tensor or 'the weighted targets'}"
        back = backprop(b, x, score, seed, RULES, modifier, keep=keep, reasons=NO_RULE_REASONS)
        rewrites, path_ops = back.rewrites, back.path_ops
        outputs.append((ATTRIBUTION, back.grad, x.dtype, x))
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
        if modifier.rules and not back.rewrites:
            warnings.warn(
                f"Method '{modifier.name}' found no ReLU-family gate between the input and the "
                "score, so its map is the vanilla gradient. Explainer.rewritten_nodes() lists "
                "the gates a modifier replaces.",
                OnnxsalWarning,
                stacklevel=5,
            )
    proto = finish(model, b, originals + outputs)
    return SaliencyGraph(proto, rewrites, path_ops, biases, appended.peeled, x.name)
