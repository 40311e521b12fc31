"""Reading pictures robustly, with bounded memory, and turning them into model inputs.

Any file pillow reads: EXIF orientation applied; palette, RGBA (composited on
white), CMYK, 16-bit and 32-bit grayscale converted; every failure becomes an
InputError naming the file. Preprocessing comes from the model's metadata,
with CLI overrides.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from onnxsal.errors import InputError
from onnxsal.metadata import RESAMPLE, Preprocess

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


# Pillow's own bound: a bigger picture is a decompression bomb until the user says otherwise
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
# Pillow's bound is a global that opening lifts for a moment: one thread at a time
_PILLOW_LIMIT = threading.Lock()
# The originals kept for drawing at the picture's own size are shrunk to this longer side.
ORIGINAL_BOUND = 2048


def load_image(
    path: str | os.PathLike,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    at_least: tuple[int, int] | None = None,
) -> Image.Image:
    """An RGB or L picture, upright, 8 bits per channel.

    A picture that would decode to more than `max_pixels` is refused before it is
    decoded (a small file can declare a huge one); `at_least` (width, height): a JPEG
    may be decoded at a reduced scale (1/2, 1/4, 1/8) that still gives that many
    pixels, so a huge photo costs memory for what the outputs need only.
    """
    try:
        with _opened(path, max_pixels) as opened:
            if at_least is not None and opened.format == "JPEG":
                opened.draft("RGB", at_least)
            w, h = opened.size  # what will be decoded (after a draft)
            if max_pixels is not None and w * h > max_pixels:
                raise InputError(
                    f"{path}: {w}x{h} pixels, more than the limit of {max_pixels} "
                    "(--max-pixels raises it)."
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow's notes on odd EXIF or chunks
                opened.load()
                img = ImageOps.exif_transpose(opened) or opened
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, MemoryError) as exc:
        raise InputError(f"{path}: not a readable image ({exc}).") from exc
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    elif img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    return img


@contextlib.contextmanager
def _opened(path: str | os.PathLike, max_pixels: int | None) -> Iterator[Image.Image]:
    """Image.open without Pillow's own bomb check, which our limit replaces: it would
    warn, or refuse a picture the user allowed, or one a draft would make small."""
    with _PILLOW_LIMIT, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            opened = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    with opened:
        yield opened


@dataclass
class Prepared:
    """One input ready for the model, and the picture its maps are drawn on."""

    tensor: np.ndarray  # (1, ...) the model input
    picture: Image.Image | None  # RGB at the model's input resolution
    original: Image.Image | None  # the upright original, shrunk to ORIGINAL_BOUND (if kept)


def with_overrides(base: Preprocess | None, **fields: Any) -> Preprocess:
    """The model's preprocessing with CLI fields replacing its own.

    Raises InputError naming the missing flags when neither gives a full recipe.
    """
    given = {k: v for k, v in fields.items() if v is not None}
    if base is None:
        if "size" not in given:
            raise InputError(
                "The model carries no preprocessing metadata; give at least --size H,W "
                "(and --mean/--std/--scale/--layout as it was trained), or convert it with "
                "'onnxsal convert', which records them."
            )
        base = Preprocess(size=tuple(given.pop("size")))
    return replace(base, **given)


def prepare(
    path: Path,
    preprocess: Preprocess | None,
    *,
    keep_original: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Prepared:
    """Read an image and make the model's input (and, if asked, a bounded original)."""
    if preprocess is None:
        raise InputError("Images need preprocessing (--size etc.); see 'onnxsal explain --help'.")
    h, w = preprocess.size
    # a JPEG is decoded reduced only where that still leaves twice what the outputs need:
    # ordinary photos decode in full, as the model's own pipeline decodes them
    grow = 2.0 / preprocess.crop if preprocess.crop else 2.0
    need = (w, h) if not keep_original else (ORIGINAL_BOUND, ORIGINAL_BOUND)
    original = load_image(
        path, max_pixels=max_pixels, at_least=(round(need[0] * grow), round(need[1] * grow))
    )
    tensor = preprocess(original)
    view = original.convert("RGB")
    if preprocess.crop:
        w, h = view.size
        side = preprocess.crop * min(w, h)
        left, top = (w - side) / 2, (h - side) / 2
        view = view.crop((round(left), round(top), round(left + side), round(top + side)))
    picture = view.resize(
        (preprocess.size[1], preprocess.size[0]), resample=RESAMPLE[preprocess.resize]
    )
    kept = None
    if keep_original:  # shrunk (never enlarged) without a full-size copy first
        kept = original
        if max(original.size) > ORIGINAL_BOUND:
            kept = ImageOps.contain(original, (ORIGINAL_BOUND, ORIGINAL_BOUND))
    return Prepared(tensor, picture, kept)
