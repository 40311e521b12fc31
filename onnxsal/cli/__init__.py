"""The `onnxsal` command line: one module per command, this one gathers them.

Exit codes: 0 success; 1 when something failed (each failure one `error:` line
naming the problem and the fix; -v adds the traceback); 2 for a mistake in the
arguments (one line pointing at --help); 130 when interrupted by Ctrl-C and
143 by SIGTERM (finished outputs and the journal are kept; rerun with --resume).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from onnxsal import __version__
from onnxsal.cli.common import CONTEXT, INTERRUPTED, printable
from onnxsal.cli.compare import compare
from onnxsal.cli.convert import convert
from onnxsal.cli.demo import DEMO_PHOTOS, demo
from onnxsal.cli.evaluate import evaluate
from onnxsal.cli.explain import explain
from onnxsal.cli.export import export
from onnxsal.cli.info import doctor, models
from onnxsal.cli.inspect import inspect

COMMANDS = (explain, evaluate, export, compare, inspect, models, doctor, demo, convert)


class OnnxsalGroup(click.Group):
    """click's group with every usage error as one line (click prints four)."""

    def main(self, args: Any = None, prog_name: Any = None, **extra: Any) -> Any:
        extra["standalone_mode"] = False
        try:
            return super().main(args, prog_name or "onnxsal", **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "onnxsal"
            message = printable(" ".join(exc.format_message().split()))
            click.echo(f"error: {message} (see '{where} --help')", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"error: {printable(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo(INTERRUPTED, err=True)
            sys.exit(130)

    def invoke(self, ctx: click.Context) -> Any:
        """A closed pipe (`onnxsal inspect M | head`: the reader has had enough) ends
        quietly with 141, as a shell shows SIGPIPE (click itself would exit 1)."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # the flush at exit meets no pipe
            sys.exit(141)


@click.group("onnxsal", cls=OnnxsalGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="onnxsal")
def main() -> None:
    """Gradient saliency maps for any ONNX model.

    \b
    Examples:
      onnxsal demo
      onnxsal explain efficientnet-lite0 photos/ -m guided -o maps/
      onnxsal inspect model.onnx
    """


for _command in COMMANDS:
    main.add_command(_command)

__all__ = ["COMMANDS", "DEMO_PHOTOS", "main"]
