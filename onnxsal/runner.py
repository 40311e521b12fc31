"""Runs compiled saliency graphs: the graph cache, sessions, and batching.

Batches are cut into chunks of `batch_size` samples so memory stays bounded;
a model with a fixed batch size gets exactly that many samples per run (the
last chunk is padded by repeating its last sample, and the padding dropped).
Models with control flow or recurrent ops get their gradient graphs from the
model as it runs on the input at hand (see graph.specialise), one variant per
kind of input.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxsal import fastest_runtime, feeds, openvino_runtime, runtime
from onnxsal.errors import InputError, OnnxsalError, first_line
from onnxsal.feeds import Extra
from onnxsal.graph.layers import LayerIndex
from onnxsal.graph.specialise import Specialised, input_key, needs_specialising, specialise
from onnxsal.graph.values import with_outputs
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
        layers: LayerIndex | None = None,
    ):
        self.model = model  # the normalised model, for graph queries (never edited)
        self.layers = layers or LayerIndex(model)  # its layer names, built once
        self.facts = facts
        self.fixed_batch = fixed_batch
        self.requested = list(providers)
        self.active: list[str] | None = None
        self.options = options
        self._graphs: dict[tuple, SaliencyGraph] = {}
        self._peeled: dict[GraphSpec, tuple[str | None, ...]] = {}
        self._readers: dict[tuple[str, ...], Any] = {}
        self.specialising = needs_specialising(model)
        self._variants: dict[tuple, Specialised] = {}
        # a runner for new weights (with_weights): the values, and the runner whose graphs
        # it takes with them written in
        self.weights: dict[str, np.ndarray] = {}
        self.source: Runner | None = None

    def with_weights(self, values: Mapping[str, np.ndarray]) -> Runner | None:
        """A runner for the same model with some initializers' values replaced. It takes
        this runner's graphs whose build read none of them (a gradient graph keeps weights
        as weights) with the new values written in, without building them again; graphs
        that folded them in (LRP's) are rebuilt. None for models rewritten per input."""
        if self.specialising:
            return None
        twin = Runner(
            self.model, self.facts, self.fixed_batch, self.requested, self.options, self.layers
        )
        twin.weights = {k: np.ascontiguousarray(v) for k, v in values.items()}
        twin.source = self
        return twin

    @functools.cached_property
    def _patched_facts(self) -> ModelFacts:
        """The model with the new weights written in, for graphs that read them (made once
        for all of them)."""
        proto = onnx.ModelProto()
        proto.ParseFromString(self.facts.base)
        return ModelFacts(self._patched(proto).SerializeToString(), self.facts.input_name)

    def _patched(self, proto: onnx.ModelProto) -> onnx.ModelProto:
        """`proto` (edited in place) with the new weights for its initializers."""
        for tensor in proto.graph.initializer:
            if tensor.name in self.weights:
                new = onnx.numpy_helper.from_array(self.weights[tensor.name], tensor.name)
                tensor.CopyFrom(new)
        return proto

    def graph(self, spec: GraphSpec, variant: Specialised | None = None) -> SaliencyGraph:
        """The compiled graph of `spec` (from `variant`, the model as it runs on an input)."""
        key = (spec, variant.decisions if variant is not None else None)
        if key not in self._graphs and self.source is not None:
            original = self.source.graph(spec)
            if original.reads.isdisjoint(self.weights):
                model = onnx.ModelProto()
                model.CopyFrom(original.model)
                self._graphs[key] = replace(original, model=self._patched(model), session=None)
            else:
                self._graphs[key] = build(self._patched_facts, spec)
            self._peeled[spec] = self._graphs[key].peeled
        if key not in self._graphs:
            facts = (
                self.facts if variant is None else ModelFacts(variant.model, self.facts.input_name)
            )
            self._graphs[key] = build(facts, spec)
            self._peeled[spec] = self._graphs[key].peeled
        return self._graphs[key]

    def peeled(self, spec: GraphSpec) -> tuple[str | None, ...]:
        """The activations `spec`'s score steps over (the same in every variant)."""
        return self._peeled[spec]

    def variant(self, x: np.ndarray, extra: Extra | None = None) -> Specialised | None:
        """The model specialised for a run on x (None when it needs none). Control flow may
        read the batch size too, so x is the batch as it will run."""
        if not self.specialising:
            return None
        extra = extra or {}
        key = input_key(x, extra, self.facts.input_name)
        if key not in self._variants:
            made = specialise(
                self.model,
                self.facts.input_name,
                {self.facts.input_name: x, **feeds.arrays(extra)},
                runtime.run_named,
            )
            same = [v for v in self._variants.values() if v.decisions == made.decisions]
            self._variants[key] = same[0] if same else made
        return self._variants[key]

    def _open(self, model_bytes: bytes) -> Any:
        """A session of the chosen runtime: onnxruntime, OpenVINO, or the faster of the two."""
        threads = getattr(self.options, "intra_op_num_threads", 0) or 0
        if self.requested == [runtime.OPENVINO]:
            return openvino_runtime.Session(model_bytes, threads)
        if self.requested == [runtime.FASTEST]:
            return fastest_runtime.Session(model_bytes, self.options, threads)
        return runtime.session(model_bytes, self.requested, self.options)

    def _session(self, g: SaliencyGraph) -> Any:
        if g.session is None:
            g.session = self._open(g.model.SerializeToString())
            self.active = g.session.get_providers()
        return g.session

    def execute(
        self,
        spec: GraphSpec,
        x: np.ndarray,
        per_sample: Mapping[str, np.ndarray],
        batch_size: int | None,
        extra_inputs: Extra | None = None,
        outputs: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run `spec` on x (N first) with per-sample feeds; outputs concatenated over N."""
        extra = extra_inputs or {}
        if not (self.specialising and spec.backward):
            g = self.graph(spec)
            names = self._names(g, outputs)
            return self._chunks(
                self._session(g), g.input_name, x, per_sample, batch_size, extra, names
            )
        parts = []  # one variant per chunk: its control flow may read the chunk's size
        for start, stop, pad in self._spans(x.shape[0], batch_size):
            chunk_x = feeds.pad(x[start:stop], pad)
            chunk_extra = {
                k: (v if axis is None else feeds.pad(v, pad, axis), axis)
                for k, (v, axis) in feeds.take(extra, start, stop).items()
            }
            chunk_feeds = {k: feeds.pad(v[start:stop], pad) for k, v in per_sample.items()}
            g = self.graph(spec, self.variant(chunk_x, chunk_extra))
            names = self._names(g, outputs)
            out = self._chunks(
                self._session(g), g.input_name, chunk_x, chunk_feeds, None, chunk_extra, names
            )
            parts.append({k: v[: stop - start] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}

    @staticmethod
    def _names(g: SaliencyGraph, outputs: Sequence[str] | None) -> list[str]:
        return list(outputs) if outputs is not None else [o.name for o in g.model.graph.output]

    def _spans(self, n: int, batch_size: int | None):
        """(start, stop, padding) of each run: fixed-batch models get exactly their batch."""
        step = self.fixed_batch or batch_size or n
        for start in range(0, n, step):
            stop = min(start + step, n)
            yield start, stop, (step - (stop - start) if self.fixed_batch else 0)

    def values(
        self,
        names: Sequence[str],
        x: np.ndarray,
        extra_inputs: Extra | None = None,
        batch_size: int | None = None,
        batch_axes: Mapping[str, int] | None = None,
    ) -> dict[str, np.ndarray]:
        """The forward values of any tensors for x, concatenated along each one's batch axis
        (`batch_axes`, default 0); without batch_size, x runs as one batch."""
        key = tuple(names)
        if key not in self._readers:
            proto = self._patched(with_outputs(self.model, names))
            self._readers[key] = self._open(proto.SerializeToString())
        return self._chunks(
            self._readers[key],
            self.facts.input_name,
            x,
            {},
            batch_size,
            extra_inputs or {},
            list(names),
            batch_axes or {},
        )

    def _chunks(
        self,
        session: Any,
        input_name: str,
        x: np.ndarray,
        per_sample: Mapping[str, np.ndarray],
        batch_size: int | None,
        extra: Extra,
        names: list[str],
        batch_axes: Mapping[str, int] | None = None,
    ) -> dict[str, np.ndarray]:
        axes = batch_axes or {}
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for start, stop, pad in self._spans(x.shape[0], batch_size):
            feed = {input_name: feeds.pad(x[start:stop], pad)}
            for key, value in per_sample.items():
                feed[key] = feeds.pad(value[start:stop], pad)
            for key, (value, axis) in feeds.take(extra, start, stop).items():
                feed[key] = value if axis is None else feeds.pad(value, pad, axis)
            try:
                results = session.run(names, feed)
                self.active = session.get_providers()  # "fastest" knows after its first run
            except OnnxsalError:
                raise
            except Exception as exc:  # the runtime's own errors: one line, the input blamed
                raise InputError(
                    f"{_runtime_name(session)} could not run the model on this input (batch of "
                    f"{stop - start}, shape {list(x.shape[1:])} per sample): {first_line(exc)}"
                ) from exc
            for name, value in zip(names, results):
                axis = axes.get(name, 0)
                parts[name].append(np.take(value, range(stop - start), axis=axis) if pad else value)
        return {
            name: chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=axes.get(name, 0))
            for name, chunks in parts.items()
        }


def _runtime_name(session: Any) -> str:
    return "OpenVINO" if runtime.OPENVINO in session.get_providers() else "onnxruntime"
