"""Input x gradient (Shrikumar et al. 2016): the gradient weighted by the input itself."""

from __future__ import annotations

from onnxsal.methods.base import Explanation, Method, Request, gradients
from onnxsal.runner import Runner


class InputXGradient(Method):
    name = "input_x_gradient"
    signed = True  # each term x * g adds to the score or takes from it

    def explain(self, runner: Runner, req: Request, **options) -> Explanation:
        result, _ = gradients(runner, req)
        result.attribution = result.attribution * req.x
        result.method = self.name
        return result
