"""Adebayo et al.'s figure: one row per method, one column per randomisation step."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from onnxsal.evaluate.randomization import Randomization
from onnxsal.methods import get_method
from onnxsal.pictures import DIVERGING_COLORMAP, SALIENCY_COLORMAP, colorize, display_map

LABEL_WIDTH, HEADER = 150, 28


def randomization_figure(r: Randomization, sample: int = 0, tile: int = 64) -> Image.Image:
    """Sample `sample`'s maps: the original model's first, then each step's (for cascading,
    every block from the output down to the one named is random)."""
    font = ImageFont.load_default()
    columns = ["original", *r.blocks]
    canvas = Image.new(
        "RGB", (LABEL_WIDTH + len(columns) * tile, HEADER + len(r.methods) * tile), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(columns):
        draw.text((LABEL_WIDTH + c * tile + 2, 2), _fit(name, tile, font), fill="black", font=font)
    if len(columns) > 1:
        draw.text((LABEL_WIDTH + 2, 14), "randomised from the output ->", fill="gray", font=font)
    for row, method in enumerate(r.methods):
        top = HEADER + row * tile
        draw.text((4, top + tile // 2 - 6), _fit(method, LABEL_WIDTH - 8, font), fill="black",
                  font=font)  # fmt: skip
        signed = get_method(method).signed
        for c in range(len(columns)):
            m = np.asarray(r.maps[method][c, sample])
            if m.ndim != 2:
                m = m.reshape(1, -1)
            shown = display_map(m[None], "NCHW", signed)
            picture = colorize(shown, DIVERGING_COLORMAP if signed else SALIENCY_COLORMAP)
            canvas.paste(picture.resize((tile - 2, tile - 2)), (LABEL_WIDTH + c * tile, top))
    return canvas


def _fit(text: str, width: int, font) -> str:
    while text and font.getlength(text) > width - 4:
        text = text[:-2] + "…" if len(text) > 2 else ""
    return text
