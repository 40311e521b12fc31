"""Pictures a person wants to look at: colormapped maps, overlays, panels with a colour bar.

A pixel-gradient map laid over its photo is a few faint specks: most of its
pixels are weak, and weak means transparent. So a map is also drawn on its own
(`display_map`), as the field shows it: unsigned maps in grey, |a| summed over
channels and scaled to its 99th percentile (one outlier cannot darken the
rest); signed maps (a method's `signed`) in a diverging red-blue map, white at
zero. Panels put it beside the overlay: photo | map | overlay.

Colormaps come from `cmap` (numpy only, 7 MB; matplotlib's colormaps without
matplotlib's 170 MB), so any name it knows works ("inferno", "viridis", "jet",
"colorbrewer:RdBu"...).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from onnxsal import postprocess
from onnxsal.errors import InputError

DEFAULT_COLORMAP = "inferno"  # overlays, signal traces, heat maps
SALIENCY_COLORMAP = "gray"  # maps of unsigned methods drawn on their own: black 0, white 1
DIVERGING_COLORMAP = "colorbrewer:RdBu_r"  # signed maps: blue < 0, white 0, red > 0
SHOWS = ("both", "saliency", "overlay")  # what a panel shows of a map beside the photo
PERCENTILE = 99.0  # a map's values at and above this percentile are drawn at full strength


def to_map(
    attribution: np.ndarray, layout: str | None, reduce: str = "max", normalize: str = "percentile"
) -> np.ndarray:
    """One sample's attribution -> a 2-D map in [0, 1] (channels reduced, normalised)."""
    if attribution.ndim == 1:  # a feature vector: one strip of |g|
        return postprocess.normalize(np.abs(attribution)[None, None], normalize)[0]
    a = attribution[None] if attribution.ndim in (2, 3) else attribution
    if a.ndim == 4:
        if reduce == "none":
            reduce = "max"  # a picture needs one value per pixel
        a = postprocess.reduce_channels(a, reduce, layout)
        a = a[:, 0] if layout != "NHWC" else a[..., 0]
    elif a.ndim != 3:
        raise InputError(f"Cannot draw an attribution of shape {attribution.shape}.")
    return postprocess.normalize(a, normalize)[0]


def display_map(
    attribution: np.ndarray, layout: str | None, signed: bool, *, percentile: float = PERCENTILE
) -> np.ndarray:
    """One sample's attribution -> the 2-D map drawn on its own, in [0, 1].

    Pictures, (C, H, W) or for NHWC (H, W, C): unsigned maps as PAIR's
    VisualizeImageGrayscale: m = |a| summed over channels, (m - min) over
    (its `percentile`-th percentile - min), clipped to [0, 1]. Signed maps after
    PAIR's VisualizeImageDiverging: m = a summed over channels, divided by the
    percentile of |m| and clipped to [-1, 1], then moved to [0, 1]: 0.5 is zero,
    above it raises the score, below it lowers it. A map whose percentile is its
    minimum (nearly all zero) is scaled to its maximum instead. NaN is drawn as
    zero. A 2-D attribution is one channel; a 1-D one a strip of one row.
    """
    a = np.asarray(attribution)
    if a.ndim in (1, 2):
        a, layout = a.reshape(1, -1 if a.ndim == 1 else a.shape[0], a.shape[-1]), "NCHW"
    if a.ndim != 3:
        raise InputError(f"Cannot draw an attribution of shape {a.shape}.")
    axis = -1 if layout == "NHWC" else 0
    a = a.astype(np.float64)
    m = a.sum(axis=axis) if signed else np.abs(a).sum(axis=axis)
    finite = m[np.isfinite(m)]
    if signed:
        span = _top(np.abs(finite), percentile, 0.0)
        scaled = np.clip(m / span, -1.0, 1.0) if span > 0 else np.sign(m)  # all 0 but inf
        out = (scaled + 1.0) / 2.0
        neutral = 0.5
    else:
        low = finite.min() if finite.size else 0.0
        span = _top(finite, percentile, low) - low
        out = np.clip((m - low) / span, 0.0, 1.0) if span > 0 else (m > low) * 1.0
        neutral = 0.0
    return np.where(np.isnan(out), neutral, out).astype(np.float32)


def _top(values: np.ndarray, percentile: float, low: float) -> float:
    """The value drawn at full strength: the percentile, or the maximum when the
    percentile is no higher than `low` (a map that is nearly all `low`)."""
    if values.size == 0:
        return low
    top = float(np.percentile(values, percentile))
    return top if top > low else float(values.max())


def standalone_colormap(signed: bool, colormap: str = SALIENCY_COLORMAP) -> str:
    """The colormap of a map drawn on its own: diverging for signed maps."""
    return DIVERGING_COLORMAP if signed else colormap


def resize_map(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A [0, 1] map resized bilinearly to (width, height), as 8-bit steps like the pictures."""
    small = Image.fromarray(np.round(255 * np.clip(m, 0.0, 1.0)).astype(np.uint8))
    return np.asarray(small.resize(size, Image.BILINEAR), dtype=np.float32) / 255.0


def colorize(m: np.ndarray, colormap: str = DEFAULT_COLORMAP) -> Image.Image:
    """A [0, 1] map through a colormap, as an RGB image."""
    from cmap import Colormap

    try:
        cm = Colormap(colormap)
    except (ValueError, KeyError) as exc:
        raise InputError(f"Unknown colormap '{colormap}' (try inferno, viridis, jet).") from exc
    rgba = cm(np.clip(m, 0.0, 1.0), bytes=True)
    return Image.fromarray(np.ascontiguousarray(rgba[..., :3]), "RGB")


def overlay(
    picture: Image.Image, m: np.ndarray, colormap: str = DEFAULT_COLORMAP, alpha: float = 0.6
) -> Image.Image:
    """The colormapped map over the picture, more opaque where the map is stronger."""
    heat = colorize(m, colormap)
    weight = m.astype(np.float32)
    if heat.size != picture.size:
        heat = heat.resize(picture.size, Image.BILINEAR)
        weight = resize_map(m, picture.size)
    w = (alpha * weight)[..., None]
    base = np.asarray(picture.convert("RGB"), dtype=np.float32)
    blended = base * (1 - w) + np.asarray(heat, dtype=np.float32) * w
    return Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8), "RGB")


def colorbar(
    height: int, colormap: str = DEFAULT_COLORMAP, width: int = 14, *, signed: bool = False
) -> Image.Image:
    """A vertical colour bar, 1 at the top, with its end values written beside it; for a
    signed map, + at the top, 0 in the middle and - at the bottom."""
    ramp = np.repeat(np.linspace(1, 0, height)[:, None], width, axis=1)
    bar = colorize(ramp, colormap)
    canvas = Image.new("RGB", (width + 24, height), "white")
    canvas.paste(bar, (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([(0, 0), (width - 1, height - 1)], outline=(160, 160, 160))  # white ends
    font = ImageFont.load_default()
    top, bottom = ("+", "-") if signed else ("1", "0")
    draw.text((width + 3, 0), top, fill="black", font=font)
    draw.text((width + 3, height - 12), bottom, fill="black", font=font)
    if signed:
        draw.text((width + 3, height // 2 - 6), "0", fill="black", font=font)
    return canvas


def map_tiles(
    picture: Image.Image,
    saliency: np.ndarray,
    strength: np.ndarray,
    *,
    signed: bool = False,
    show: str = "both",
    colormap: str = DEFAULT_COLORMAP,
    saliency_cmap: str = SALIENCY_COLORMAP,
    alpha: float = 0.6,
) -> list[Image.Image]:
    """One map's tiles at the picture's size: the map on its own (`saliency`, from
    `display_map`), over the picture (`strength`, from `to_map`), or both (`show`)."""
    if show not in SHOWS:
        raise InputError(f"show must be one of {', '.join(SHOWS)}, not '{show}'.")
    tiles = []
    if show != "overlay":
        own = standalone_colormap(signed, saliency_cmap)
        tiles.append(colorize(resize_map(saliency, picture.size), own))
    if show != "saliency":
        tiles.append(overlay(picture, resize_map(strength, picture.size), colormap, alpha))
    return tiles


def colorbars(
    height: int,
    signed: Iterable[bool],
    *,
    show: str = "both",
    colormap: str = DEFAULT_COLORMAP,
    saliency_cmap: str = SALIENCY_COLORMAP,
) -> list[Image.Image]:
    """The colour bars of tiles made by `map_tiles` for maps of these signs, each once."""
    kinds: list[tuple[str, bool]] = []
    if show != "overlay":
        kinds += [(standalone_colormap(s, saliency_cmap), s) for s in sorted(set(signed))]
    if show != "saliency":
        kinds.append((colormap, False))
    unique = list(dict.fromkeys(kinds))
    return [colorbar(height, name, signed=s) for name, s in unique]


def tile_row(
    tiles: list[Image.Image],
    *,
    gap: int | Sequence[int] = 8,
    title: str = "",
    captions: list[str] | None = None,
    colormap: str | None = None,
) -> Image.Image:
    """Tiles left to right on white, a line of text above them (a title, or a caption per
    tile) and, given a colormap, its colour bar at the right end. `gap`: the white between
    neighbours, one number or one per pair of neighbours (the last repeats)."""
    pieces = list(tiles)
    if colormap is not None:
        pieces.append(colorbar(max(t.height for t in tiles), colormap))
    gaps = [gap] if isinstance(gap, int) else list(gap) or [8]
    gaps = (gaps + gaps[-1:] * len(pieces))[: len(pieces) - 1]
    header = 18 if title or captions else 0
    width = sum(p.width for p in pieces) + sum(gaps)
    sheet = Image.new("RGB", (width, header + max(p.height for p in pieces)), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    left = 0
    for i, piece in enumerate(pieces):
        sheet.paste(piece, (left, header))
        if captions and i < len(captions):
            draw.text((left + 4, 3), captions[i], fill="black", font=font)
        left += piece.width + (gaps[i] if i < len(gaps) else 0)
    if title:
        draw.text((4, 3), title, fill="black", font=font)
    return sheet


def panel(
    original: Image.Image,
    saliency: np.ndarray,
    strength: np.ndarray | None = None,
    *,
    signed: bool = False,
    show: str = "both",
    colormap: str = DEFAULT_COLORMAP,
    saliency_cmap: str = SALIENCY_COLORMAP,
    alpha: float = 0.6,
    title: str = "",
    tile: int = 224,
) -> Image.Image:
    """The figure of one map: original | map on its own | overlay (`show`: both, or one
    of the two), the colour bars at the right end and a title above. `saliency` comes
    from `display_map`, `strength` (what the overlay weighs; default: `saliency`'s
    distance from zero) from `to_map`."""
    picture = original.convert("RGB").resize((tile, tile), Image.BICUBIC)
    if strength is None:
        strength = np.abs(2 * saliency - 1) if signed else saliency
    tiles = map_tiles(
        picture,
        saliency,
        strength,
        signed=signed,
        show=show,
        colormap=colormap,
        saliency_cmap=saliency_cmap,
        alpha=alpha,
    )
    bars = colorbars(tile, [signed], show=show, colormap=colormap, saliency_cmap=saliency_cmap)
    return tile_row([picture, *tiles, *bars], title=title)


def feature_bars(
    attribution: np.ndarray, names: list[str] | None = None, *, top: int = 20, title: str = ""
) -> Image.Image:
    """The `top` features by |attribution| as horizontal bars, signed: red raises the
    score, blue lowers it (tabular inputs, token positions)."""
    values = np.asarray(attribution, dtype=np.float64).reshape(-1)
    order = np.argsort(-np.abs(values), kind="stable")[:top]
    labels = [names[i] if names and i < len(names) else f"#{i}" for i in order]
    font = ImageFont.load_default()
    label_width = 8 + max(int(font.getlength(label)) for label in labels)
    row, width = 16, 360
    height = 22 + row * len(order)
    sheet = Image.new("RGB", (label_width + width + 70, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 3), title, fill="black", font=font)
    scale = max(np.abs(values[order]).max(), 1e-30)
    middle = label_width + width // 2
    draw.line([(middle, 20), (middle, height)], fill=(160, 160, 160))
    for k, (i, label) in enumerate(zip(order, labels)):
        top_y = 20 + k * row
        draw.text((4, top_y + 2), label, fill="black", font=font)
        length = int(values[i] / scale * (width // 2 - 4))
        colour = (200, 40, 40) if values[i] >= 0 else (40, 80, 200)
        x0, x1 = sorted((middle, middle + length))
        draw.rectangle([(x0, top_y + 3), (x1, top_y + row - 3)], fill=colour)
        draw.text(
            (label_width + width + 4, top_y + 2), f"{values[i]:+.3g}", fill="black", font=font
        )
    return sheet


def signal_trace(
    signal: np.ndarray,
    attribution: np.ndarray,
    *,
    colormap: str = DEFAULT_COLORMAP,
    size: tuple[int, int] = (720, 180),
    title: str = "",
) -> Image.Image:
    """A 1-D signal drawn as a line over a band coloured by |attribution| (waveforms, series)."""
    width, height = size
    strength = np.abs(np.asarray(attribution, np.float64).reshape(-1))
    strength = postprocess.normalize(strength[None], "percentile")[0]
    columns = np.interp(
        np.linspace(0, len(strength) - 1, width), np.arange(len(strength)), strength
    )
    band = colorize(np.repeat(columns[None], height, axis=0), colormap)
    sheet = Image.new("RGB", (width, height + 18), "white")
    sheet.paste(band, (0, 18))
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 3), title, fill="black", font=ImageFont.load_default())
    values = np.asarray(signal, np.float64).reshape(-1)
    xs = np.linspace(0, len(values) - 1, min(len(values), width * 2))
    ys = np.interp(xs, np.arange(len(values)), values)
    low, high = ys.min(), ys.max()
    span = high - low if high > low else 1.0
    points = [
        (float(x) / max(len(values) - 1, 1) * (width - 1), 18 + (high - y) / span * (height - 1))
        for x, y in zip(xs, ys)
    ]
    draw.line(points, fill="white", width=1)
    return sheet


def heat_map(m: np.ndarray, colormap: str = DEFAULT_COLORMAP, *, cell: int = 8) -> Image.Image:
    """A [0, 1] 2-D map drawn with square cells (sequences of features, spectrograms)."""
    rows, cols = m.shape
    scale = max(1, min(cell, 720 // max(cols, 1)))
    picture = colorize(m, colormap)
    return picture.resize((cols * scale, rows * scale), Image.NEAREST)
