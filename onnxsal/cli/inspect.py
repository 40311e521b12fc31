"""`onnxsal inspect`: what a model is, and what can explain it."""

from __future__ import annotations

import json

import click

from onnxsal.cli import common
from onnxsal.cli.options import example_option
from onnxsal.methods import METHODS


@click.command()
@click.argument("model")
@click.option("--all-layers", is_flag=True, help="List every tensor, not only named layers.")
@click.option("--input", "input_name", help="The input to explain (models with several).")
@example_option
@common.verbosity
@common.guarded
def inspect(model, all_layers, input_name, example, quiet, verbose) -> None:
    """What MODEL is: inputs and outputs with their kinds and the targets that fit, layout,
    opset, metadata, layers, and which methods can run on it.

    \b
    Example:
      onnxsal inspect efficientnet-lite0
    """
    ex = common.explainer(model, input=input_name)
    md = ex.metadata
    irm = ex.model
    graph = irm.graph
    common.echo(f"model: {model}")
    common.echo(
        f"opset: {ex.opset} (as read: {ex.source_opset}); producer: "
        f"{irm.producer_name or '?'} {irm.producer_version or ''}".rstrip()
    )
    for note in ex.notes:
        common.echo(f"note: {note}")
    for v in graph.inputs:
        if v.name in graph.initializers:
            continue
        if v.name == ex.input_name:
            common.echo(f"input:  {v.name} {list(ex.input_shape)} {v.dtype}  <- explained")
            common.echo(f"  kind: {_input_kind(ex)}")
        else:
            feed = f"(give it: --feed {v.name}=FILE.npy)"
            common.echo(f"input:  {v.name} {v.shape} {v.dtype}  {feed}")
    if ex.layout:
        common.echo(
            f"layout: {ex.layout}"
            + (" (from metadata)" if md.get("layout") else " (guessed from the input shape)")
        )
    kinds = dict(ex.output_kinds(common.example(example, ex)))
    for v in graph.outputs:
        mark = "  <- explained" if v.name == ex.output_name else ""
        common.echo(f"output: {v.name} {v.shape} {v.dtype}{mark}")
        found = kinds.get(v.name)
        if isinstance(found, str):
            common.echo(f"  kind: {found}")
            continue
        facts, kind = found
        common.echo(f"  kind: {kind.name}, {facts.describe()}")
        for fit in kind.fits:
            named = "" if v.name == ex.output_name else f"--output {v.name} "
            cli = fit.cli.replace(f"output={v.name},", "")
            common.echo(
                f"  {named}-t {cli:34s} {fit.api}" + (f"  ({fit.notes})" if fit.notes else "")
            )
    if md.get("source"):
        common.echo(f"source: {json.dumps(md['source'])}")
    if ex.layout:
        common.echo(
            "preprocess: "
            + (
                json.dumps(md["preprocess"])
                if md.get("preprocess")
                else "none recorded (explain needs --size etc. for images)"
            )
        )
    common.echo(f"labels: {len(ex.labels)} classes" if ex.labels else "labels: none")
    layers = ex.layers()
    named = [lay for lay in layers if lay.name != lay.tensor]
    shown = layers if all_layers or not named else named
    common.echo(
        f"layers for --layer, --wrt, --output ({len(shown)} of {len(layers)} tensors"
        + ("; --all-layers for every tensor" if shown is not layers else "")
        + "):"
    )
    for lay in shown:
        tensor = "" if lay.tensor == lay.name else f"  (tensor {lay.tensor})"
        common.echo(f"  {lay.name:24s} {lay.op_type:18s} {list(lay.shape)}{tensor}")
    start = "auto" if ex.integer_input and ex.embeddings() else None
    cov = ex.coverage(wrt=start)
    ops = ", ".join(f"{op} x{n}" for op, n in sorted(cov.path_ops.items()))
    common.echo(f"ops on the path from the {'embedding' if start else 'input'}: {ops}")
    for op, nodes in sorted(cov.specialised.items()):
        common.echo(
            f"  {op}: {len(nodes)} node(s), rewritten for each kind of input (branch taken, "
            "steps run) before differentiating"
        )
    free = [name for name, m in METHODS.items() if not m.needs_gradient]
    if cov.missing:
        common.echo("NO gradient rule for:")
        for op, nodes in sorted(cov.missing.items()):
            common.echo(f"  {op}: {len(nodes)} node(s), first '{nodes[0]}'")
        common.echo(
            "so no gradient method can explain the output"
            + (f"; these need no gradient: {', '.join(free)}" if free else "")
            + (
                "; tensors before those nodes can be explained with --layer/--output."
                if _something_before(ex, cov)
                else "."
            )
        )
    else:
        common.echo("every op on the path has a gradient rule: all methods can run.")


def _something_before(ex, cov) -> bool:
    """Whether a computed tensor stands before a node that has no gradient rule."""
    nodes = {n.name: n for n in ex.model.graph}
    firsts = [nodes[names[0]] for names in cov.missing.values() if names[0] in nodes]
    return any(v is not None and v.producer() is not None for n in firsts for v in n.inputs)


def _input_kind(ex) -> str:
    """What the explained input holds, as a user would call it."""
    dims = ex.input_shape
    if ex.integer_input:
        found = ex.embeddings()
        if not found:
            return "integers, with no embedding found (explain it with occlusion or rise)"
        listed = "; ".join(e.describe() for e in found[:4])
        return f"integers (tokens, bytes, categories): explain them --wrt auto, or one of {listed}"
    if ex.layout:
        return f"an image ({ex.layout})"
    if len(dims) == 2:
        return f"a vector of {dims[1]} (features: .csv rows or .npy; or a 1-D signal)"
    if len(dims) == 3:
        return "a sequence or a multichannel signal [N, A, B] (.npy)"
    return f"a tensor of {len(dims)} axes (.npy)"
