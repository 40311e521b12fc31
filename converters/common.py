"""What every converter shares: verification, the layer map, metadata, safe writing.

An export is only written after onnxruntime reproduces the framework's output
on a random batch and on a batch of another size; otherwise ConversionError,
and no file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxsal import __version__, metadata, runtime
from onnxsal.errors import OnnxsalError

TWO_GB = 2**31 - 1
DEFAULT_TOLERANCE = 1e-4  # relative L2 between framework and onnxruntime outputs


class ConversionError(OnnxsalError):
    """An export failed or did not reproduce the framework's outputs; nothing was written."""


def need(package: str, extra: str) -> Any:
    """Import an optional framework, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ConversionError(
            f"This converter needs {package}: pip install 'onnxsal[{extra}]'."
        ) from exc


def existing_file(source: Any, what: str) -> Path | None:
    """source as a Path if it is path-like (ConversionError if missing), else None."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    path = Path(source)
    if not path.exists():
        raise ConversionError(f"No {what} at '{path}'.")
    return path


@dataclass
class Verification:
    batches: list[int]
    rel_l2: float  # the worst over batches and outputs

    def as_dict(self) -> dict:
        return {"batches": self.batches, "rel_l2": float(self.rel_l2)}


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    denom = np.linalg.norm(a)
    return float(np.linalg.norm(a - b) / denom) if denom > 0 else float(np.linalg.norm(b))


def session(model: onnx.ModelProto):
    return runtime.session(model.SerializeToString(), [runtime.CPU])


def verify(
    model: onnx.ModelProto,
    reference: Callable[[np.ndarray], Sequence[np.ndarray]],
    sample_shape: Sequence[int],
    *,
    batches: Sequence[int] = (2, 3),
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Verification:
    """Run the ONNX model and `reference` (the framework) on random batches; compare.

    `transform` maps the framework's input to the ONNX input (NHWC -> NCHW, say).
    """
    try:
        sess = session(model)
    except Exception as exc:
        raise ConversionError(f"onnxruntime cannot load the export: {exc}") from exc
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    worst = 0.0
    for n in batches:
        x = rng.standard_normal((n, *sample_shape)).astype(np.float32)
        expected = [np.asarray(e) for e in reference(x)]
        try:
            got = sess.run(None, {name: transform(x) if transform else x})
        except Exception as exc:
            raise ConversionError(
                f"The export does not run on a batch of {n} (its batch axis is probably "
                f"fixed): {str(exc).splitlines()[0]}"
            ) from exc
        for i, (e, g) in enumerate(zip(expected, got)):
            if e.shape != g.shape:
                raise ConversionError(
                    f"Output {i} has shape {g.shape} in ONNX but {e.shape} in the framework "
                    f"(batch {n}); the export is wrong."
                )
            err = _rel_l2(e, g)
            worst = max(worst, err)
            if not err <= tolerance:
                raise ConversionError(
                    f"The export disagrees with the framework on output {i} (batch {n}): "
                    f"relative L2 difference {err:.2e} > {tolerance:.0e}. Nothing was written."
                )
    return Verification(list(batches), worst)


def layer_map(
    model: onnx.ModelProto,
    x: np.ndarray,
    layer_outputs: Mapping[str, np.ndarray],
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, Any]:
    """{framework layer name: ONNX tensor name}, matched by value on one input.

    Every intermediate ONNX tensor is computed on x and compared with each
    layer's output; a layer maps to the last tensor (in graph order) with the
    same shape and values (relative L2 < 1e-4). A 4-D layer found only in the
    other layout (NHWC kept as NCHW) maps to {"tensor": name, "channel_axis": 1}.
    Layers fused away by the exporter (a BatchNorm folded into its Conv) simply
    have no entry.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type for v in inferred.graph.value_info}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    order = []
    for node in probe.graph.node:
        for out in node.output:
            if not out:
                continue
            order.append(out)
            t = types.get(out)
            if out not in known and t is not None and t.tensor_type.elem_type == 1:  # FLOAT
                probe.graph.output.add(name=out).type.CopyFrom(t)
                known.add(out)
    sess = session(probe)
    names = [o.name for o in sess.get_outputs()]
    values = dict(
        zip(names, sess.run(None, {sess.get_inputs()[0].name: transform(x) if transform else x}))
    )
    position = {name: i for i, name in enumerate(order)}
    found: dict[str, Any] = {}
    for layer, expected in layer_outputs.items():
        expected = np.asarray(expected)
        # exporters may keep an NHWC layer's tensor as NCHW (tf2onnx does): try both
        candidates = [(expected, None)]
        if expected.ndim == 4:
            candidates.append((expected.transpose(0, 3, 1, 2), 1))
        best, best_axis = None, None
        for want, axis in candidates:
            for name, value in values.items():
                if value.shape != want.shape or name not in position:
                    continue
                if _rel_l2(want, value) < 1e-4 and (
                    best is None or position[name] > position[best]
                ):
                    best, best_axis = name, axis
            if best is not None:
                break
        if best is not None:
            found[layer] = (
                best if best_axis is None else {"tensor": best, "channel_axis": best_axis}
            )
    return found


def finish(
    model: onnx.ModelProto,
    path: str | os.PathLike | None,
    *,
    source: dict,
    layout: str,
    verification: Verification,
    layers: Mapping[str, str] | None = None,
    preprocess: metadata.Preprocess | None = None,
    labels: Sequence[str] | None = None,
) -> onnx.ModelProto:
    """Stamp the metadata, check the model, write it atomically (one file unless > 2 GB)."""
    metadata.write(
        model,
        source={**source, "onnxsal_version": __version__},
        layout=layout,
        verified=verification.as_dict(),
        layers=dict(layers) if layers else None,
        preprocess=None if preprocess is None else preprocess.to_json(),
        labels=list(labels) if labels else None,
    )
    if path is not None:
        save(model, path)
    return model


def save(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write next to the destination, then rename: never a half-written model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    large = model.ByteSize() > TWO_GB
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        if large:
            onnx.save(model, tmp, save_as_external_data=True, location=path.name + ".data")
        else:
            onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_inline(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an exporter's output with any external data pulled into the model."""
    return onnx.load(str(path), load_external_data=True)
