"""Adebayo et al.'s figure (one row per method, one column per randomisation step), and
line charts as SVG (the similarity curves, the report's curves)."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from onnxsal.methods import get_method
from onnxsal.pictures import DIVERGING_COLORMAP, SALIENCY_COLORMAP, colorize, display_map

LABEL_WIDTH, HEADER = 150, 28
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
CHART_W, CHART_H, PAD = 420, 220, 36


def randomization_figure(
    maps: dict[str, np.ndarray], blocks: Sequence[str], sample: int = 0, tile: int = 64
) -> Image.Image:
    """Sample `sample`'s maps: the original model's first, then each step's (for cascading,
    every block from the output down to the one named is random)."""
    font = ImageFont.load_default()
    methods = list(maps)
    columns = ["original", *blocks]
    canvas = Image.new(
        "RGB", (LABEL_WIDTH + len(columns) * tile, HEADER + len(methods) * tile), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(columns):
        draw.text((LABEL_WIDTH + c * tile + 2, 2), _fit(name, tile, font), fill="black", font=font)
    if len(columns) > 1:
        draw.text((LABEL_WIDTH + 2, 14), "randomised from the output ->", fill="gray", font=font)
    for row, method in enumerate(methods):
        top = HEADER + row * tile
        draw.text((4, top + tile // 2 - 6), _fit(method, LABEL_WIDTH - 8, font), fill="black",
                  font=font)  # fmt: skip
        signed = get_method(method).signed
        for c in range(len(columns)):
            m = np.asarray(maps[method][c, sample])
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


def similarity_curves(
    similarity: dict[str, np.ndarray], blocks: Sequence[str], measure: str
) -> str:
    """Each method's mean similarity to its original map, step by step (SVG); the original
    map is itself (1) before the first step."""
    series = {name: np.concatenate([[1.0], values]) for name, values in similarity.items()}
    return chart_svg(f"{measure} with the original map", series, "blocks randomised",
                     ["original", *blocks])  # fmt: skip


def chart_svg(
    title: str, series: dict[str, np.ndarray], x_label: str, ticks: Sequence[str] = ()
) -> str:
    """A line chart: one polyline per series over an x axis from 0 to 1, the y axis from
    min(0, data) to max(1, data); every text escaped (names may come from a model)."""
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in series.items()}
    finite = [a[np.isfinite(a)] for a in arrays.values() if np.isfinite(a).any()]
    lo = min([0.0, *(float(a.min()) for a in finite)])
    hi = max([1.0 if lo >= 0 else 0.0, *(float(a.max()) for a in finite)])
    hi = hi if hi > lo else lo + 1.0
    e = html.escape
    bottom, height = CHART_H - PAD + 8, CHART_H + 16 * len(arrays)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{height}" '
        f'role="img" aria-label="{e(title)}">',
        f'<line x1="{PAD}" y1="{bottom}" x2="{CHART_W - 8}" y2="{bottom}" stroke="#999"/>',
        f'<line x1="{PAD}" y1="8" x2="{PAD}" y2="{bottom}" stroke="#999"/>',
        f'<text x="2" y="14" font-size="10">{hi:.2f}</text>',
        f'<text x="2" y="{bottom}" font-size="10">{lo:.2f}</text>',
        f'<text x="{PAD}" y="{CHART_H - 6}" font-size="11">{e(x_label)}</text>',
    ]
    for k, (name, a) in enumerate(arrays.items()):
        colour = COLOURS[k % len(COLOURS)]
        xs = np.linspace(0, 1, len(a)) if len(a) > 1 else np.zeros(1)
        left = PAD + xs * (CHART_W - PAD - 8)
        top = 8 + (1 - (a - lo) / (hi - lo)) * (CHART_H - PAD)
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y, v in zip(left, top, a) if np.isfinite(v))
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>'
        )
        parts.append(
            f'<text x="{PAD}" y="{CHART_H + 12 + 16 * k}" font-size="11" fill="{colour}">'
            f"&#9632; {e(name)}</text>"
        )
    if ticks:
        parts.append(f"<title>{e(' -> '.join(map(str, ticks)))}</title>")
    parts.append("</svg>")
    return "\n".join(parts)
