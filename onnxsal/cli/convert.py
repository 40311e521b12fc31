"""`onnxsal convert`: PyTorch and Keras models to ONNX, verified before they are written."""

from __future__ import annotations

from pathlib import Path

import click

from onnxsal.cli import common
from onnxsal.cli.files import refuse_overwriting
from onnxsal.cli.options import preprocess_options

labels_option = click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False),
    help="A text file with one class name per line.",
)


@click.group(context_settings=common.CONTEXT)
def convert() -> None:
    """Export a PyTorch or Keras model to ONNX, verified before it is written.

    The preprocessing flags (--size at least) are recorded in the model, so that
    `explain` reads pictures as the model was trained.

    \b
    Examples:
      onnxsal convert torch model.pt --input-shape 3,224,224 -o model.onnx
      onnxsal convert torch mypkg.nets:build --input-shape 3,224,224 -o net.onnx
      onnxsal convert keras model.keras -o model.onnx
    """


@convert.command("torch")
@click.argument("source")
@click.option(
    "--input-shape",
    required=True,
    type=common.Numbers(integer=True, low=1),
    help="One sample's shape, e.g. 3,224,224.",
)
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--exporter",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "dynamo", "torchscript"]),
)
@click.option("--opset", type=click.IntRange(7), help="ONNX opset (default: the exporter's).")
@preprocess_options(layout_default="NCHW")
@labels_option
@common.verbosity
@common.guarded
def convert_torch(source, input_shape, out, exporter, opset, quiet, verbose, **pre) -> None:
    """SOURCE: a TorchScript file, or module:callable returning an nn.Module.

    \b
    Example:
      onnxsal convert torch mypkg.nets:build --input-shape 3,32,32 -o net.onnx --size 32,32
    """
    from onnxsal.converters import from_torch

    refuse_overwriting(Path(out), source)
    module = source if Path(source).exists() else common.build(source)
    preprocess, labels = _metadata(**pre)
    model = from_torch(
        module,
        input_shape,
        out,
        exporter=exporter,
        opset=opset,
        layout=pre["layout"],
        preprocess=preprocess,
        labels=labels,
    )
    _report(model, out, quiet)


@convert.command("keras")
@click.argument("source")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False))
@preprocess_options(layout_default="NHWC")
@labels_option
@common.verbosity
@common.guarded
def convert_keras(source, out, quiet, verbose, **pre) -> None:
    """SOURCE: a .keras or .h5 file, or module:callable returning a keras.Model
    (--layout NCHW adds an input transpose).

    \b
    Example:
      KERAS_BACKEND=torch onnxsal convert keras model.keras -o model.onnx
    """
    from onnxsal.converters import from_keras

    refuse_overwriting(Path(out), source)
    model_source = source if Path(source).exists() else common.build(source)
    preprocess, labels = _metadata(**pre)
    model = from_keras(
        model_source, out, layout=pre["layout"], preprocess=preprocess, labels=labels
    )
    _report(model, out, quiet)


def _metadata(*, size, labels, **given):
    """The preprocessing recorded in the model (None without --size; flags not given keep
    Preprocess's defaults) and its labels."""
    from onnxsal.metadata import Preprocess

    pre = None
    if size:
        chosen = {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}
        pre = Preprocess(size=tuple(size), **{k: v for k, v in chosen.items() if v is not None})
    names = None
    if labels:
        text = Path(labels).read_text(encoding="utf-8", errors="replace")
        names = [line.strip() for line in text.splitlines() if line.strip()]
    return pre, names


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
