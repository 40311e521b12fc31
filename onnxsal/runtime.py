"""onnxruntime sessions: provider choice and a friendly error when the runtime is missing.

`providers=None` means: the CUDA execution provider when onnxruntime-gpu is
installed and a GPU is visible, the CPU provider otherwise. Whether CUDA
really runs is read back from the session (onnxruntime falls back to the CPU
silently when the CUDA libraries or the device are missing).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from onnxsal.errors import OnnxsalWarning, OptionError, RuntimeUnavailableError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
OPENVINO = "OpenVINO"  # not an onnxruntime provider: a runtime of its own (openvino_runtime)
FASTEST = "fastest"  # onnxruntime or OpenVINO, measured per graph (fastest_runtime)
RUNTIMES = (OPENVINO, FASTEST)  # runtimes that run a whole graph, given alone

ProviderSpec = str | tuple[str, dict[str, Any]]

_INSTALL_HINT = (
    "Install the runtime with pip install 'onnxsal[cpu]', or 'onnxsal[gpu]' for NVIDIA GPUs "
    "(after pip uninstall -y onnxruntime)."
)


def ort() -> Any:
    """The onnxruntime module, or a RuntimeUnavailableError that says how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeUnavailableError(f"onnxruntime is not installed. {_INSTALL_HINT}") from exc
    if not hasattr(onnxruntime, "InferenceSession"):
        raise RuntimeUnavailableError(
            "onnxruntime is broken, usually because both onnxruntime and onnxruntime-gpu are "
            "installed. Fix: pip uninstall -y onnxruntime onnxruntime-gpu, then "
            "pip install 'onnxsal[cpu]' or 'onnxsal[gpu]'."
        )
    return onnxruntime


def both_runtimes_installed() -> bool:
    """onnxruntime and onnxruntime-gpu installed together: they break each other."""
    names = set()
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            metadata.version(dist)
            names.add(dist)
        except metadata.PackageNotFoundError:
            pass
    return len(names) == 2


def _gpu_hidden() -> bool:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return visible is not None and visible.strip() in ("", "-1")


def default_providers() -> list[str]:
    """CUDA (then CPU) when onnxruntime-gpu and a visible GPU exist, else CPU."""
    rt = ort()
    if CUDA in rt.get_available_providers() and not _gpu_hidden():
        preload = getattr(rt, "preload_dlls", None)
        if preload is not None:  # CUDA/cuDNN from the nvidia-* wheels, if present
            with contextlib.suppress(Exception):
                preload()
        return [CUDA, CPU]
    return [CPU]


def resolve_providers(providers: Sequence[ProviderSpec] | None) -> list[ProviderSpec]:
    if providers is None:
        if both_runtimes_installed():
            warnings.warn(
                "Both onnxruntime and onnxruntime-gpu are installed; they share one import name "
                "and break each other. Keep one: pip uninstall -y onnxruntime (for the GPU).",
                OnnxsalWarning,
                stacklevel=3,
            )
        return list(default_providers())
    chosen = [providers] if isinstance(providers, str) else list(providers)
    for whole in RUNTIMES:
        if not any(_name(p).lower() == whole.lower() for p in chosen):
            continue
        if len(chosen) > 1 or isinstance(chosen[0], tuple):
            raise OptionError(
                f"'{whole.lower()}' chooses the runtime of the whole graph: give it alone and "
                f"without options (providers=['{whole.lower()}']; threads come from "
                "session_options)."
            )
        if importlib.util.find_spec("openvino") is None:
            raise RuntimeUnavailableError(
                f"'{whole.lower()}' needs OpenVINO, which is not installed: "
                "pip install 'onnxsal[openvino]'."
            )
        return [whole]
    known = ort().get_all_providers()
    for provider in chosen:
        name = _name(provider)
        if name not in known:
            raise OptionError(
                f"Unknown execution provider {name!r}; onnxruntime knows: {', '.join(known)}."
            )
    return chosen


def session_options(threads: int = 0) -> Any:
    """onnxsal's onnxruntime options (start from these to change one, e.g. the threads).

    The memory pattern is off: it plans one block for every intermediate, and a gradient
    graph keeps its forward's activations for the backward -- the plan took 3.8 GB where
    the tensors alive at once need 2.2 (EfficientNet-Lite0, batch 64), at the same speed."""
    options = ort().SessionOptions()
    options.log_severity_level = 4  # errors are raised (and reworded), not logged too
    options.enable_mem_pattern = False
    options.intra_op_num_threads = threads
    return options


def _name(provider: ProviderSpec) -> str:
    name = provider[0] if isinstance(provider, tuple) and provider else provider
    if not isinstance(name, str):
        raise OptionError(
            f"A provider is a name or a (name, options) pair, not {type(provider).__name__}."
        )
    return name


def session(
    model_bytes: bytes,
    providers: Sequence[ProviderSpec],
    options: Any = None,
) -> Any:
    rt = ort()
    if options is None:
        options = session_options()
    return rt.InferenceSession(model_bytes, sess_options=options, providers=list(providers))


def run_named(model: Any, names: Sequence[str], feeds: Any) -> list[Any]:
    """The named values of one CPU run of a ModelProto (its graph outputs include them)."""
    outputs = run_unoptimised(model.SerializeToString(), feeds)
    return [outputs[name] for name in names]


def run_unoptimised(model_bytes: bytes, feeds: Any) -> dict[str, Any]:
    """Outputs by name of one CPU run without graph optimisations and without log lines:
    for checks and probes, where fused kernels must not differ and failures are expected."""
    rt = ort()
    options = rt.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = rt.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = rt.InferenceSession(model_bytes, sess_options=options, providers=[CPU])
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    return dict(zip(names, sess.run(names, {k: v for k, v in feeds.items() if k in wanted})))
