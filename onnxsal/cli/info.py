"""`onnxsal models` and `onnxsal doctor`: what is at hand, and whether it works."""

from __future__ import annotations

import importlib.util
import sys

import click

from onnxsal import __version__
from onnxsal.errors import OnnxsalError

# Distributions doctor reports: onnxsal's own dependencies, then the optional ones.
REPORTED = (
    "onnx",
    "onnx-ir",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "numpy",
    "pillow",
    "click",
    "cmap",
    "jinja2",
    "torch",
    "keras",
    "tensorflow-cpu",
    "tf2onnx",
)


@click.command("models")
def models() -> None:
    """List the model zoo (names work wherever a model path does).

    \b
    Example:
      onnxsal models
    """
    from onnxsal.models import ZOO

    for model in ZOO.values():
        click.echo(f"{model.name}\n  {model.description}\n  needs: {model.needs}")


@click.command()
def doctor() -> None:
    """Versions, execution providers, known installation problems, the cache folder.

    \b
    Example:
      onnxsal doctor
    """
    from importlib import metadata as dist

    from onnxsal import runtime
    from onnxsal.models import cache_dir

    click.echo(f"onnxsal {__version__} (Python {sys.version.split()[0]})")
    for name in REPORTED:
        try:
            click.echo(f"  {name:16s} {dist.version(name)}")
        except dist.PackageNotFoundError:
            click.echo(f"  {name:16s} -")
    try:
        rt = runtime.ort()
        click.echo(f"execution providers available: {', '.join(rt.get_available_providers())}")
        click.echo(f"default choice: {', '.join(runtime.default_providers())}")
        other = "installed" if importlib.util.find_spec("openvino") else "not installed"
        click.echo(f"OpenVINO runtime (--providers openvino|fastest): {other}")
    except OnnxsalError as exc:
        click.echo(f"onnxruntime: {exc}")
    if runtime.both_runtimes_installed():
        click.echo(
            "PROBLEM: onnxruntime and onnxruntime-gpu are both installed and break each "
            "other: pip uninstall -y onnxruntime onnxruntime-gpu && pip install "
            "'onnxsal[gpu]' (or [cpu])."
        )
    click.echo(f"cache: {cache_dir()} (set ONNXSAL_CACHE to move it)")
