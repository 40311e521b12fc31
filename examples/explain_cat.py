"""Explain a real photo with a real model: EfficientNet-Lite0 (ImageNet) on scikit-image's cat.

    python examples/explain_cat.py [--out out/]

Writes out/chelsea-saliency.png: the photo, then the vanilla, guided-backprop
and deconvnet maps of its top-1 class.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

import onnxsal
from onnxsal.models import efficientnet_lite0


def heat(attribution: np.ndarray) -> Image.Image:
    """|g| max over channels, clipped at the 99th percentile, as a black-red-yellow ramp."""
    m = np.abs(attribution).max(axis=0)
    m = np.clip(m / max(np.percentile(m, 99), 1e-12), 0, 1)
    rgb = np.stack([np.clip(2 * m, 0, 1), np.clip(2 * m - 1, 0, 1), np.zeros_like(m)], -1)
    return Image.fromarray((255 * rgb).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out", help="folder for the picture")
    args = parser.parse_args()

    from skimage import data

    photo = Image.fromarray(data.chelsea())
    x = efficientnet_lite0.preprocess(photo)
    explainer = onnxsal.Explainer(efficientnet_lite0.onnx_path())
    panels = [photo.resize((224, 224), Image.BICUBIC)]
    for method in ("vanilla", "guided", "deconv"):
        result = explainer.run(x, method)
        panels.append(heat(result.attribution[0]))
    top = int(result.target[0])
    print(
        f"top-1 ImageNet class {top} (281-285 are cats), logit {result.score[0]:.2f}; "
        f"ran on {explainer.providers[0]}"
    )
    sheet = Image.new("RGB", (224 * len(panels), 224))
    for i, panel in enumerate(panels):
        sheet.paste(panel, (224 * i, 0))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sheet.save(out / "chelsea-saliency.png")
    print(f"wrote {out / 'chelsea-saliency.png'} (photo | vanilla | guided | deconv)")


if __name__ == "__main__":
    main()
