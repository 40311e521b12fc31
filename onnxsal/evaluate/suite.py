"""Several methods judged by several metrics on one batch: what `onnxsal evaluate` runs.

Each metric is one entry of METRICS: how to compute it for every method's
maps, its headline number per sample, and which way is better. Perturbation
metrics also judge a random map (the `random` row), so every number has
something to beat; the randomisation check shares each randomised model
between the methods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxsal.errors import OptionError
from onnxsal.evaluate.perturbation import deletion, insertion
from onnxsal.evaluate.randomization import Randomization, randomization
from onnxsal.evaluate.relevance import Positions, method_relevance, random_maps
from onnxsal.evaluate.road import SHARES, road
from onnxsal.evaluate.scoring import explained_classes
from onnxsal.evaluate.similarity import MEASURES
from onnxsal.evaluate.statistics import complexity, max_sensitivity, sparseness
from onnxsal.explainer import Explainer

RANDOM = "random"  # the baseline's row


@dataclass(frozen=True)
class Settings:
    """Everything that shapes the numbers (recorded with them)."""

    steps: int = 224
    substrate: str = "zeros"
    shares: tuple[float, ...] = SHARES
    noise: float = 0.01
    order: str = "cascading"
    sensitivity_samples: int = 200
    radius: float = 0.2
    seed: int = 0
    batch_size: int | None = 32


@dataclass
class Batch:
    """One batch under evaluation: the inputs, the classes, each method's maps."""

    ex: Explainer
    x: np.ndarray
    classes: np.ndarray
    methods: list[str]
    maps: dict[str, np.ndarray]  # method (and "random") -> relevance (N, *positions)
    settings: Settings
    options: dict[str, dict[str, Any]]
    randomized: Randomization | None = None


@dataclass(frozen=True)
class Metric:
    name: str
    better: str  # "lower" or "higher"
    judges_random: bool  # whether the random map gets a row
    run: Callable[[Batch, str], list[dict]]  # per sample: {"value": headline, ...curves}
    help: str = ""


def _curve(kind: Callable) -> Callable[[Batch, str], list[dict]]:
    def run(b: Batch, name: str) -> list[dict]:
        s = b.settings
        substrate = s.substrate if kind is deletion else "blur"
        if substrate == "blur" and not Positions.of(b.x, b.ex.layout).spatial:
            substrate = "mean"  # inputs that are not images have no blur
        c = kind(b.ex, b.x, b.maps[name], b.classes, steps=s.steps, substrate=substrate,
                 batch_size=s.batch_size)  # fmt: skip
        return [{"value": float(auc), "curve": c.scores[i].tolist()} for i, auc in enumerate(c.auc)]

    return run


def _road(b: Batch, name: str) -> list[dict]:
    s = b.settings
    r = road(b.ex, b.x, b.maps[name], b.classes, shares=s.shares, noise=s.noise, seed=s.seed,
             batch_size=s.batch_size)  # fmt: skip
    return [
        {"value": float(r.combined[i]), "shares": list(s.shares), "morf": r.morf[i].tolist(),
         "lerf": r.lerf[i].tolist()}
        for i in range(len(b.x))
    ]  # fmt: skip


def _randomization(b: Batch, name: str) -> list[dict]:
    if b.randomized is None:  # one run for every method: the randomised models are shared
        s = b.settings
        b.randomized = randomization(b.ex, b.x, b.methods, b.classes, order=s.order, seed=s.seed,
                                     batch_size=s.batch_size, options=b.options)  # fmt: skip
    r = b.randomized
    m = r.methods.index(name)
    return [
        {"value": _headline(r.scores["spearman_abs"][m, :, i], r.order), "blocks": r.blocks,
         **{measure: r.scores[measure][m, :, i].tolist() for measure in MEASURES}}
        for i in range(len(b.x))
    ]  # fmt: skip


def _headline(similarity: np.ndarray, order: str) -> float:
    """Cascading: the similarity once every block is random; independent: the mean."""
    return float(similarity[-1] if order == "cascading" else np.nanmean(similarity))


def _sensitivity(b: Batch, name: str) -> list[dict]:
    s = b.settings
    worst = max_sensitivity(b.ex, b.x, name, b.classes, n_samples=s.sensitivity_samples,
                            radius=s.radius, seed=s.seed, batch_size=s.batch_size,
                            **b.options[name])  # fmt: skip
    return [{"value": float(v)} for v in worst]


def _statistic(fn: Callable) -> Callable[[Batch, str], list[dict]]:
    return lambda b, name: [{"value": float(v)} for v in fn(b.maps[name])]


METRICS = {
    m.name: m
    for m in (
        Metric("randomization", "lower", False, _randomization,
               "Spearman similarity of |maps| once the weights are random (Adebayo et al.)"),
        Metric("deletion", "lower", True, _curve(deletion),
               "area under the probability as the most relevant pixels are deleted"),
        Metric("insertion", "higher", True, _curve(insertion),
               "area under the probability as the most relevant pixels are restored"),
        Metric("road", "higher", True, _road,
               "ROAD combined score: (LeRF - MoRF) / 2 over 10..90 % removed"),
        Metric("sensitivity", "lower", False, _sensitivity,
               "max-sensitivity: the largest relative change under input noise"),
        Metric("sparseness", "higher", True, _statistic(sparseness), "Gini index of |map|"),
        Metric("complexity", "lower", True, _statistic(complexity), "entropy of |map|"),
    )
}  # fmt: skip
DEFAULT_METRICS = ("randomization", "deletion", "insertion", "road", "sparseness", "complexity")


def parse_metrics(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise OptionError(
            f"Unknown metric {', '.join(map(repr, unknown)) or '(none given)'}; the metrics are: "
            + ", ".join(METRICS)
        )
    return list(dict.fromkeys(names))


def evaluate_batch(
    ex: Explainer,
    x: np.ndarray,
    methods: Sequence[str],
    metrics: Sequence[str] = DEFAULT_METRICS,
    target: Any = None,
    settings: Settings | None = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[dict], Batch]:
    """Per sample: {"class": c, "results": {method or "random": {metric: {...}}}}."""
    s = settings or Settings()
    metrics = parse_metrics(list(metrics))
    opts = {name: dict((options or {}).get(name, {})) for name in methods}
    xs = ex.check_input(x)
    positions = Positions.of(xs, ex.layout)
    classes, _ = explained_classes(ex, xs, target, "logit", s.batch_size)
    maps = {
        name: method_relevance(
            ex.explain(xs, name, classes, batch_size=s.batch_size, **opts[name]), positions, name
        )
        for name in methods
    }
    maps[RANDOM] = random_maps(len(xs), positions, s.seed)
    batch = Batch(ex, xs, classes, list(methods), maps, s, opts)
    rows: list[dict] = [{"class": int(c), "results": {}} for c in classes]
    for metric in metrics:
        spec = METRICS[metric]
        for name in [*methods, *([RANDOM] if spec.judges_random else [])]:
            for row, value in zip(rows, spec.run(batch, name)):
                row["results"].setdefault(name, {})[metric] = value
    return rows, batch
