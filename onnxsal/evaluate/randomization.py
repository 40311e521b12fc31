"""Model-parameter randomisation (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

A map that explains the model must change when the model's weights are
replaced by random ones. The weighted layers (Conv, ConvTranspose, Gemm and
MatMul whose weight is an initializer, see graph.weights) are grouped into
blocks by the framework modules the exporter recorded (the finest grouping with at most MAX_BLOCKS
blocks), and re-drawn from the output backwards, one more block each step
(cascading), or one block at a time (independent). Re-drawn weights are
He-normal, N(0, 2 / fan-in) with the layer's own fan-in; biases are zeroed.
The model is rewritten by replacing initializers: no framework is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxsal.errors import OptionError
from onnxsal.evaluate.relevance import Positions, method_relevance
from onnxsal.evaluate.scoring import explained_classes, explainer_of
from onnxsal.evaluate.similarity import MEASURES, Reference
from onnxsal.explainer import Explainer
from onnxsal.graph.layers import module_path
from onnxsal.graph.weights import layer_of
from onnxsal.methods import get_method

ORDERS = ("cascading", "independent")
MAX_BLOCKS = 24


@dataclass(frozen=True)
class Weighted:
    """One weighted node: its weight and bias initializers and the weight's fan-in."""

    node: str
    weight: str
    bias: str | None
    fan_in: int
    path: tuple[str, ...]


@dataclass
class Randomization:
    """Similarity of each method's maps to the original ones as blocks are randomised."""

    order: str
    methods: list[str]
    blocks: list[str]  # in the order randomised (from the output for cascading)
    scores: dict[str, np.ndarray]  # measure -> (methods, blocks, N)
    maps: dict[str, np.ndarray]  # method -> (1 + blocks, N, *positions): original first
    classes: np.ndarray
    layers: dict[str, list[str]] = field(default_factory=dict)  # block -> node names

    def mean(self, measure: str = "spearman_abs") -> np.ndarray:
        """(methods, blocks) mean over samples."""
        return np.nanmean(self.scores[measure], axis=2)

    def figure(self, sample: int = 0, tile: int = 64) -> Any:
        """Adebayo's figure of one sample (a PIL image): rows = methods, columns = steps."""
        from onnxsal.evaluate.figure import randomization_figure

        return randomization_figure(self.maps, self.blocks, sample, tile)

    def curves(self, measure: str = "spearman_abs") -> str:
        """The mean similarity of each method's maps to the original ones, as SVG."""
        from onnxsal.evaluate.figure import similarity_curves

        mean = self.mean(measure)
        by_method = {name: mean[m] for m, name in enumerate(self.methods)}
        return similarity_curves(by_method, self.blocks, measure)


def weighted_layers(model: ir.Model) -> list[Weighted]:
    """The graph's weighted nodes whose weights come from an initializer, in graph order
    (graph.weights: the same layers LRP's rules see; a bias after a MatMul is its bias)."""
    found = []
    for node in model.graph:
        layer = layer_of(node)
        if layer is None or layer.weight_source is None:
            continue
        found.append(Weighted(node.name, layer.weight_source, layer.bias_source, layer.fan_in,
                              module_path(node)))  # fmt: skip
    return found


def blocks(
    layers: Sequence[Weighted], chosen: Sequence[Any] | None = None
) -> dict[str, list[Weighted]]:
    """Blocks in graph order: the user's (names or lists of names), else module groups."""
    if chosen is not None:
        place = {w: i for i, w in enumerate(layers)}
        picked = {_block_name(entry): _matching(layers, entry) for entry in chosen}
        return dict(sorted(picked.items(), key=lambda kv: min(place[w] for w in kv[1])))
    best: dict[str, list[Weighted]] = {w.node: [w] for w in layers}
    deepest = max((len(w.path) for w in layers), default=0)
    for depth in range(deepest):
        groups: dict[str, list[Weighted]] = {}
        for w in layers:
            key = w.path[depth] if len(w.path) > depth else w.node
            groups.setdefault(key, []).append(w)
        if len(groups) > MAX_BLOCKS:
            break
        best = groups
    if len(best) > MAX_BLOCKS:  # no module names: consecutive runs of layers
        size = -(-len(layers) // MAX_BLOCKS)
        runs = [list(layers[i : i + size]) for i in range(0, len(layers), size)]
        best = {f"{run[0].node}..{run[-1].node}" if len(run) > 1 else run[0].node: run
                for run in runs}  # fmt: skip
    return best


def _block_name(entry: Any) -> str:
    return entry if isinstance(entry, str) else "+".join(map(str, entry))


def _matching(layers: Sequence[Weighted], entry: Any) -> list[Weighted]:
    names = [entry] if isinstance(entry, str) else list(entry)
    found = []
    for name in names:
        hits = [
            w for w in layers
            if name in (w.node, w.weight) or any(p == name or p.startswith(name + ".")
                                                 for p in w.path)
        ]  # fmt: skip
        if not hits:
            known = ", ".join(sorted({w.path[0] if w.path else w.node for w in layers}))
            raise OptionError(
                f"No weighted layer is named '{name}'; name a node, a weight, or a module: {known}."
            )
        found += [w for w in hits if w not in found]
    return found


def redrawn(
    ex: Explainer, layers: Sequence[Weighted], seed: int, stream: int
) -> dict[str, np.ndarray]:
    """New values for the layers' weights (He-normal) and biases (zero)."""
    rng = np.random.default_rng([seed, stream])
    inits = ex.model.graph.initializers
    values = {}
    for w in layers:
        old = inits[w.weight].const_value
        std = np.sqrt(2.0 / max(w.fan_in, 1))
        values[w.weight] = rng.normal(0.0, std, tuple(old.shape)).astype(old.dtype.numpy())
        if w.bias is not None:
            bias = inits[w.bias].const_value
            values[w.bias] = np.zeros(tuple(bias.shape), bias.dtype.numpy())
    return values


def randomization(
    model: Any,
    x: np.ndarray,
    method: str | Sequence[str] = "vanilla",
    target: Any = None,
    *,
    order: str = "cascading",
    layers: Sequence[Any] | None = None,
    seed: int = 0,
    batch_size: int | None = 32,
    options: dict[str, dict[str, Any]] | None = None,
    **method_options: Any,
) -> Randomization:
    """Maps of the model with more and more of its weights randomised, compared with the
    original maps (the same class explained throughout: the original model's).

    method_options go to every method that takes them; options= gives each method its own
    ({"smoothgrad": {"n_samples": 10}}), over those."""
    ex = explainer_of(model)
    if order not in ORDERS:
        raise OptionError(f"order must be one of {', '.join(ORDERS)}; got {order!r}.")
    methods = [method] if isinstance(method, str) else list(method)
    for name in methods:
        get_method(name)
    xs = ex.check_input(x)
    positions = Positions.of(xs, ex.layout)
    found = weighted_layers(ex.model)
    if not found:
        raise OptionError(
            "The model has no Conv, ConvTranspose, Gemm or MatMul with initializer weights to "
            "randomise."
        )
    grouped = list(blocks(found, layers).items())[::-1]  # from the output backwards
    _check_options(methods, method_options)
    own = {name: {**_options_for(name, method_options), **(options or {}).get(name, {})}
           for name in methods}  # fmt: skip
    classes, _ = explained_classes(ex, xs, target, "logit", batch_size)

    def maps_of(explainer: Explainer) -> dict[str, np.ndarray]:
        return {
            name: method_relevance(
                explainer.explain(xs, name, classes, batch_size=batch_size, **own[name]),
                positions,
                name,
            )
            for name in methods
        }  # fmt: skip

    original = maps_of(ex)
    references = {name: [Reference(m) for m in original[name]] for name in methods}
    kept = {name: [original[name].astype(np.float32)] for name in methods}
    found = {name: [] for name in methods}  # per method, per step: each sample's similarities
    values: dict[str, np.ndarray] = {}
    # a step's similarities are computed while the next step's model runs
    with ThreadPoolExecutor(max_workers=1) as pool:
        for k, (_, members) in enumerate(grouped):
            drawn = redrawn(ex, members, seed, k)
            values = {**values, **drawn} if order == "cascading" else drawn
            for name, step in maps_of(ex.with_initializers(values)).items():
                found[name].append(pool.submit(_compare, references[name], step))
                kept[name].append(step.astype(np.float32))
    found = {name: [f.result() for f in futures] for name, futures in found.items()}
    scores = {
        measure: np.array([[[s[measure] for s in step] for step in found[name]]
                           for name in methods])
        for measure in MEASURES
    }  # fmt: skip
    maps = {name: np.stack(kept[name]) for name in methods}
    return Randomization(
        order,
        methods,
        [name for name, _ in grouped],
        scores,
        maps,
        classes,
        {name: [w.node for w in members] for name, members in grouped},
    )


def _compare(references: Sequence[Reference], maps: np.ndarray) -> list[dict[str, float]]:
    return [ref.compare(m) for ref, m in zip(references, maps)]


def _options_for(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options `method` takes of those given for all methods."""
    own = get_method(method).options
    return {k: v for k, v in options.items() if k in own}


def _check_options(methods: Sequence[str], options: dict[str, Any]) -> None:
    taken = set().union(*(get_method(name).options for name in methods))
    unknown = sorted(set(options) - taken)
    if unknown:
        raise OptionError(
            f"No method of {', '.join(methods)} takes {', '.join(unknown)}; their options are: "
            + (", ".join(sorted(taken)) or "none")
        )
