"""`onnxsal compare`: the same inputs explained by two models, and how far the maps differ."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click
import numpy as np

from onnxsal.cli import common
from onnxsal.cli.files import atomic_write, exclusive
from onnxsal.cli.inputs import Source, claim, find_inputs, require_inputs
from onnxsal.cli.options import (
    colormap_option,
    max_pixels_option,
    preprocess_options,
    preprocessing,
)
from onnxsal.errors import InputError
from onnxsal.methods import METHODS


@click.command("compare")
@click.argument("model_a")
@click.argument("model_b")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-m", "--method", default="vanilla", show_default=True, type=click.Choice(list(METHODS))
)
@click.option("-t", "--target", help="What to explain, as explain's -t (default: A's top-1).")
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False),
    help="Write side-by-side pictures (A | B | difference) here, as NAME.compare.png.",
)
@colormap_option
@click.option(
    "--topk",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="Top-k pixel share compared.",
)
@click.option(
    "--tolerance",
    default=1e-4,
    show_default=True,
    type=click.FloatRange(0),
    help="Relative L2 called same.",
)
@max_pixels_option
@preprocess_options()
@common.verbosity
@common.guarded
def compare(
    model_a,
    model_b,
    inputs,
    method,
    target,
    out,
    colormap,
    topk,
    tolerance,
    max_pixels,
    quiet,
    verbose,
    **pre,
) -> None:
    """Explain the same inputs with two models (say, one exported from two frameworks).

    Prints, per input: both top-1, whether they agree, the relative L2 difference of the maps,
    their Spearman rank correlation and top-k pixel overlap. Inputs are preprocessed for
    MODEL_A and transposed for MODEL_B if the layouts differ. Exit code 1 if any differ.

    \b
    Example:
      onnxsal compare digits-cnn digits-cnn-keras digit.png -m guided -o cmp/
    """
    ex_a, ex_b = common.explainer(model_a), common.explainer(model_b)
    folder = Path(out) if out else None
    sources, missing = find_inputs(list(inputs), skip=folder)
    require_inputs(sources, missing, every=True)
    preprocess = preprocessing(ex_a, **pre) if any(s.is_picture for s in sources) else None
    goal = common.target(target, ex_a.labels)
    header_shown, differ = False, False
    owners: dict[str, str] = {}  # output names taken in this run
    with exclusive(folder) if folder else contextlib.nullcontext():
        for source in sources:
            x = _read(source, preprocess, ex_a, max_pixels)
            result = _compare(ex_a, ex_b, x, method, goal, topk, tolerance)
            table = result.table().splitlines()
            names = [_name(source, k, len(x), owners) for k in range(len(x))]
            if not quiet:
                if not header_shown:
                    click.echo(table[0])
                    click.echo("input  " + table[1])
                    header_shown = True
                for name, line in zip(names, table[2:]):
                    common.echo(f"{name}  {line}")
            differ |= not result.same.all()
            if folder is not None:
                _draw(folder, names, result, ex_a.layout, colormap, sources)
    if differ:
        sys.exit(1)


def _compare(ex_a, ex_b, x, method, goal, topk, tolerance):
    import onnxsal

    return onnxsal.compare(ex_a, ex_b, x, method, target=goal, topk=topk, tolerance=tolerance)


def _name(source: Source, k: int, count: int, owners: dict[str, str]) -> Path:
    """The sample's name, as explain names it (two inputs never share one)."""
    sample = None if count == 1 else k
    return claim(source.name(sample), source.key(sample), owners, lambda holder: False)


def _read(source: Source, preprocess, ex, max_pixels: int) -> np.ndarray:
    from onnxsal.images import prepare
    from onnxsal.samples import read_samples

    if not source.is_picture:
        return ex.check_input(read_samples(source.path, ex.sample_rank, ex.input_name).values)
    return prepare(source.path, preprocess, max_pixels=max_pixels).tensor


def _draw(folder: Path, names, result, layout, colormap: str, sources) -> None:
    from onnxsal.pictures import colorize, tile_row, to_map

    inputs = {s.path.resolve() for s in sources}
    for k, rel in enumerate(names):
        a = to_map(result.attribution_a[k], layout)
        b = to_map(result.attribution_b[k], layout)
        diff = np.abs(a - b)
        sheet = tile_row(
            [
                colorize(a, colormap),
                colorize(b, colormap),
                colorize(diff / max(diff.max(), 1e-12), colormap),
            ]
        )
        dest = folder / rel.with_name(f"{rel.name}.compare.png")
        if dest.resolve() in inputs:
            raise InputError(f"'{dest}' would replace an input; choose another -o.")
        atomic_write(dest, lambda tmp, s=sheet: s.save(tmp, format="PNG"))
