"""PyTorch -> ONNX, through torch's own exporter (dynamo first, TorchScript as the fallback)."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from onnxsal import metadata
from onnxsal.converters.common import (
    ConversionError,
    existing_file,
    finish,
    layer_map,
    load_inline,
    need,
    verify,
)

FALLBACK_OPSET = 17


def _load_module(source: Any) -> Any:
    torch = need("torch", "torch")
    path = existing_file(source, "TorchScript file")
    if path is not None:
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ConversionError(
                f"'{path}' is not a TorchScript file ({str(exc).splitlines()[0]}). Save a "
                "scripted or traced model with torch.jit.save, or pass a module:callable."
            ) from exc
    if isinstance(source, torch.export.ExportedProgram):
        return source.module()  # a GraphModule: callable for verification, exportable
    return source


@contextlib.contextmanager
def _quiet_exporter():
    """Mute the exporters' warnings and log lines ("torchvision is not installed..."): a
    failed export is reported by its exception, a wrong one by verification."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _export(module: Any, example: Any, path: str, dynamo: bool, opset: int | None) -> None:
    torch = need("torch", "torch")
    with _quiet_exporter():
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.onnx.export(
                module,
                (example,),
                None,
                dynamo=True,
                opset_version=opset,
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
            program.save(path, external_data=False)
        else:
            torch.onnx.export(
                module,
                (example,),
                path,
                dynamo=False,
                opset_version=opset or FALLBACK_OPSET,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )


def from_torch(
    module: Any,
    input_shape: Sequence[int],
    path: str | os.PathLike | None = None,
    *,
    layout: str = "NCHW",
    preprocess: metadata.Preprocess | None = None,
    labels: Sequence[str] | None = None,
    exporter: str = "auto",
    opset: int | None = None,
    tolerance: float = 1e-4,
) -> onnx.ModelProto:
    """Export a torch model (nn.Module, ScriptModule, ExportedProgram or TorchScript file).

    `input_shape` is one sample's shape (no batch axis); the export has a symbolic
    batch axis. `exporter`: "auto" (dynamo, then TorchScript if dynamo fails or its
    export disagrees), "dynamo" or "torchscript". The model is written to `path`
    (if given) only after onnxruntime reproduced torch's outputs on two batch sizes.
    """
    torch = need("torch", "torch")
    module = _load_module(module)
    if hasattr(module, "eval"):
        with contextlib.suppress(NotImplementedError):  # an ExportedProgram's module is frozen
            module.eval()
    sample_shape = tuple(int(d) for d in input_shape)
    example = torch.zeros((2, *sample_shape))

    def reference(x: np.ndarray):
        with torch.no_grad():
            out = module(torch.from_numpy(x))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().numpy() for o in outs]

    tries = {"auto": [True, False], "dynamo": [True], "torchscript": [False]}.get(exporter)
    if tries is None:
        raise ConversionError(
            f"exporter must be 'auto', 'dynamo' or 'torchscript', not '{exporter}'."
        )
    failures = []
    for dynamo in tries:
        name = "torch.onnx (dynamo)" if dynamo else "torch.onnx (TorchScript)"
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "model.onnx")
            try:
                _export(module, example, out, dynamo, opset)
                model = load_inline(out)
                checked = verify(model, reference, sample_shape, tolerance=tolerance)
            except Exception as exc:  # try the next exporter, report all at the end
                failures.append(f"{name}: {str(exc).splitlines()[0] if str(exc) else exc!r}")
                continue
        if failures:
            warnings.warn("Fell back to " + name + " after: " + "; ".join(failures), stacklevel=2)
        layers = _torch_layers(module, model, sample_shape)
        source = {"framework": "torch", "framework_version": torch.__version__, "exporter": name}
        return finish(
            model,
            path,
            source=source,
            layout=layout,
            verification=checked,
            layers=layers,
            preprocess=preprocess,
            labels=labels,
        )
    raise ConversionError("Every exporter failed; nothing was written.\n  " + "\n  ".join(failures))


def _torch_layers(module: Any, model: onnx.ModelProto, sample_shape) -> dict[str, str]:
    """Map qualified module names to ONNX tensors by comparing their outputs."""
    torch = need("torch", "torch")
    if not hasattr(module, "named_modules"):
        return {}
    outputs: dict[str, Any] = {}
    handles = []
    for name, sub in module.named_modules():
        if not name:
            continue

        def keep(m, inputs, out, name=name):
            if isinstance(out, torch.Tensor):
                outputs[name] = out.detach().numpy().copy()

        try:
            handles.append(sub.register_forward_hook(keep))
        except Exception:  # ScriptModules do not take hooks
            return {}
    x = np.random.default_rng(1).standard_normal((1, *sample_shape)).astype(np.float32)
    try:
        with torch.no_grad():
            module(torch.from_numpy(x))
    finally:
        for h in handles:
            h.remove()
    return layer_map(model, x, outputs)
