"""What every saliency method shares: the request, the result, and running graphs.

A method is a small class with a `name`, the keyword `options` it accepts,
and `explain(runner, request, **options) -> Explanation`. Methods compose
`gradients(...)`, which runs one compiled graph over a (possibly expanded)
batch and returns every output it asked for, and `scores(...)` (forward only).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from onnxsal import feeds
from onnxsal.errors import OptionError
from onnxsal.feeds import Extra
from onnxsal.runner import Runner
from onnxsal.saliency_graph import GraphSpec
from onnxsal.targets import ATTRIBUTION, SCORE, TARGET_USED, UNIT_SCORES, Lookup, Target


@dataclass
class Explanation:
    """An attribution and what it explains, sample by sample."""

    attribution: np.ndarray
    score: np.ndarray  # (N,) the explained score of each sample
    target: np.ndarray  # (N,) the index explained ((N, T) for a sequence; -1: none)
    unit_scores: np.ndarray | None  # (N, K) every candidate's score (the logits, for classes)
    method: str = "vanilla"
    extras: dict[str, Any] = field(default_factory=dict)
    kind: str = "class"  # the target's kind (its `kind`: "class", "region", "step"...)
    activation: str | None = None  # the final activation explained through ("softmax"...)


# Samples per onnxruntime run unless a caller says otherwise. The gradient graph keeps every
# gate's mask of its run, so memory grows with the run; EfficientNet-Lite0, 64 pictures:
# 2.15 GB in one run, 1.29 GB in runs of 32, 0.88 GB in runs of 16, at the same speed.
RUN_BATCH = 16


@dataclass
class Request:
    """One explain() call, validated: the batch and what to explain about it.

    `x` is what the gradient is taken with respect to: the model input, or the
    values of the tensor `wrt` (an embedding, any layer), the model's inputs
    then being fed through `inputs`.
    """

    x: np.ndarray
    target: Target
    lookup: Lookup  # facts of the tensors targets name, measured on this input
    layer: str | None = None  # the layer of methods that own one (Grad-CAM)
    batch_size: int | None = RUN_BATCH
    inputs: Extra = field(default_factory=dict)
    layout: str | None = None
    wrt: str | None = None
    # maps a baseline given as the model's input to `wrt`'s values for this request
    to_wrt: Callable[[Any, Request], np.ndarray] | None = None

    @property
    def n(self) -> int:
        return self.x.shape[0]

    def slice(self, start: int, stop: int) -> Request:
        """Samples start..stop of the request (targets and batched inputs alike)."""
        inputs = feeds.take(self.inputs, start, stop)
        return replace(
            self, x=self.x[start:stop], target=self.target.slice(start, stop), inputs=inputs
        )

    def with_x(self, x: np.ndarray, repeats: int = 1, target: Target | None = None) -> Request:
        """The same request on another batch: each sample repeated `repeats` times."""
        inputs = feeds.repeat(self.inputs, repeats)
        chosen = target if target is not None else self.target.repeat(repeats)
        return replace(self, x=x, target=chosen, inputs=inputs)


def sample_rngs(x: np.ndarray, seed: int | None) -> list[np.random.Generator]:
    """One random stream per sample, seeded by `seed` and the sample's own values: what a
    sample draws never depends on the other samples of its batch, nor on its place there
    (a folder explained in parts, or resumed, gives the same maps). seed=None: fresh."""
    if seed is None:
        return [np.random.default_rng() for _ in range(len(x))]
    return [
        np.random.default_rng([seed, zlib.crc32(np.ascontiguousarray(sample).tobytes())])
        for sample in x
    ]


def positive_int(value: Any, what: str) -> int:
    """An option that counts something (samples, steps, masks): an int >= 1."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise OptionError(f"{what} must be a positive int; got {value!r}.")
    if value < 1:
        raise OptionError(f"{what} must be a positive int; got {value}.")
    return int(value)


def non_negative(value: Any, what: str) -> float:
    """An option that measures something (a noise level, a blur): a finite number >= 0."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise OptionError(f"{what} must be a number >= 0; got {value!r}.")
    if not np.isfinite(value) or value < 0:
        raise OptionError(f"{what} must be a finite number >= 0; got {value}.")
    return float(value)


class Method:
    """Base class: subclasses set `name`, `options` and implement `explain`."""

    name: ClassVar[str] = ""
    options: ClassVar[frozenset[str]] = frozenset()
    # Whether `layer=` names the method's own layer (Grad-CAM) instead of a unit's layer.
    layer_is_own: ClassVar[bool] = False
    # Whether the method needs gradients (False: it runs on any model onnxruntime runs).
    needs_gradient: ClassVar[bool] = True
    # Whether x may stand for a layer (wrt=): not for methods that read x as an image.
    takes_wrt: ClassVar[bool] = True
    # Whether a map's sign means something (drawn diverging, white at zero) or only its size.
    signed: ClassVar[bool] = False

    def explain(self, runner: Runner, req: Request, **options: Any) -> Explanation:
        raise NotImplementedError


def _spec(req: Request, target: Target, **fields: Any) -> GraphSpec:
    return GraphSpec(target.form(req.lookup), wrt=req.wrt, **fields)


def gradients(
    runner: Runner,
    req: Request,
    *,
    modifier: str = "vanilla",
    layer_gradient: str | None = None,
    bias_maps: bool = False,
    target: Target | None = None,
) -> tuple[Explanation, dict[str, np.ndarray]]:
    """Run one gradient graph for the request; return the Explanation and all outputs.

    `target` (already fixed, say) overrides `req.target`.
    """
    target = target if target is not None else req.target
    spec = _spec(req, target, modifier=modifier, layer_gradient=layer_gradient, bias_maps=bias_maps)
    out = runner.execute(spec, req.x, target.feeds(req.n, req.lookup), req.batch_size, req.inputs)
    activations = runner.peeled(spec)
    return explanation(target, out, ATTRIBUTION, activations), out


def explanation(
    target: Target, out: Mapping[str, np.ndarray], key: str, activations: tuple
) -> Explanation:
    """The Explanation of a graph run: `out[key]` as the attribution."""
    n = out[SCORE].shape[0]
    chosen = out.get(TARGET_USED)
    return Explanation(
        out[key],
        out[SCORE],
        chosen if chosen is not None else np.full(n, -1, np.int64),
        out.get(UNIT_SCORES),
        kind=target.kind,
        activation=activations[0] if len(set(activations)) == 1 else None,
    )


def resolve_targets(runner: Runner, req: Request) -> Target:
    """The target with every top-1 made explicit on req.x.

    Methods that run the model on other inputs than x (noisy copies, paths,
    occluded copies) must fix the target first: top-1 means x's top-1.
    """
    target = req.target
    if not target.picks_top:
        return target
    spec = _spec(req, target, backward=False)
    feeds = target.feeds(req.n, req.lookup)
    out = runner.execute(spec, req.x, feeds, req.batch_size, req.inputs, outputs=[TARGET_USED])
    return target.fixed(out[TARGET_USED])


def explained_activation(runner: Runner, req: Request, target: Target) -> str | None:
    """The final activation the target's score steps over (for methods that run scores
    only: the summary turns candidates into probabilities through it)."""
    peeled = runner.graph(_spec(req, target, backward=False)).peeled
    return peeled[0] if len(set(peeled)) == 1 else None


def scores(runner: Runner, req: Request, target: Target | None = None) -> np.ndarray:
    """The explained score of each sample of req.x (forward only)."""
    target = target if target is not None else req.target
    spec = _spec(req, target, backward=False)
    feeds = target.feeds(req.n, req.lookup)
    return runner.execute(spec, req.x, feeds, req.batch_size, req.inputs, outputs=[SCORE])[SCORE]


def sample_groups(req: Request, copies: int):
    """Consecutive (start, stop, sub-request) groups of samples, each small enough that its
    `copies` expanded copies fill about one batch: memory stays bounded for any n."""
    group = max(1, (req.batch_size or req.n * copies) // copies)
    for start in range(0, req.n, group):
        stop = min(start + group, req.n)
        yield start, stop, req.slice(start, stop)
