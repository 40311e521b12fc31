"""Layer-wise relevance propagation through a composite of LRP rules (see modifiers.lrp)."""

from __future__ import annotations

from typing import Any

from onnxsal.errors import OptionError
from onnxsal.methods.base import Explanation, Method, Request, gradients
from onnxsal.modifiers.lrp import BOX_COMPOSITE, COMPOSITES, Composite
from onnxsal.runner import Runner

DEFAULT_COMPOSITE = "epsilon_plus_flat"


def composite_key(composite: Any) -> Any:
    """What a GraphSpec carries for a composite: "lrp:NAME", or the Composite itself."""
    if isinstance(composite, Composite):
        return composite
    if isinstance(composite, str) and composite in COMPOSITES:
        return f"lrp:{composite}"
    raise OptionError(
        f"composite must be one of {', '.join([*COMPOSITES, BOX_COMPOSITE])} or a Composite; "
        f"got {composite!r}."
    )


class LRP(Method):
    """Relevance, not a gradient: it starts as the explained score and is redistributed
    layer by layer; conservative rules keep its sum near the score (`conservation_gap`)."""

    name = "lrp"
    options = frozenset({"composite"})
    signed = True  # relevance for the score (red) and against it (blue)

    def explain(self, runner: Runner, req: Request, **options: Any) -> Explanation:
        key = composite_key(options.get("composite", DEFAULT_COMPOSITE))
        result, _ = gradients(runner, req, modifier=key)
        result.method = self.name
        total = result.attribution.reshape(req.n, -1).sum(axis=1, dtype="float64")
        result.extras["conservation_gap"] = total - result.score
        result.extras["composite"] = key if isinstance(key, str) else key.name
        return result
