"""Drawing one input's explanation into files: which files, and what each shows.

Pictures get a saliency map drawn on its own (grey, or red-blue for methods
whose maps are signed), an overlay, and with --panel both beside the photo;
samples that are not pictures get the picture that fits them (bars for features
and tokens, a shaded trace for signals, a heat map for 2-D arrays) and always
keep their raw attribution. Every file is written whole or not at all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from onnxsal.cli.files import atomic_write
from onnxsal.pictures import (
    DEFAULT_COLORMAP,
    SALIENCY_COLORMAP,
    colorize,
    display_map,
    feature_bars,
    heat_map,
    overlay,
    panel,
    signal_trace,
    standalone_colormap,
    to_map,
)

# 1-D attributions up to this length are drawn as bars (features), longer ones as a signal
MAX_BARS = 64
RAW_FORMATS = ("npy", "npz")  # formats that keep the raw attribution beside the pictures
TABLE_FORMAT = "parquet"  # the attribution in the results table, no pictures
FORMATS = ("png", *RAW_FORMATS, TABLE_FORMAT)
OUTPUT_KINDS = ("saliency", "overlay", "panel", "raw")  # the files an input may have


@dataclass
class Item:
    """One input ready for the model, and what its maps are drawn on."""

    tensor: np.ndarray  # (1, ...) the model input
    picture: Image.Image | None = None  # RGB at the model's input resolution
    original: Image.Image | None = None  # the upright original, bounded (--original-size)
    names: list[str] | None = None  # feature names (a CSV header)
    tabular: bool = False  # drawn as bars whatever its length
    tokens: bool = False  # integer inputs: bars name each position's value


@dataclass(frozen=True)
class Drawing:
    """What to write for each input and how it looks (part of a run's settings)."""

    fmt: str = "png"  # one of RAW_FORMATS also keeps the raw attribution
    overlay: bool = True
    panel: bool = False
    original_size: bool = False
    colormap: str = DEFAULT_COLORMAP
    alpha: float = 0.6
    reduce: str = "max"  # the overlay's channel reduction (the map alone sums them)
    show: str = "both"  # what the panel shows beside the photo (pictures.SHOWS)
    saliency_colormap: str = SALIENCY_COLORMAP  # maps of unsigned methods, drawn alone

    def settings(self) -> dict:
        return asdict(self)

    @property
    def keeps_table_maps(self) -> bool:
        """The attributions go into the results table (and no files are drawn)."""
        return self.fmt == TABLE_FORMAT

    def files(self, stem: Path, picture: bool) -> dict[str, Path]:
        """The output files of one input, named `stem.KIND.EXT` (OUTPUT_KINDS)."""
        if self.keeps_table_maps:
            return {}
        out = {"saliency": stem.with_name(f"{stem.name}.saliency.png")}
        if picture:
            out["overlay"] = stem.with_name(f"{stem.name}.overlay.png")
            if self.panel:
                out["panel"] = stem.with_name(f"{stem.name}.panel.png")
        fmt = self.fmt if self.fmt in RAW_FORMATS else None if picture else "npy"
        if fmt is not None:
            out["raw"] = stem.with_name(f"{stem.name}.attribution.{fmt}")
        return out

    def draw(
        self,
        files: dict[str, Path],
        item: Item,
        attribution: np.ndarray,
        layout: str | None,
        title: str,
        extras: dict[str, np.ndarray],
        signed: bool = False,
    ) -> None:
        """Write every file of `files` for one input (raw maps keep `extras` beside them);
        `signed`: the method's maps are signed (its `signed`), drawn diverging."""
        if not files:
            return
        if "overlay" in files:
            m = to_map(attribution, layout, self.reduce)
            saliency = display_map(attribution, layout, signed)
            picture = item.picture
            if self.original_size and item.original is not None:
                picture = item.original.convert("RGB")
            size = picture.size if picture is not None else saliency.shape[::-1]
            own = standalone_colormap(signed, self.saliency_colormap)
            alone = colorize(saliency, own)  # then resized: 0.04 s, not 0.5 s, at 2048 pixels
            if alone.size != size:
                alone = alone.resize(size, Image.BILINEAR)
            if self.overlay and picture:
                shown = overlay(picture, m, self.colormap, self.alpha)
            else:
                shown = colorize(m, self.colormap)
                if shown.size != size:
                    shown = shown.resize(size, Image.BILINEAR)
            _save_png(files["overlay"], shown)
            if "panel" in files:
                sheet = panel(
                    picture or alone,
                    saliency,
                    m,
                    signed=signed,
                    show=self.show,
                    colormap=self.colormap,
                    saliency_cmap=self.saliency_colormap,
                    alpha=self.alpha,
                    title=title,
                )
                _save_png(files["panel"], sheet)
        else:
            alone = self.sample_picture(item, attribution, title)
        _save_png(files["saliency"], alone)
        if "raw" in files:
            raw = files["raw"]

            def save_raw(tmp: str) -> None:
                with open(tmp, "wb") as f:
                    if raw.suffix == ".npy":
                        np.save(f, attribution)
                    else:
                        np.savez_compressed(f, attribution=attribution, **extras)

            atomic_write(raw, save_raw)

    def sample_picture(self, item: Item, attribution: np.ndarray, title: str) -> Image.Image:
        """The picture that fits a sample that is not an image."""
        a = attribution
        if a.ndim == 2 and 1 in a.shape:
            a = a.reshape(-1)
        if a.ndim <= 1:
            if item.tabular or a.size <= MAX_BARS:
                names = item.names
                if names is None and item.tokens:
                    names = [f"{k}: {int(t)}" for k, t in enumerate(item.tensor.reshape(-1))]
                return feature_bars(a, names, title=title)
            return signal_trace(item.tensor.reshape(-1), a, colormap=self.colormap, title=title)
        return heat_map(to_map(a, None, self.reduce), self.colormap)


def _save_png(path: Path, picture: Image.Image) -> None:
    """zlib level 1: 5x faster than Pillow's default 6 on a 2048-pixel overlay (0.3 s
    against 1.6 s) for files a fifth larger."""
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG", compress_level=1))
