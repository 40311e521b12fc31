"""The `onnxsal` command line.

Exit codes: 0 success, 1 when something failed (the message says what and
how to fix it), 2 for usage errors (click's convention).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from onnxsal import __version__
from onnxsal.errors import OnnxsalError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _floats(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a comma-separated list of numbers.") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a comma-separated list of integers.") from None


def _build(spec: str) -> Any:
    """'package.module:callable' -> the object the callable returns."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise click.BadParameter(f"'{spec}' is neither a file nor module:callable.")
    sys.path.insert(0, str(Path.cwd()))
    try:
        fn: Callable = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot import {spec}: {exc}") from None
    return fn() if callable(fn) else fn


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="onnxsal")
def main() -> None:
    """Gradient saliency maps for any ONNX model.

    \b
    Examples:
      onnxsal models
      onnxsal convert torch mynet:build --input-shape 3,224,224 -o mynet.onnx
    """


@main.command("models")
def models_cmd() -> None:
    """List the model zoo (names work wherever a model path does).

    \b
    Example:
      onnxsal models
    """
    from onnxsal.models import ZOO

    for model in ZOO.values():
        click.echo(f"{model.name}\n  {model.description}\n  needs: {model.needs}")


def _preprocess_options(fn: Callable) -> Callable:
    options = [
        click.option("--size", help="Input size H,W the model expects (recorded for the CLI)."),
        click.option(
            "--resize",
            default="bilinear",
            show_default=True,
            type=click.Choice(["nearest", "bilinear", "bicubic", "lanczos"]),
        ),
        click.option("--crop", type=float, help="Centre crop, a fraction of the shorter side."),
        click.option(
            "--scale",
            type=float,
            default=1.0,
            show_default=True,
            help="Pixels (0-255) are multiplied by this first.",
        ),
        click.option("--mean", help="Per-channel means, comma-separated."),
        click.option("--std", help="Per-channel standard deviations, comma-separated."),
        click.option(
            "--channel-order",
            default="RGB",
            show_default=True,
            type=click.Choice(["RGB", "BGR", "L"]),
        ),
        click.option(
            "--labels",
            type=click.Path(exists=True, dir_okay=False),
            help="A text file with one class name per line.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _metadata(layout: str, size, resize, crop, scale, mean, std, channel_order, labels):
    from onnxsal.metadata import Preprocess

    pre = None
    if size:
        channels = 1 if channel_order == "L" else 3
        pre = Preprocess(
            size=_ints(size),
            resize=resize,
            crop=crop,
            scale=scale,
            mean=_floats(mean) or [0.0] * channels,
            std=_floats(std) or [1.0] * channels,
            channel_order=channel_order,
            layout=layout,
        )
    names = None
    if labels:
        names = [line.strip() for line in Path(labels).read_text().splitlines() if line.strip()]
    return pre, names


@main.group(context_settings=CONTEXT)
def convert() -> None:
    """Export a PyTorch or Keras model to ONNX, verified before it is written.

    \b
    Examples:
      onnxsal convert torch model.pt --input-shape 3,224,224 -o model.onnx
      onnxsal convert torch torchvision.models:resnet18 --input-shape 3,224,224 -o r18.onnx
      onnxsal convert keras model.keras -o model.onnx
    """


@convert.command("torch")
@click.argument("source")
@click.option("--input-shape", required=True, help="One sample's shape, e.g. 3,224,224.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--exporter",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "dynamo", "torchscript"]),
)
@click.option("--opset", type=int, help="ONNX opset (default: the exporter's).")
@click.option("--layout", default="NCHW", show_default=True, type=click.Choice(["NCHW", "NHWC"]))
@_preprocess_options
@click.option("-q", "--quiet", is_flag=True)
def convert_torch(source, input_shape, output, exporter, opset, layout, quiet, **pre) -> None:
    """SOURCE: a TorchScript file, or module:callable returning an nn.Module.

    \b
    Example:
      onnxsal convert torch mypkg.nets:build --input-shape 3,32,32 -o net.onnx --size 32,32
    """
    from onnxsal.converters import from_torch

    module = source if Path(source).exists() else _build(source)
    preprocess, labels = _metadata(layout, **pre)
    try:
        model = from_torch(
            module,
            _ints(input_shape),
            output,
            exporter=exporter,
            opset=opset,
            layout=layout,
            preprocess=preprocess,
            labels=labels,
        )
    except OnnxsalError as exc:
        fail(str(exc))
    _report(model, output, quiet)


@convert.command("keras")
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--layout",
    default="NHWC",
    show_default=True,
    type=click.Choice(["NHWC", "NCHW"]),
    help="NCHW adds an input transpose.",
)
@_preprocess_options
@click.option("-q", "--quiet", is_flag=True)
def convert_keras(source, output, layout, quiet, **pre) -> None:
    """SOURCE: a .keras or .h5 file, or module:callable returning a keras.Model.

    \b
    Example:
      KERAS_BACKEND=torch onnxsal convert keras model.keras -o model.onnx
    """
    from onnxsal.converters import from_keras

    model_source = source if Path(source).exists() else _build(source)
    preprocess, labels = _metadata(layout, **pre)
    try:
        model = from_keras(
            model_source, output, layout=layout, preprocess=preprocess, labels=labels
        )
    except OnnxsalError as exc:
        fail(str(exc))
    _report(model, output, quiet)


def _report(model, output: str, quiet: bool) -> None:
    if quiet:
        return
    from onnxsal import metadata

    md = metadata.read(model)
    source, verified = md.get("source", {}), md.get("verified", {})
    click.echo(
        f"wrote {output}: {source.get('framework')} {source.get('framework_version')} via "
        f"{source.get('exporter')}; matches the framework on batches "
        f"{verified.get('batches')} (relative L2 {verified.get('rel_l2', 0):.1e}); "
        f"{len(md.get('layers') or {})} layer names mapped"
    )


if __name__ == "__main__":  # pragma: no cover
    main()
