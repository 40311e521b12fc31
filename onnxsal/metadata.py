"""onnxsal's metadata in ONNX `metadata_props`: a small, versioned schema.

The converters write it; the engine and the CLI read it. Keys (schema 1):

| key | value |
|---|---|
| `onnxsal.schema` | "1" |
| `onnxsal.source` | JSON: framework, framework_version, backend, exporter, onnxsal_version |
| `onnxsal.layout` | "NCHW" or "NHWC" (the explained input's layout) |
| `onnxsal.preprocess` | JSON `Preprocess` (how to turn a picture into the input) |
| `onnxsal.labels` | JSON list of class names, index = output unit |
| `onnxsal.layers` | JSON {framework layer name: ONNX tensor name} |
| `onnxsal.verified` | JSON: batch sizes checked and the worst relative L2 difference |

Unknown keys are kept and ignored; a newer schema is read as far as it is understood.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxsal.errors import InputError, OnnxsalWarning, OptionError

SCHEMA = "1"
PREFIX = "onnxsal."
SCHEMA_KEY = PREFIX + "schema"
SOURCE_KEY = PREFIX + "source"
LAYOUT_KEY = PREFIX + "layout"
PREPROCESS_KEY = PREFIX + "preprocess"
LABELS_KEY = PREFIX + "labels"
LAYERS_KEY = PREFIX + "layers"
VERIFIED_KEY = PREFIX + "verified"

RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1, "box": 4, "hamming": 5}
CHANNEL_ORDERS = ("RGB", "BGR", "L")  # L: grayscale
LAYOUTS = ("NCHW", "NHWC")


@dataclass
class Preprocess:
    """How a picture becomes the model's input.

    RGB (or "L" grayscale, or "BGR") pixels in [0, 255]; optional centre crop of
    `crop` of the shorter side; resize to `size` (H, W) with `resize`; then
    (pixel * scale - mean) / std per channel; then `layout`.
    """

    size: tuple[int, int]
    resize: str = "bilinear"
    crop: float | None = None
    scale: float = 1.0
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])
    channel_order: str = "RGB"
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        """Refuse a recipe no picture could follow (a typo in a flag or in metadata)."""
        channels = 1 if self.channel_order == "L" else 3
        checks = [
            (
                len(self.size) == 2 and all(isinstance(v, int) and v >= 1 for v in self.size),
                f"size must be two positive integers H,W, not {self.size}",
            ),
            (self.resize in RESAMPLE, f"resize must be one of {', '.join(RESAMPLE)}"),
            (self.crop is None or 0 < self.crop <= 1, "crop must be a fraction in (0, 1]"),
            (_finite(self.scale), "scale must be a finite number"),
            (
                self.channel_order in CHANNEL_ORDERS,
                f"channel_order must be one of {', '.join(CHANNEL_ORDERS)}",
            ),
            (self.layout in LAYOUTS, f"layout must be one of {', '.join(LAYOUTS)}"),
        ]
        for name in ("mean", "std"):
            values = getattr(self, name)
            fits = isinstance(values, (list, tuple)) and len(values) in (1, channels)
            counts = "1 number" if channels == 1 else f"1 or {channels} numbers"
            checks.append(
                (
                    fits and all(_finite(v) for v in values),
                    f"{name} must be {counts} ({self.channel_order}), finite; not {values}",
                )
            )
        checks.append((all(v > 0 for v in self.std if _finite(v)), "std must be > 0"))
        for ok, message in checks:
            if not ok:
                raise OptionError(f"Preprocessing: {message}.")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Preprocess:
        try:
            data = json.loads(text)
            known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
            known["size"] = tuple(known["size"])
            return cls(**known)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"Preprocessing: not a valid recipe ({exc}).") from exc

    def __call__(self, image: Any) -> np.ndarray:
        """A PIL image -> float32 (1, C, H, W) or (1, H, W, C)."""
        mode = "L" if self.channel_order == "L" else "RGB"
        img = image.convert(mode)
        if self.crop:
            w, h = img.size
            side = self.crop * min(w, h)
            left, top = (w - side) / 2, (h - side) / 2
            img = img.crop((round(left), round(top), round(left + side), round(top + side)))
        img = img.resize((self.size[1], self.size[0]), resample=RESAMPLE[self.resize])
        arr = np.asarray(img, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[..., None]
        if self.channel_order == "BGR":
            arr = arr[..., ::-1]
        arr = (arr * self.scale - np.asarray(self.mean, np.float32)) / np.asarray(
            self.std, np.float32
        )
        if self.layout == "NCHW":
            arr = arr.transpose(2, 0, 1)
        return np.ascontiguousarray(arr[None], dtype=np.float32)


def read(model: onnx.ModelProto) -> dict[str, Any]:
    """All onnxsal keys, JSON decoded, without the prefix."""
    out: dict[str, Any] = {}
    for prop in model.metadata_props:
        if not prop.key.startswith(PREFIX):
            continue
        key = prop.key[len(PREFIX) :]
        try:
            out[key] = json.loads(prop.value) if key not in ("layout", "schema") else prop.value
        except json.JSONDecodeError:
            out[key] = prop.value
    return out


def write(model: onnx.ModelProto, **values: Any) -> None:
    """Set onnxsal keys (None removes one); dicts and lists are stored as JSON."""
    values = {"schema": SCHEMA, **values}
    for key, value in values.items():
        full = PREFIX + key
        for prop in list(model.metadata_props):
            if prop.key == full:
                model.metadata_props.remove(prop)
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        model.metadata_props.add(key=full, value=text)


def preprocess(model: onnx.ModelProto) -> Preprocess | None:
    """The recorded recipe; one that does not parse or cannot work is ignored, with a
    warning, so that flags can give it."""
    for prop in model.metadata_props:
        if prop.key == PREPROCESS_KEY:
            try:
                return Preprocess.from_json(prop.value)
            except InputError as exc:
                warnings.warn(
                    f"The model's {PREPROCESS_KEY} metadata is ignored: {exc}",
                    OnnxsalWarning,
                    stacklevel=2,
                )
    return None


def labels(model: onnx.ModelProto) -> list[str] | None:
    value = read(model).get("labels")
    return [str(v) for v in value] if isinstance(value, list) else None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
