"""`providers="fastest"`: onnxruntime or OpenVINO, whichever runs a graph faster.

Which runtime wins depends on the model (OpenVINO 1.4-1.8x faster on depthwise
and 1x1 convolution nets, slower on ResNet-style ones: see the README's speed
section), so it is measured, per graph, on the first batch: each runtime runs
it once to warm up (allocations, OpenVINO's compile), then three timed runs,
the fastest counting. OpenVINO takes the graph only when it is at least 10%
faster (one run's noise on a busy machine is about that) and its outputs are
finite and agree with onnxruntime's (OpenVINO sizes some ceil_mode pools
differently); a graph OpenVINO cannot read or run stays on onnxruntime.
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
        self._makers: dict[str, Callable[[], Any]] | None = {
            "onnxruntime": lambda: runtime.session(model_bytes, [runtime.CPU], options),
            runtime.OPENVINO: lambda: openvino_runtime.Session(model_bytes, threads),
        }
        self.chosen: Any = None
        self.seconds: dict[str, float] = {}  # the best timed run of each runtime that ran it

    def get_providers(self) -> list[str]:
        return self.chosen.get_providers() if self.chosen is not None else [FASTEST]

    def run(self, names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list:
        if self.chosen is not None:
            return self.chosen.run(names, feed)
        assert self._makers is not None
        reference = self._timed("onnxruntime", self._makers["onnxruntime"], names, feed)
        assert reference is not None  # onnxruntime's own errors reach the runner, which words them
        self.chosen, result = reference
        try:
            other = self._timed(runtime.OPENVINO, self._makers[runtime.OPENVINO], names, feed)
        except Exception:  # a graph OpenVINO cannot read or run: onnxruntime it is
            other = None
        if (
            other is not None
            and self.seconds[runtime.OPENVINO] < (1 - MARGIN) * self.seconds["onnxruntime"]
            and _agree(other[1], result)
        ):
            self.chosen, result = other
        self._makers = None  # the model's bytes are not needed any more
        return result

    def _timed(self, label: str, make: Callable[[], Any], names, feed) -> tuple[Any, list]:
        session = make()
        session.run(names, feed)  # warm up
        times = []
        for _ in range(TIMED_RUNS):
            started = time.perf_counter()
            result = session.run(names, feed)
            times.append(time.perf_counter() - started)
        self.seconds[label] = min(times)
        return session, result


MARGIN = 0.1  # OpenVINO must be this much faster to take the graph
TIMED_RUNS = 3


def _agree(got: list, want: list) -> bool:
    """Outputs of two runtimes equal up to float32 noise (integer outputs exactly)."""
    for a, b in zip(got, want):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        if a.dtype.kind != "f":
            if not np.array_equal(a, b):
                return False
            continue
        if not np.isfinite(a).all() and not np.array_equal(np.isfinite(a), np.isfinite(b)):
            return False
        scale = np.linalg.norm(np.nan_to_num(b.astype(np.float64)))
        diff = np.linalg.norm(np.nan_to_num(a.astype(np.float64) - b.astype(np.float64)))
        if diff > 1e-3 * max(scale, 1e-30):
            return False
    return True
