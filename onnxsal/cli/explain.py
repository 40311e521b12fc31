"""`onnxsal explain`: many inputs, one folder of maps and a journal (see cli.job)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from onnxsal.cli import common, table
from onnxsal.cli.files import STATE, exclusive, signals_held
from onnxsal.cli.inputs import Source, find_inputs, read_manifest, require_inputs
from onnxsal.cli.job import Run, run_here
from onnxsal.cli.journal import SUMMARIES, Journal
from onnxsal.cli.options import (
    batch_size_option,
    colormap_option,
    max_pixels_option,
    method_option_values,
    method_options,
    preprocess_options,
    preprocess_values,
    preprocessing,
    show_options,
    tensor_options,
)
from onnxsal.cli.render import FORMATS, Drawing
from onnxsal.cli.worker import JobRequest
from onnxsal.errors import OnnxsalError
from onnxsal.methods import METHODS
from onnxsal.postprocess import GRAD_MODIFIERS, REDUCTIONS

TARGET_HELP = (
    "What to explain: a class index or label (default: each input's top-1), or e.g. "
    "step=5,class=12 / box=10,20,60,80,class=1 / anchor=417,class=0 / index=2,5 / sequence / "
    "scalar (see the README, or 'onnxsal inspect MODEL' for the ones that fit)."
)


@click.command()
@click.argument("model")
@click.argument("inputs", nargs=-1)
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False),
    help="A table of inputs (.csv or .parquet): a 'path' column (relative to the "
    "manifest's folder), and a 'target' column (class index or label per input) if wanted.",
)
@click.option(
    "-m",
    "--method",
    default="vanilla",
    show_default=True,
    type=click.Choice(list(METHODS)),
    help="The saliency method (occlusion and rise need no gradient).",
)
@click.option("-t", "--target", help=TARGET_HELP)
@click.option("--layer", help="Explain a unit of this layer (with --unit); Grad-CAM's layer.")
@click.option("--unit", type=click.IntRange(0), help="The unit (channel) of --layer, 0-based.")
@click.option(
    "--wrt",
    help="Attribute to this tensor instead of the input ('auto': where integer inputs such "
    "as tokens become real numbers).",
)
@click.option("--grad-modifier", type=click.Choice(list(GRAD_MODIFIERS)))
@click.option(
    "--reduce",
    default="max",
    show_default=True,
    type=click.Choice(REDUCTIONS),
    help="Channel reduction.",
)
@click.option(
    "-o", "--out", default="onnxsal-out", show_default=True, type=click.Path(file_okay=False)
)
@click.option(
    "--format",
    "fmt",
    default="png",
    show_default=True,
    type=click.Choice(FORMATS),
    help="npy/npz also keep the raw map; parquet keeps it in the results table "
    "(table/) and draws no pictures.",
)
@click.option("--overlay/--no-overlay", default=True, show_default=True)
@click.option(
    "--alpha", default=0.6, show_default=True, type=click.FloatRange(0, 1), help="Overlay opacity."
)
@colormap_option
@show_options
@click.option(
    "--panel", is_flag=True, help="Also write panels: original | saliency | overlay (--show)."
)
@click.option(
    "--original-size",
    is_flag=True,
    help="Draw maps at the picture's own size (at most 2048 pixels a side).",
)
@batch_size_option()
@click.option(
    "--providers",
    help="onnxruntime providers, comma-separated; or 'openvino' (OpenVINO runs the graph), or "
    "'fastest' (whichever of the two runs this model faster, measured on the first batch).",
)
@click.option("--resume", is_flag=True, help="Skip inputs finished before with the same settings.")
@click.option(
    "--engine",
    default="local",
    show_default=True,
    type=click.Choice(["local", "ray"]),
    help="local: this process. ray: a pool of Ray actors (pip install 'onnxsal[ray]'), on "
    "this machine or the cluster at --address.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="With the local engine: processes explaining at once, each with its share of the "
    "cores (2 on 2 cores: 1.4x the pictures a second; each holds its own model).",
)
@click.option(
    "--address", help="With --engine ray: the cluster to join ('auto', HOST:PORT, ray://...)."
)
@click.option(
    "--actors",
    default=2,
    show_default=True,
    type=click.IntRange(1),
    help="With --engine ray: how many actors explain (each builds the model once).",
)
@click.option(
    "--cpus-per-actor",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="With --engine ray: CPUs Ray reserves per actor (its onnxruntime threads: the "
    "whole part, at least 1).",
)
@click.option(
    "--gpus-per-actor",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="With --engine ray: GPUs per actor (with onnxruntime-gpu and --providers).",
)
@max_pixels_option
@method_options
@tensor_options
@preprocess_options()
@common.verbosity
@common.guarded
def explain(
    model,
    inputs,
    manifest,
    method,
    target,
    layer,
    unit,
    wrt,
    grad_modifier,
    reduce,
    out,
    fmt,
    overlay,
    alpha,
    colormap,
    show,
    saliency_colormap,
    panel,
    original_size,
    batch_size,
    providers,
    resume,
    engine,
    workers,
    address,
    actors,
    cpus_per_actor,
    gpus_per_actor,
    max_pixels,
    input_name,
    output_name,
    feed,
    keep_softmax,
    quiet,
    verbose,
    **flags,
) -> None:
    """Explain images (files, folders, globs) or samples (.npy, .npz, .csv) with MODEL (a
    path or zoo name).

    Writes, per input, NAME.METHOD.SETTINGS.saliency.png and, for images, .overlay.png (a
    panel with --panel; the raw map with --format npy/npz, always for samples) under -o,
    keeping relative paths; NAME keeps the input's extension, SETTINGS is a digest of the
    settings. Every finished input is recorded in -o's journal at once; summary.json,
    summary.csv and the Parquet table (-o/table/) list every input explained into -o, this
    run's and earlier ones'. A file of
    several samples gives one input per sample (NAME.ROW). Bad inputs are reported and
    skipped; the exit code is 1 if any failed.

    \b
    Examples:
      onnxsal explain efficientnet-lite0 cat.jpg -m guided
      onnxsal explain model.onnx photos/ -m smoothgrad --samples 25 -o maps/ --resume
      onnxsal explain recogniser.onnx line.png -t step=5,class=12
      onnxsal explain tabular.onnx rows.csv -m integrated_gradients
      onnxsal explain tokens.onnx ids.npy --wrt auto -m input_x_gradient
      onnxsal explain model.onnx data/ --format parquet --engine ray --actors 8
    """
    started = time.perf_counter()
    if layer is not None and not layer.strip():
        raise click.BadParameter(
            "give the name of a layer ('onnxsal inspect MODEL' lists them).", param_hint="--layer"
        )
    if unit is not None and layer is None:
        raise click.BadParameter("--unit is a unit of --layer; give --layer too.")
    folder = Path(out)
    _refuse_ray_options_without_ray(engine, address, actors, cpus_per_actor, gpus_per_actor)
    if workers > 1 and engine == "ray":
        raise click.BadParameter("on Ray, --actors says how many explain.", param_hint="--workers")
    pre = preprocess_values(flags)
    feeds = common.feeds(feed)
    sources, missing = find_inputs(list(inputs), skip=folder, stores=True)
    wanted: dict[str, str] = {}
    if manifest is not None:
        listed, wanted, absent = read_manifest(Path(manifest))
        known = {s.key() for s in sources}
        sources += [s for s in listed if s.key() not in known]
        missing += absent
    elif not inputs:
        raise click.BadParameter("name the inputs, or give --manifest.", param_hint="INPUTS")
    if wanted and target is not None:
        raise click.BadParameter(
            "the manifest gives each input its target; drop -t (or the 'target' column).",
            param_hint="-t",
        )
    require_inputs(sources, missing)
    _refuse_foreign_summaries(folder, sources)
    ex = common.explainer(
        model, providers, input=input_name, output=output_name, keep_softmax=keep_softmax
    )
    goal = common.target(target, ex.labels)
    targets = {key: _class_index(text, ex.labels) for key, text in wanted.items()}
    if layer is not None and not METHODS[method].layer_is_own:
        goal, unit = _unit_of_layer(goal, unit)
    request = JobRequest(
        method=method,
        target=goal,
        target_text="per input (manifest)" if targets else target,
        layer=layer,
        unit=unit,
        wrt=wrt,
        grad_modifier=grad_modifier,
        options=method_option_values(flags),
        feeds=feeds,
        batch_size=batch_size,
    )
    drawing = Drawing(
        fmt, overlay, panel, original_size, colormap, alpha, reduce, show, saliency_colormap
    )
    protected = {s.path.resolve() for s in sources if s.url is None} | _summaries(folder)
    for given in (model, manifest):
        if given is not None and Path(given).is_file():
            protected.add(Path(given).resolve())
    on = run_here
    if engine == "ray" or workers > 1:
        from onnxsal.cli.worker import ExplainerRecipe
        from onnxsal.explainer import load

        recipe = ExplainerRecipe(
            load(model).SerializeToString(),
            providers.split(",") if providers else None,
            ex.input_name,
            ex.output_name,
            keep_softmax,
        )
        if engine == "ray":
            from onnxsal.cli.ray_engine import OnRay

            on = OnRay(recipe, address, actors, cpus_per_actor, gpus_per_actor)
        else:
            from onnxsal.cli.processes import InProcesses

            on = InProcesses(recipe, workers)
    with exclusive(folder) as lock:
        journal = Journal(folder, check=lock.check)
        journal.adopt_summary()
        run = Run(
            ex,
            model,
            request,
            drawing,
            folder,
            journal,
            preprocess=lambda: preprocessing(ex, **pre),
            report=lambda message: common.echo(f"error: {message}", err=True),
            max_pixels=max_pixels,
            protected=frozenset(protected),
            targets=targets,
        )
        todo = run.plan(sources, missing, resume)
        _run(run, todo, on, quiet)
    if not quiet:
        earlier = f", {run.skipped} done before" if run.skipped else ""
        common.echo(
            f"{run.succeeded} explained, {run.failed} failed{earlier}, in "
            f"{time.perf_counter() - started:.1f} s; outputs in {folder}/ "
            "(summary.json, summary.csv, table/)"
        )
    if run.failed:
        sys.exit(1)


def _summaries(folder: Path) -> set[Path]:
    return {(folder / name).resolve() for name in SUMMARIES}


def _refuse_foreign_summaries(folder: Path, sources: list[Source]) -> None:
    """Summaries are onnxsal's files in -o: never an input, never someone else's file."""
    ours = _summaries(folder)
    for source in sources:
        if source.url is None and source.path.resolve() in ours:
            raise click.BadParameter(
                f"the input '{source.path}' is where the summary goes; choose another -o.",
                param_hint="-o",
            )
    if not (folder / STATE).is_dir():
        for name in SUMMARIES:
            if (folder / name).exists():
                raise click.BadParameter(
                    f"'{folder / name}' exists and no onnxsal run wrote it; choose another -o.",
                    param_hint="-o",
                )


def _class_index(text: str, labels: list[str] | None) -> int:
    """A manifest's target: a class, by index or label."""
    from onnxsal.targets import Class

    try:
        found = common.target(text, labels)
    except OnnxsalError:
        found = None
    if not (isinstance(found, Class) and found.output is None and found.axis is None):
        raise click.BadParameter(
            f"the manifest's target '{text}' is not a class index or label; the 'target' "
            "column holds classes (other targets: -t for the whole run).",
            param_hint="--manifest",
        )
    return int(found.index)


def _unit_of_layer(goal, unit: int | None) -> tuple:
    """With --layer (not Grad-CAM's own), -t N names the unit, as --unit N does."""
    from onnxsal.targets import Class

    if goal is None:
        return None, unit
    if not (isinstance(goal, Class) and goal.output is None and goal.index is not None):
        raise click.BadParameter(
            "with --layer, -t is the unit of that layer: an index.", param_hint="-t"
        )
    if unit is not None and unit != goal.index:
        raise click.BadParameter(
            f"-t {goal.index} and --unit {unit} both name the unit of --layer; give one.",
            param_hint="-t",
        )
    return None, goal.index


def _refuse_ray_options_without_ray(engine, address, actors, cpus, gpus) -> None:
    given = [
        name
        for name, value, default in (
            ("--address", address, None),
            ("--actors", actors, 2),
            ("--cpus-per-actor", cpus, 1.0),
            ("--gpus-per-actor", gpus, 0.0),
        )
        if value != default
    ]
    if given and engine != "ray":
        raise click.BadParameter(
            f"{', '.join(given)} set{'s' if len(given) == 1 else ''} up Ray actors; add "
            "--engine ray.",
            param_hint="--engine",
        )


def _run(run: Run, todo, engine, quiet: bool) -> None:
    """Run the tasks; the table and the summaries are made whole at the end whatever
    happens (an interrupt, a full disk), with Ctrl-C and SIGTERM held until they are."""
    show = not quiet and sys.stderr.isatty()
    bar = click.progressbar(length=len(todo), label="explaining", file=sys.stderr) if show else None
    failed = True
    try:
        run.run(todo, engine, progress=bar.update if bar else lambda _: None)
        failed = False
    finally:
        if bar:
            bar.render_finish()
        with signals_held():
            try:
                table.prune(run.folder, run.journal.rows())
                run.journal.write_summaries()
            except Exception:
                if not failed:
                    raise  # otherwise the run's own error is the one to tell (the journal is kept)
