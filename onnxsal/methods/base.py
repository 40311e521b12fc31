"""What every saliency method shares: the request, the result, targets, and gradients.

A method is a small class with a `name`, the keyword `options` it accepts,
and `explain(runner, request, **options) -> Explanation`. Methods compose
`gradients(...)`, which runs one compiled graph over a (possibly expanded)
batch and returns every output it asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from onnxsal.errors import TargetError
from onnxsal.runner import Runner
from onnxsal.saliency_graph import GraphSpec
from onnxsal.targets import TARGET_INPUT, WEIGHTS_INPUT


@dataclass
class Explanation:
    """An attribution and what it explains, sample by sample."""

    attribution: np.ndarray
    score: np.ndarray  # (N,) the explained score of each sample
    target: np.ndarray  # (N,) the output index (or unit) explained; -1 for weighted targets
    unit_scores: np.ndarray | None  # (N, C) every unit's score (the logits, for outputs)
    method: str = "vanilla"
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Request:
    """One explain() call, validated: the batch and what to explain about it."""

    x: np.ndarray
    target: Any = None  # None, int, per-sample ints, or {index or (layer, unit): weight}
    layer: str | None = None
    unit: Any = None
    channel_axis: int | None = None
    batch_size: int | None = 32
    inputs: Mapping[str, tuple[np.ndarray, bool]] = field(default_factory=dict)
    layout: str | None = None

    @property
    def n(self) -> int:
        return self.x.shape[0]

    def slice(self, start: int, stop: int) -> Request:
        """Samples start..stop of the request (targets and batched inputs alike)."""
        target = self.target
        if target is not None and not isinstance(target, (int, np.integer, Mapping)):
            target = np.asarray(target)[start:stop]
        inputs = {k: (v[start:stop] if b else v, b) for k, (v, b) in self.inputs.items()}
        return replace(self, x=self.x[start:stop], target=target, inputs=inputs)

    def with_x(self, x: np.ndarray, repeats: int = 1, target: Any = None) -> Request:
        """The same request on another batch: each sample repeated `repeats` times."""
        inputs = {
            k: (np.repeat(v, repeats, axis=0) if batched else v, batched)
            for k, (v, batched) in self.inputs.items()
        }
        return replace(self, x=x, target=target, inputs=inputs)


class Method:
    """Base class: subclasses set `name`, `options` and implement `explain`."""

    name: ClassVar[str] = ""
    options: ClassVar[frozenset[str]] = frozenset()
    # Whether `layer=` names the explained tensor (unit targets) or the method's own layer.
    layer_is_own: ClassVar[bool] = False

    def explain(self, runner: Runner, req: Request, **options: Any) -> Explanation:
        raise NotImplementedError


def _index_array(spec: Any, n: int, what: str) -> np.ndarray:
    if spec is None:
        return np.full((n,), -1, dtype=np.int64)
    if isinstance(spec, (bool, np.bool_)):
        raise TargetError(f"{what} must be an integer index, not a bool.")
    if isinstance(spec, (int, np.integer)):
        values = np.full((n,), int(spec), dtype=np.int64)
    else:
        try:
            arr = np.asarray(spec)
        except Exception as exc:
            raise TargetError(f"{what} must be an int or a sequence of ints ({exc}).") from exc
        if arr.dtype.kind not in "iu" or arr.ndim != 1:
            raise TargetError(
                f"{what} must be an int, a 1-D sequence of ints (one per sample) or a dict "
                f"{{index: weight}}; got {arr.dtype} with shape {arr.shape}."
            )
        if arr.shape[0] != n:
            raise TargetError(f"{what} has {arr.shape[0]} entries for {n} samples.")
        values = arr.astype(np.int64)
    if (values < 0).any():
        raise TargetError(f"{what} indices are 0-based and must be >= 0; got {values.min()}.")
    return values


def _weighted(runner: Runner, req: Request, spec: GraphSpec) -> tuple[GraphSpec, dict]:
    """GraphSpec and `weights_k` feeds for a dict target {index | (layer, unit): weight}."""
    groups: dict[str | None, dict[int, float]] = {}
    for key, weight in req.target.items():
        layer, unit = key if isinstance(key, tuple) else (req.layer, key)
        if isinstance(unit, (bool, np.bool_)) or not isinstance(unit, (int, np.integer)):
            raise TargetError(f"Target key {key!r}: the unit must be an int (or (layer, int)).")
        if unit < 0:
            raise TargetError(f"Target key {key!r}: indices are 0-based and must be >= 0.")
        groups.setdefault(layer, {})[int(unit)] = float(weight)
    explained = tuple(groups)
    spec = replace(spec, explained=explained, weighted=True)
    units = list(runner.graph(spec).units)
    for i, layer in enumerate(explained):
        if units[i] is None:  # learn the unit count from one forward run
            probe = replace(
                spec, explained=(layer,), weighted=False, backward=False, wrt=None, bias_maps=False
            )
            out = runner.execute(
                probe,
                req.x[:1],
                {TARGET_INPUT: np.full(1, -1, np.int64)},
                1,
                {k: (v[:1] if b else v, b) for k, (v, b) in req.inputs.items()},
            )
            units[i] = out["unit_scores"].shape[1]
    feeds = {}
    for i, layer in enumerate(explained):
        w = np.zeros((req.n, units[i]), dtype=req.x.dtype)
        for unit, weight in groups[layer].items():
            if unit >= units[i]:
                raise TargetError(
                    f"Target unit {unit} is out of range: "
                    f"'{layer or 'the output'}' has {units[i]} units."
                )
            w[:, unit] = weight
        feeds[f"{WEIGHTS_INPUT}_{i}"] = w
    return spec, feeds


def gradients(
    runner: Runner,
    req: Request,
    *,
    modifier: str = "vanilla",
    wrt: str | None = None,
    bias_maps: bool = False,
    targets: np.ndarray | None = None,
) -> tuple[Explanation, dict[str, np.ndarray]]:
    """Run one gradient graph for the request; return the Explanation and all outputs.

    `targets` (explicit per-sample indices) overrides `req.target`.
    """
    what = "unit" if req.layer is not None else "target"
    spec = GraphSpec(
        modifier=modifier,
        explained=(req.layer,),
        channel_axis=req.channel_axis,
        wrt=wrt,
        bias_maps=bias_maps,
    )
    if targets is None and isinstance(req.target, Mapping):
        spec, feeds = _weighted(runner, req, spec)
    else:
        wanted = targets if targets is not None else _index_array(req.target, req.n, what)
        units = runner.graph(spec).units[0]
        if units is not None and (wanted >= units).any():
            raise TargetError(
                f"{what} {int(wanted.max())} is out of range: "
                f"'{req.layer or runner.facts.output_name}' has {units} units (0..{units - 1})."
            )
        feeds = {TARGET_INPUT: wanted}
    out = runner.execute(spec, req.x, feeds, req.batch_size, req.inputs)
    if spec.weighted:
        result = Explanation(out["attribution"], out["score"], np.full(req.n, -1, np.int64), None)
    else:
        used, units_seen = out["target_index"], out["unit_scores"]
        if (used >= units_seen.shape[1]).any():
            raise TargetError(
                f"{what} {int(used.max())} is out of range: "
                f"'{req.layer or runner.facts.output_name}' has {units_seen.shape[1]} units "
                f"(0..{units_seen.shape[1] - 1})."
            )
        result = Explanation(out["attribution"], out["score"], used, units_seen)
    return result, out


def resolve_targets(runner: Runner, req: Request) -> np.ndarray | None:
    """Explicit per-sample indices (top-1 computed on req.x), or None for dict targets.

    Methods that run the model on other inputs than x (noisy copies, interpolation
    paths) must fix the target first: top-1 means x's top-1.
    """
    if isinstance(req.target, Mapping):
        return None
    what = "unit" if req.layer is not None else "target"
    wanted = _index_array(req.target, req.n, what)
    if (wanted >= 0).all():
        return wanted
    spec = GraphSpec(explained=(req.layer,), channel_axis=req.channel_axis, backward=False)
    out = runner.execute(spec, req.x, {TARGET_INPUT: wanted}, req.batch_size, req.inputs)
    return out["target_index"]


def scores(runner: Runner, req: Request, targets: np.ndarray | None) -> np.ndarray:
    """The explained score of each sample of req.x (forward only)."""
    spec = GraphSpec(explained=(req.layer,), channel_axis=req.channel_axis, backward=False)
    if targets is None:
        spec, feeds = _weighted(runner, req, spec)
        spec = replace(spec, backward=False)
    else:
        feeds = {TARGET_INPUT: targets}
    return runner.execute(spec, req.x, feeds, req.batch_size, req.inputs)["score"]


def sample_groups(req: Request, copies: int):
    """Consecutive (start, stop, sub-request) groups of samples, each small enough that its
    `copies` expanded copies fill about one batch: memory stays bounded for any n."""
    group = max(1, (req.batch_size or req.n * copies) // copies)
    for start in range(0, req.n, group):
        stop = min(start + group, req.n)
        yield start, stop, req.slice(start, stop)


def repeat_targets(targets: np.ndarray | None, repeats: int, req: Request) -> Any:
    """Targets for a batch in which each sample appears `repeats` times in a row."""
    if targets is None:
        return req.target  # a dict applies to every copy alike
    return np.repeat(targets, repeats)
