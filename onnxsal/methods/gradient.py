"""The raw gradient through a backprop modifier: vanilla, guided backprop, deconvnet."""

from __future__ import annotations

from onnxsal.methods.base import Explanation, Method, Request, gradients
from onnxsal.runner import Runner


class Gradient(Method):
    """d score / d x with the modifier's backward rule at rectifier gates."""

    signed = False  # its sign flips from pixel to pixel; read, as the field does, by |g|

    def __init__(self, modifier: str):
        self.modifier = modifier
        self.name = modifier  # type: ignore[misc]  (one instance per modifier name)

    def explain(self, runner: Runner, req: Request, **options) -> Explanation:
        result, _ = gradients(runner, req, modifier=self.modifier)
        result.method = self.name
        return result
