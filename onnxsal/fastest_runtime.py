"""`providers="fastest"`: onnxruntime or OpenVINO, whichever runs a graph faster.

Which runtime wins depends on the model (OpenVINO 1.4-1.8x faster on depthwise
and 1x1 convolution nets, slower on ResNet-style ones: see the README's speed
section), so it is measured, per graph, on the first batch: each runtime runs
it once to warm up (allocations, OpenVINO's compile) and once timed; the
faster one's timed result is returned and that runtime runs everything after.
A graph OpenVINO cannot read stays on onnxruntime.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from onnxsal import openvino_runtime, runtime

FASTEST = runtime.FASTEST


class Session:
    """An onnxruntime-like session that picks its runtime on the first run."""

    def __init__(self, model_bytes: bytes, options: Any = None, threads: int = 0):
        self._makers: dict[str, Callable[[], Any]] = {
            "onnxruntime": lambda: runtime.session(model_bytes, [runtime.CPU], options),
            runtime.OPENVINO: lambda: openvino_runtime.Session(model_bytes, threads),
        }
        self.chosen: Any = None
        self.seconds: dict[str, float] = {}  # the timed run of each runtime that could run it

    def get_providers(self) -> list[str]:
        return self.chosen.get_providers() if self.chosen is not None else [FASTEST]

    def run(self, names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list:
        if self.chosen is not None:
            return self.chosen.run(names, feed)
        best: tuple[float, Any, list] | None = None
        for label, make in self._makers.items():
            try:
                session = make()
                session.run(names, feed)  # warm up
                started = time.perf_counter()
                result = session.run(names, feed)
            except Exception:
                if label == "onnxruntime":
                    raise  # the runner words it
                continue  # a graph OpenVINO cannot read or run: onnxruntime it is
            seconds = self.seconds[label] = time.perf_counter() - started
            if best is None or seconds < best[0]:
                best = (seconds, session, result)
        assert best is not None
        self.chosen = best[1]
        return best[2]
