"""The score every perturbation metric tracks: the explained class's probability.

Perturbed copies of one sample run through onnxruntime in chunks of
`batch_size`, forward only; the score is the softmax probability of the class
explained on the unperturbed sample (the RISE authors' protocol), or its
logit when asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from onnxsal.errors import OptionError, TargetError
from onnxsal.explainer import Explainer
from onnxsal.graph.load import ModelSource

SCORES = ("probability", "logit")


def explainer_of(model: Explainer | ModelSource) -> Explainer:
    """An Explainer for a model given as one, or as anything Explainer reads; the metrics
    perturb one input, so models that take others are refused here."""
    ex = model if isinstance(model, Explainer) else Explainer(model)
    if ex.other_inputs:
        raise OptionError(
            f"The metrics perturb the model's one input; this model also takes "
            f"{', '.join(ex.other_inputs)}. Evaluate a model with a single input."
        )
    return ex


def class_scores(ex: Explainer, x: np.ndarray, score: str, batch_size: int | None) -> np.ndarray:
    """(N, K) every class's score of the chosen kind."""
    if score == "probability":
        return ex.probabilities(x, batch_size=batch_size)
    if score == "logit":
        return ex.predict(x, batch_size=batch_size).astype(np.float64)
    raise OptionError(f"score must be one of {', '.join(SCORES)}; got {score!r}.")


def explained_classes(
    ex: Explainer, x: np.ndarray, target: Any, score: str, batch_size: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(each sample's class: the target's, or its top class; that class's score)."""
    scores = class_scores(ex, x, score, batch_size)
    n, k = scores.shape
    if target is None:
        classes = scores.argmax(axis=1)
    else:
        given = np.asarray(target)
        if given.dtype.kind not in "iu" or given.ndim > 1 or given.size not in (1, n):
            raise TargetError(
                "The perturbation metrics explain class outputs: target is a class index, "
                f"one per sample, or None for each sample's top class; got {target!r}."
            )
        classes = np.broadcast_to(given.reshape(-1), (n,)).astype(np.int64)
        if (classes < 0).any() or (classes >= k).any():
            raise TargetError(f"Class indices must lie in 0..{k - 1}; got {target!r}.")
    return classes, scores[np.arange(n), classes]


def track(
    ex: Explainer,
    variants: Iterator[np.ndarray],
    cls: int,
    score: str,
    batch_size: int | None,
) -> np.ndarray:
    """The class's score on each perturbed copy, the copies coming in chunks."""
    return np.concatenate(
        [class_scores(ex, chunk, score, batch_size)[:, cls] for chunk in variants]
    )


def chunks(count: int, batch_size: int | None) -> Iterator[tuple[int, int]]:
    step = batch_size or count
    for start in range(0, count, step):
        yield start, min(start + step, count)
