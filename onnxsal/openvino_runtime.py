"""OpenVINO as a second runtime for the same graphs (`providers=["openvino"]`).

onnxruntime stays the default and the reference; OpenVINO is faster on some
gradient graphs and slower on others (see the README's speed section), so it
is chosen per model by measurement, never assumed. Its ONNX reader needs
static shapes where onnxruntime computes them at run time (the axes of a
ReduceSum taken from a Shape), so each feed shape gets its own compiled model:
the inputs' dims are fixed to the feed's, and onnxruntime's basic graph
optimisations (constant folding, no fused or contrib ops) turn the shape
arithmetic into constants before OpenVINO reads the graph.
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from onnxsal.errors import RuntimeUnavailableError, UnsupportedModelError, first_line
from onnxsal.runtime import CPU, OPENVINO, ort

COMPILED_KEPT = 4  # compiled models kept per graph (a run has one or two batch shapes)


def core() -> Any:
    """OpenVINO's Core (one per process), or an error that says how to install it."""
    global _CORE
    if _CORE is None:
        try:
            import openvino
        except ImportError as exc:
            raise RuntimeUnavailableError(
                "OpenVINO is not installed: pip install 'onnxsal[openvino]'."
            ) from exc
        _CORE = openvino.Core()
    return _CORE


_CORE: Any = None


class Session:
    """An onnxruntime-like session (`run`, `get_providers`) on OpenVINO's CPU plugin."""

    def __init__(self, model_bytes: bytes, threads: int = 0):
        core()  # fail now, not at the first batch, when OpenVINO is missing
        self._model = onnx.load_model_from_string(model_bytes)
        self._threads = threads
        self._compiled: OrderedDict[tuple, Any] = OrderedDict()

    def get_providers(self) -> list[str]:
        return [OPENVINO]

    def run(self, names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list:
        key = tuple(sorted((k, np.shape(v), np.asarray(v).dtype.str) for k, v in feed.items()))
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = self._compile(feed)
            if len(self._compiled) > COMPILED_KEPT:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(key)
        results = compiled(dict(feed))
        by_name = {}
        for port, value in results.items():
            for name in port.get_names():
                by_name[name] = value
        wanted = names or [o.name for o in self._model.graph.output]
        return [np.asarray(by_name[name]) for name in wanted]

    def _compile(self, feed: Mapping[str, np.ndarray]) -> Any:
        with tempfile.TemporaryDirectory(prefix="onnxsal-openvino-") as folder:
            path = os.path.join(folder, "static.onnx")
            _fold_constants(_with_static_inputs(self._model, feed), path)
            try:
                model = core().read_model(path)
                config = {"INFERENCE_PRECISION_HINT": "f32"}  # bf16 on some CPUs otherwise
                if self._threads > 0:
                    config["INFERENCE_NUM_THREADS"] = self._threads
                return core().compile_model(model, "CPU", config)
            except RuntimeError as exc:
                raise UnsupportedModelError(
                    f"OpenVINO cannot run this graph ({_reason(exc)}); use onnxruntime "
                    "(the default providers)."
                ) from exc


def _with_static_inputs(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> bytes:
    """The model with every input's dims fixed to the fed array's (inferred shapes dropped:
    onnxruntime infers them anew for these sizes)."""
    static = onnx.ModelProto()
    static.CopyFrom(model)
    for value in static.graph.input:
        if value.name not in feed:
            continue
        dims = value.type.tensor_type.shape.dim
        for dim, size in zip(dims, np.shape(feed[value.name])):
            dim.Clear()
            dim.dim_value = int(size)
    del static.graph.value_info[:]
    for value in static.graph.output:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.Clear()
    return static.SerializeToString()


def _fold_constants(model_bytes: bytes, path: str) -> None:
    """onnxruntime's basic optimisations written to `path`: with static inputs, every
    Shape-derived value becomes a constant."""
    rt = ort()
    options = rt.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = rt.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = path
    rt.InferenceSession(model_bytes, sess_options=options, providers=[CPU])


def _reason(exc: Exception) -> str:
    """The failed operation of OpenVINO's many-line conversion report, and why."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for k, line in enumerate(lines):
        if line.startswith("--"):
            why = lines[k + 1] if k + 1 < len(lines) else ""
            return f"{line.lstrip('- ').removesuffix(' with a message:')}: {why}"[:300]
    return first_line(exc)
