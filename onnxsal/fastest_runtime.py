"""`providers="fastest"`: onnxruntime or OpenVINO, whichever runs a graph faster.

Which runtime wins depends on the model (OpenVINO 1.4-1.8x faster on depthwise
and 1x1 convolution nets, slower on ResNet-style ones: see the README's speed
section), so it is measured, per graph, on the first batch: each runtime runs
it once to warm up (allocations, OpenVINO's compile), then three timed runs,
the fastest counting. OpenVINO takes the graph only when it is at least 10%
faster (one run's noise on a busy machine is about that) and its outputs agree
with onnxruntime's; each later batch shape is judged the same way once, and a
shape OpenVINO cannot run, or runs differently, sends the graph back to
onnxruntime for good.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from onnxsal import openvino_runtime, runtime


class Session:
    """An onnxruntime-like session that picks its runtime on the first run."""

    def __init__(self, model_bytes: bytes, options: Any = None, threads: int = 0):
        self._makers: dict[str, Callable[[], Any]] | None = {
            "onnxruntime": lambda: runtime.session(model_bytes, [runtime.CPU], options),
            runtime.OPENVINO: lambda: openvino_runtime.Session(model_bytes, threads),
        }
        self.chosen: Any = None
        self.seconds: dict[str, float] = {}  # the best timed run of each runtime that ran it
        self._reference: Any = None  # onnxruntime's session: the judge of OpenVINO's outputs
        self._checked: set[tuple] = set()  # feed shapes on which OpenVINO agreed

    def get_providers(self) -> list[str]:
        return self.chosen.get_providers() if self.chosen is not None else [runtime.FASTEST]

    def run(self, names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list:
        if self.chosen is None:
            return self._choose(names, feed)
        if self.chosen is self._reference:
            return self.chosen.run(names, feed)
        shapes = _shapes(feed)
        try:
            result = self.chosen.run(names, feed)
        except Exception:  # OpenVINO cannot run this shape: onnxruntime from now on
            self.chosen = self._reference
            return self.chosen.run(names, feed)
        if shapes not in self._checked:  # each new shape is judged once (ceil_mode sizes...)
            want = self._reference.run(names, feed)
            if not _agree(result, want):
                self.chosen = self._reference
                return want
            self._checked.add(shapes)
        return result

    def _choose(self, names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list:
        assert self._makers is not None
        self._reference, result = self._timed(
            "onnxruntime", self._makers["onnxruntime"], names, feed
        )
        self.chosen = self._reference  # onnxruntime's own errors reach the runner, which words them
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
            self._checked.add(_shapes(feed))
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


def _shapes(feed: Mapping[str, np.ndarray]) -> tuple:
    return tuple(sorted((k, np.shape(v)) for k, v in feed.items()))


MARGIN = 0.1  # OpenVINO must be this much faster to take the graph
TIMED_RUNS = 3


def _agree(got: list, want: list) -> bool:
    """Outputs of two runtimes alike: the same shapes, types and non-finite entries, integer
    outputs equal, float ones within 1e-3 relative L2 (float32 noise near kinks is ~2e-4)."""
    if len(got) != len(want):
        return False
    for a, b in zip(got, want):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.kind != "f":
            if not np.array_equal(a, b):
                return False
            continue
        finite = np.isfinite(a)
        if not np.array_equal(finite, np.isfinite(b)):
            return False
        if not np.array_equal(a[~finite], b[~finite], equal_nan=True):
            return False
        a64, b64 = a[finite].astype(np.float64), b[finite].astype(np.float64)
        if np.linalg.norm(a64 - b64) > 1e-3 * max(float(np.linalg.norm(b64)), 1e-30):
            return False
    return True
