"""The explainer in the browser: a static folder that explains images on onnxruntime-web.

`export(model, folder)` writes the gradient graphs (vanilla, guided, deconv; the other
methods are loops over the vanilla graph in JavaScript) with their weights in one
shared file (`weights.bin`: each tensor once, fetched once), `onnxsal.json` (labels,
preprocessing, the colormaps as tables so the page draws exactly the Python
pictures' colours), `onnxsal.js` (an ES module any page can import) and
`index.html`. The runtime is onnxruntime-web RUNTIME_VERSION: by default loaded from
a pinned CDN URL with a subresource-integrity hash; `runtime=` a local `npm pack
onnxruntime-web@RUNTIME_VERSION` archive (or its unpacked folder) copies its files
in, so the folder works with no network. Nothing is fetched here.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.external_data_helper
import onnx.numpy_helper

from onnxsal.errors import OptionError
from onnxsal.explainer import Explainer
from onnxsal.methods import METHODS
from onnxsal.modifiers import MODIFIERS
from onnxsal.pictures import (
    DEFAULT_COLORMAP,
    DIVERGING_COLORMAP,
    SALIENCY_COLORMAP,
    colorize,
)

RUNTIME_VERSION = "1.30.0"
CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{RUNTIME_VERSION}/dist/"
# the files the page needs, and their SHA-384 (subresource integrity), from the npm package
RUNTIME_FILES = {  # ort.webgpu.min.js loads the asyncify build (WebGPU and WASM)
    "ort.webgpu.min.js": "sha384-6BOUZhMpgaXRZBIj89pTWET0c7xcMe1yHACreuaBy2kUZwLd2tzCmv7MzwZccHYH",
    "ort-wasm-simd-threaded.asyncify.mjs": (
        "sha384-qViEcCGzsR/m8nlQwIsbYh7afN4thuraqFYDQY6huvmoLVoZq/eYawQ1wrv8nnhA"
    ),
    "ort-wasm-simd-threaded.asyncify.wasm": (
        "sha384-EPVDLTxuO663dkZO/pcKJF6vOyyfq/5z9FY1oksN0UWFX2ABH4wDDZQHeNoUleWR"
    ),
}
GRAPHS = tuple(MODIFIERS)  # one gradient graph each; the other web methods loop over vanilla
WEIGHTS = "weights.bin"  # the graphs' initializers of SHARED_BYTES or more, each stored once
SHARED_BYTES = 1024
WEB_METHODS = (*GRAPHS, "input_x_gradient", "smoothgrad", "integrated_gradients")
NPM_PACK = f"npm pack onnxruntime-web@{RUNTIME_VERSION}"


def export(model: Any, folder: str | Path, *, runtime: str | Path | None = None) -> Path:
    """Write the static explainer folder; returns its index.html."""
    ex = model if isinstance(model, Explainer) else Explainer(model)
    if ex.layout not in ("NCHW", "NHWC") or ex.preprocess is None:
        raise OptionError(
            "The web explainer takes pictures: the model needs image input (NCHW or NHWC) and "
            "recorded preprocessing (onnxsal convert writes it; see the README's metadata "
            "section)."
        )
    out = Path(folder)
    if out.exists() and any(out.iterdir()) and not (out / "onnxsal.json").is_file():
        raise OptionError(
            f"'{out}' holds files of its own; give an empty folder (or an earlier web export)."
        )
    out.mkdir(parents=True, exist_ok=True)
    protos = {method: ex.compiled(method, None)[0] for method in GRAPHS}
    _write(out / WEIGHTS, _share_weights(protos.values()))
    graphs = {}
    for method, proto in protos.items():
        graphs[method] = f"{method}.onnx"
        _write(out / graphs[method], proto.SerializeToString())
    pre = ex.preprocess
    channels = 1 if pre.channel_order == "L" else 3
    h, w = pre.size
    meta = {
        "input": ex.input_name,
        "layout": ex.layout,
        "shape": [1, channels, h, w] if ex.layout == "NCHW" else [1, h, w, channels],
        "labels": ex.labels,
        "preprocess": {
            "size": list(pre.size), "crop": pre.crop, "scale": pre.scale, "mean": list(pre.mean),
            "std": list(pre.std), "channel_order": pre.channel_order,
        },
        "graphs": graphs,
        "weights": WEIGHTS,
        "methods": {
            m: {"signed": METHODS[m].signed, "rewritten": _rewritten(ex, m)} for m in WEB_METHODS
        },
        "colormaps": {
            "saliency": _table(SALIENCY_COLORMAP),
            "diverging": _table(DIVERGING_COLORMAP),
            "overlay": _table(DEFAULT_COLORMAP),
        },
        "runtime": _runtime(out, runtime),
    }  # fmt: skip
    assets = resources.files("onnxsal.web") / "assets"
    for name in ("onnxsal.js", "index.html"):
        _write(out / name, (assets / name).read_bytes())
    _write(out / "onnxsal.json", json.dumps(meta).encode())  # last: the folder is whole
    return out / "index.html"


def _share_weights(protos) -> bytes:
    """Move the graphs' large initializers into one blob (the graphs, edited, point into
    it as ONNX external data): the three graphs share the model's weights, so the page
    downloads them once instead of three times."""
    blob = bytearray()
    placed: dict[tuple[str, bytes], tuple[int, int]] = {}
    for proto in protos:
        for tensor in proto.graph.initializer:
            if tensor.data_type == onnx.TensorProto.STRING:
                continue  # strings have no raw form; they stay in the graph
            data = tensor.raw_data if tensor.HasField("raw_data") else _raw(tensor)
            if len(data) < SHARED_BYTES:
                continue
            key = (tensor.name, hashlib.sha256(data).digest())
            if key not in placed:
                blob += bytes(-len(blob) % 64)  # aligned, as ONNX's own writer does
                placed[key] = (len(blob), len(data))
                blob += data
            offset, length = placed[key]
            kept = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, raw_data=data)
            kept.dims.extend(tensor.dims)
            onnx.external_data_helper.set_external_data(kept, WEIGHTS, offset, length)
            kept.ClearField("raw_data")
            tensor.CopyFrom(kept)
    return bytes(blob)


def _raw(tensor) -> bytes:
    """A tensor's little-endian raw bytes, as ONNX stores them (packed types included)."""
    return onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor)).raw_data


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all: a temporary name, then renamed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _rewritten(ex: Explainer, method: str) -> int | None:
    """How many nodes a gradient graph's modifier rewrote (the page warns at 0)."""
    return len(ex.rewritten_nodes(method)) if method in GRAPHS and method != "vanilla" else None


def _table(name: str) -> list[list[int]]:
    """The colormap as 256 RGB rows: the Python pictures' own colorize, sampled."""
    ramp = colorize(np.linspace(0.0, 1.0, 256)[None], name)
    return np.asarray(ramp)[0].astype(int).tolist()


def _runtime(out: Path, source: str | Path | None) -> dict:
    """Where the page loads onnxruntime-web from: the pinned CDN, or copies in ort/."""
    if source is None:
        return {"base": CDN, "integrity": RUNTIME_FILES, "version": RUNTIME_VERSION}
    try:
        files = _pack_files(Path(source))
    except (OSError, KeyError, ValueError, tarfile.TarError, AttributeError) as exc:
        raise OptionError(
            f"'{source}' is not onnxruntime-web {RUNTIME_VERSION}'s npm package ({exc}); make "
            f"it with: {NPM_PACK}"
        ) from exc
    (out / "ort").mkdir(exist_ok=True)
    for name, data in files.items():
        _write(out / "ort" / name, data)
    return {"base": "ort/", "integrity": {}, "version": RUNTIME_VERSION}


def _pack_files(source: Path) -> dict[str, bytes]:
    """The runtime files of an npm archive or its unpacked folder, version checked first."""
    if source.is_dir():
        root = source / "package" if (source / "package").is_dir() else source
        return _versioned(lambda name: (root / name).read_bytes())
    with tarfile.open(source) as pack:
        return _versioned(lambda name: pack.extractfile(f"package/{name}").read())


def _versioned(read) -> dict[str, bytes]:
    version = json.loads(read("package.json")).get("version")
    if version != RUNTIME_VERSION:
        raise ValueError(f"it holds version {version}")
    return {name: read(f"dist/{name}") for name in RUNTIME_FILES}
