"""`onnxsal export`: the model and its gradient graph as one standalone ONNX file."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from onnxsal.cli import common
from onnxsal.cli.files import atomic_write, refuse_overwriting
from onnxsal.cli.options import example_option
from onnxsal.errors import OnnxsalError
from onnxsal.standalone import SINGLE_GRAPH_METHODS


@click.command("export")
@click.argument("model")
@click.option(
    "-m",
    "--method",
    default="vanilla",
    show_default=True,
    type=click.Choice(list(SINGLE_GRAPH_METHODS)),
)
@click.option(
    "--composite",
    help="LRP's composite (-m lrp): epsilon_plus_flat (default), epsilon_alpha2_beta1, epsilon.",
)
@click.option("-t", "--target", help="What to bake in, as explain's -t (default: top-1).")
@click.option("--layer", help="Explain a unit of this layer (-t is the unit).")
@click.option("--input", "input_name", help="The input to explain (models with several).")
@click.option("--output", "output_name", help="The tensor explained (default: the first output).")
@click.option("--keep-softmax", is_flag=True, help="Explain the probability, not the logit.")
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="The explainer file.")
@click.option(
    "--web",
    type=click.Path(file_okay=False),
    help="Write a web explainer folder instead (index.html, onnxsal.js, the graphs; the "
    "page offers every web method, whatever -m says).",
)
@click.option(
    "--offline",
    type=click.Path(exists=True),
    help="With --web: copy onnxruntime-web's files from this archive of "
    "'npm pack onnxruntime-web@1.30.0' (default: load them from a pinned CDN URL).",
)
@click.option("--check", is_flag=True, help="Run the file once and compare with explain.")
@example_option
@common.verbosity
@common.guarded
def export(
    model,
    method,
    composite,
    target,
    layer,
    input_name,
    output_name,
    keep_softmax,
    out,
    web,
    offline,
    check,
    example,
    quiet,
    verbose,
) -> None:
    """Write a standalone explainer: the model plus its gradient graph, one ONNX file.

    Inputs: the model's inputs. Outputs: the model's outputs, then `attribution`
    (`score` and `target_index` too). Runs on any ONNX runtime, no onnxsal needed.

    \b
    Example:
      onnxsal export efficientnet-lite0 -m guided -o lite0-guided.onnx --check
    """
    import onnx

    from onnxsal.standalone import standalone_explainer
    from onnxsal.targets import Class, Unit

    if (out is None) == (web is None):
        raise click.UsageError("give -o FILE (one ONNX explainer) or --web DIR (a web page).")
    if offline is not None and web is None:
        raise click.BadParameter("--offline goes with --web.", param_hint="--offline")
    ex = common.explainer(model, input=input_name, output=output_name, keep_softmax=keep_softmax)
    if web is not None:
        from onnxsal.web import export as web_export

        page = web_export(ex, web, runtime=offline)
        if not quiet:
            common.echo(f"wrote {page}: serve the folder over HTTP (python -m http.server)")
        return
    refuse_overwriting(Path(out), model, example)
    goal = common.target(target, ex.labels)
    if layer is not None:
        if goal is not None and not (isinstance(goal, Class) and goal.output is None):
            raise click.BadParameter("with --layer, -t is the unit: an index.", param_hint="-t")
        goal = Unit(layer, goal.index if goal is not None else None)
    sample = common.example(example, ex)
    if composite is not None and method != "lrp":
        raise click.BadParameter("--composite is LRP's: give -m lrp.", param_hint="--composite")
    proto = standalone_explainer(ex, method, goal, example=sample, composite=composite)
    atomic_write(Path(out), lambda tmp: onnx.save(proto, tmp))
    if not quiet:
        outs = ", ".join(o.name for o in proto.graph.output)
        common.echo(
            f"wrote {out}: inputs {', '.join(i.name for i in proto.graph.input)}; outputs {outs}"
        )
    if check:
        _check(ex, proto, method, goal, sample, quiet, composite)


def _check(ex, proto, method: str, goal, sample, quiet: bool, composite=None) -> None:
    """Run the written file on CPU and compare its attribution with explain()'s."""
    from onnxsal import runtime

    if ex.other_inputs:
        raise OnnxsalError(
            f"--check runs the file on made-up inputs, but the model also takes "
            f"{', '.join(ex.other_inputs)}: run the file with them instead."
        )
    x = np.concatenate([sample] * 2) if sample is not None else ex.example_input(batch=2)
    sess = runtime.session(proto.SerializeToString(), ["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, {ex.input_name: x})))
    options = {"composite": composite} if composite is not None else {}
    want = ex.explain(x, method, goal, **options)
    err = np.linalg.norm(got["attribution"] - want) / max(np.linalg.norm(want), 1e-30)
    if err > 1e-5:
        raise OnnxsalError(f"check failed: the file's attribution differs by {err:.1e}.")
    if not quiet:
        click.echo(f"check: the file reproduces explain() (relative L2 {err:.1e})")
