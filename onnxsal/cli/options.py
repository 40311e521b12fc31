"""Option bundles shared by commands, and the method options derived from the methods.

One set of preprocessing flags serves explain, compare and convert; one set of
tensor flags (which input, which output, other inputs) explain and inspect. Every
option a method declares (`Method.options`) becomes a flag of its own
(`n_samples` -> `--n-samples`), so a new method needs no edit here; the
numeric ones that cost time or memory per input are bounded, so that a typo
is a usage error rather than a run the kernel kills.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from onnxsal.cli.common import Numbers, bounded, option_value, options
from onnxsal.images import DEFAULT_MAX_PIXELS
from onnxsal.metadata import CHANNEL_ORDERS, LAYOUTS, RESAMPLE
from onnxsal.methods import METHODS
from onnxsal.pictures import DEFAULT_COLORMAP, SALIENCY_COLORMAP, SHOWS

# A side of a model input beyond this is a typo (a 8192x8192 RGB input is 800 MB a batch).
MAX_SIDE = 8192
MAX_BATCH = 1024
# Per-input repetitions (noisy copies, path steps, masks): beyond these a run takes days.
LIMITS: dict[str, tuple[int, int]] = {
    "n_samples": (1, 10_000),
    "steps": (1, 10_000),
    "n_masks": (1, 100_000),
}
# Flags kept short for the options everyone uses.
ALIASES = {"n_samples": ("--samples",)}
# The preprocessing bundle's parameters, in the order commands receive them.
PREPROCESS_FLAGS = ("size", "resize", "crop", "scale", "mean", "std", "layout", "channel_order")


def preprocess_options(*, layout_default: str | None = None) -> Callable:
    """How pictures become model inputs: the model's metadata, overridden flag by flag."""
    return options(
        click.option(
            "--size",
            type=Numbers(2, integer=True, low=1, high=MAX_SIDE),
            help="Model input size H,W (overrides the metadata).",
        ),
        click.option(
            "--resize-filter", "resize", type=click.Choice(list(RESAMPLE)), help="Resize filter."
        ),
        click.option(
            "--crop",
            type=bounded(0, 1, low_open=True),
            help="Centre crop, a fraction (0, 1] of the shorter side.",
        ),
        click.option(
            "--scale",
            type=bounded(-1e6, 1e6),
            help="Pixels (0-255) are multiplied by this first.",
        ),
        click.option("--mean", type=Numbers(), help="Per-channel means, comma-separated."),
        click.option(
            "--std",
            type=Numbers(low=0, low_open=True),
            help="Per-channel standard deviations (> 0), comma-separated.",
        ),
        click.option(
            "--layout",
            type=click.Choice(LAYOUTS),
            default=layout_default,
            show_default=layout_default is not None,
        ),
        click.option(
            "--channel-order",
            type=click.Choice(CHANNEL_ORDERS),
            help="Channel order the model takes (L: grayscale).",
        ),
    )


tensor_options = options(
    click.option("--input", "input_name", help="The input to explain (models with several)."),
    click.option(
        "--output",
        "output_name",
        help="The tensor explained: a model output or any tensor (default: the first float "
        "output).",
    ),
    click.option(
        "--feed",
        multiple=True,
        metavar="NAME=FILE.npy",
        help="A value for another input of the model (repeatable); inputs then run one at a time.",
    ),
    click.option("--keep-softmax", is_flag=True, help="Explain the probability, not the logit."),
)


example_option = click.option(
    "--example",
    type=click.Path(exists=True, dir_okay=False),
    help="A sample (.npy/.npz/.csv) to measure the model's output shapes on, for models whose "
    "input sizes are dynamic.",
)


def max_pixels_option(fn: Callable) -> Callable:
    return click.option(
        "--max-pixels",
        type=click.IntRange(1),
        default=DEFAULT_MAX_PIXELS,
        show_default=True,
        help="Pictures with more pixels are refused (a small file can declare a huge one).",
    )(fn)


def batch_size_option(default: int = 16) -> Callable:
    return click.option(
        "--batch-size",
        default=default,
        show_default=True,
        type=click.IntRange(1, MAX_BATCH),
        help="Inputs run through the model at once.",
    )


def _option_names() -> dict[str, list[str]]:
    """Each declared method option and the methods that take it."""
    taken: dict[str, list[str]] = {}
    for name, method in METHODS.items():
        for option in sorted(method.options):
            taken.setdefault(option, []).append(name)
    return taken


def flag(option: str) -> str:
    return "--" + option.replace("_", "-")


class MethodOption(click.ParamType):
    """A method option's value: a number, comma-separated numbers, or text; bounded
    where LIMITS says."""

    name = "value"

    def __init__(self, option: str):
        self.option = option

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if not isinstance(value, str):
            return value
        parsed = option_value(value)
        if self.option in LIMITS:
            low, high = LIMITS[self.option]
            if not isinstance(parsed, int) or not low <= parsed <= high:
                self.fail(f"'{value}' is not an integer in [{low}, {high}].", param, ctx)
        return parsed


def method_options(fn: Callable) -> Callable:
    """A flag for every option any method declares (see the module doc)."""
    for option, methods in sorted(_option_names().items(), reverse=True):
        fn = click.option(
            flag(option),
            *ALIASES.get(option, ()),
            option,
            type=MethodOption(option),
            help=f"Option of {', '.join(methods)}.",
        )(fn)
    return fn


def method_option_values(given: dict[str, Any]) -> dict[str, Any]:
    """The method options among a command's parameters, those given only."""
    names = _option_names()
    return {k: v for k, v in given.items() if k in names and v is not None}


def preprocess_values(flags: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing bundle's values among a command's parameters (taken out)."""
    return {name: flags.pop(name) for name in PREPROCESS_FLAGS}


def preprocessing(ex, *, size, resize, crop, scale, mean, std, layout, channel_order) -> Any:
    """The model's recorded preprocessing, flags overriding; for models without metadata,
    channels and layout follow the input's shape. A recipe whose pictures cannot fit the
    model's input is refused here, once, naming the flags."""
    from onnxsal.images import with_overrides

    order = channel_order
    if ex.preprocess is None:
        layout = layout or ex.layout
        dims = ex.input_shape
        channels = dims[-1] if layout == "NHWC" else (dims[1] if len(dims) > 1 else None)
        if order is None and channels == 1:
            order = "L"
        width = 1 if channels == 1 else 3
        mean = mean or (0.0,) * width
        std = std or (1.0,) * width
    recipe = with_overrides(
        ex.preprocess,
        size=size,
        resize=resize,
        crop=crop,
        scale=scale,
        mean=list(mean) if mean else None,
        std=list(std) if std else None,
        layout=layout,
        channel_order=order,
    )
    _check_fits(recipe, ex.input_shape)
    return recipe


def _check_fits(recipe: Any, dims: tuple) -> None:
    """Pictures made by `recipe` must have the input's rank and its fixed sizes."""
    from onnxsal.errors import OptionError

    channels = 1 if recipe.channel_order == "L" else 3
    h, w = recipe.size
    made = (channels, h, w) if recipe.layout == "NCHW" else (h, w, channels)
    if not dims:
        return
    if len(dims) != 4:
        raise OptionError(
            f"the model's input has {len(dims)} axes {list(dims)}, not a batch of pictures; "
            "give samples as .npy/.npz/.csv files."
        )
    for got, want, flag_name in zip(made, dims[1:], _flags_of_axes(recipe.layout)):
        if isinstance(want, int) and got != want:
            raise OptionError(
                f"pictures would be {recipe.layout} {[1, *made]} but the model's input is "
                f"{list(dims)}: check {flag_name}."
            )


def _flags_of_axes(layout: str) -> tuple[str, str, str]:
    channels = "--channel-order (L: 1 channel, RGB/BGR: 3) or --layout"
    size = "--size (H,W) or --layout"
    return (channels, size, size) if layout == "NCHW" else (size, size, channels)


def colormap_option(fn: Callable) -> Callable:
    return click.option(
        "--colormap",
        default=DEFAULT_COLORMAP,
        show_default=True,
        callback=_known_colormap,
        help="Colormap of overlays, traces and heat maps: any name cmap knows (viridis, "
        "magma, gray...).",
    )(fn)


def _known_colormap(ctx: Any, param: Any, value: str) -> str:
    from cmap import Colormap

    try:
        Colormap(value)
    except Exception:
        raise click.BadParameter(f"'{value}' is not a colormap cmap knows.") from None
    return value


show_options = options(
    click.option(
        "--show",
        type=click.Choice(SHOWS),
        default="both",
        show_default=True,
        help="What panels show of each map beside the photo: the map on its own (faint "
        "gradient specks become visible), the map over the photo, or both.",
    ),
    click.option(
        "--saliency-colormap",
        default=SALIENCY_COLORMAP,
        show_default=True,
        callback=_known_colormap,
        help="Colormap of the maps drawn on their own, for methods whose maps are unsigned; "
        f"signed ones ({', '.join(n for n, m in METHODS.items() if m.signed)}) are red above "
        "zero, blue below, white at zero.",
    ),
)
