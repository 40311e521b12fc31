"""Runs compiled saliency graphs: the graph cache, sessions, and batching.

Batches are cut into chunks of `batch_size` samples so memory stays bounded;
a model with a fixed batch size gets exactly that many samples per run (the
last chunk is padded by repeating its last sample, and the padding dropped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxsal import runtime
from onnxsal.graph.layers import LayerIndex
from onnxsal.saliency_graph import GraphSpec, ModelFacts, SaliencyGraph, build


class Runner:
    """Compiles a `GraphSpec` once, then runs it on batches."""

    def __init__(
        self,
        model: ir.Model,
        facts: ModelFacts,
        fixed_batch: int | None,
        providers: Sequence[runtime.ProviderSpec],
        options: Any = None,
    ):
        self.model = model  # the normalised model, for graph queries (never edited)
        self.layers = LayerIndex(model)  # its layer names, built once
        self.facts = facts
        self.fixed_batch = fixed_batch
        self.requested = list(providers)
        self.active: list[str] | None = None
        self.options = options
        self._graphs: dict[GraphSpec, SaliencyGraph] = {}

    def graph(self, spec: GraphSpec) -> SaliencyGraph:
        if spec not in self._graphs:
            self._graphs[spec] = build(self.facts, spec)
        return self._graphs[spec]

    def _session(self, g: SaliencyGraph) -> Any:
        if g.session is None:
            g.session = runtime.session(g.model.SerializeToString(), self.requested, self.options)
            self.active = g.session.get_providers()
        return g.session

    def execute(
        self,
        spec: GraphSpec,
        x: np.ndarray,
        per_sample: Mapping[str, np.ndarray],
        batch_size: int | None,
        extra_inputs: Mapping[str, tuple[np.ndarray, bool]] | None = None,
        outputs: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run `spec` on x (N first) with per-sample feeds; outputs concatenated over N.

        `extra_inputs`: the model's other inputs, (array, batched?) by name.
        """
        g = self.graph(spec)
        session = self._session(g)
        names = list(outputs) if outputs is not None else [o.name for o in g.model.graph.output]
        n = x.shape[0]
        step = self.fixed_batch or batch_size or n
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for start in range(0, n, step):
            stop = min(start + step, n)
            pad = step - (stop - start) if self.fixed_batch else 0
            feed = {self.facts.input_name: _pad(x[start:stop], pad)}
            for key, value in per_sample.items():
                feed[key] = _pad(value[start:stop], pad)
            for key, (value, batched) in (extra_inputs or {}).items():
                feed[key] = _pad(value[start:stop], pad) if batched else value
            for name, value in zip(names, session.run(names, feed)):
                parts[name].append(value[: stop - start])
        return {name: np.concatenate(chunks, axis=0) for name, chunks in parts.items()}


def _pad(a: np.ndarray, count: int) -> np.ndarray:
    """Repeat the last sample `count` times (fills a fixed-batch model's last chunk)."""
    if count <= 0:
        return a
    return np.concatenate([a, np.repeat(a[-1:], count, axis=0)], axis=0)
