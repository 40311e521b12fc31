"""What every command shares: one-line errors, exit codes, and reading common arguments.

A command is wrapped in `guarded`: a mistake is one `error:` line (no
traceback unless -v), an interrupt keeps what is done (130 for Ctrl-C, 143
for SIGTERM), and warnings are one line each.
"""

from __future__ import annotations

import functools
import importlib
import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from onnxsal.errors import OnnxsalError, OptionError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
INTERRUPTED = "interrupted: finished outputs are kept; rerun with --resume to finish."


class Terminated(BaseException):
    """SIGTERM, raised where the run is so that it ends like Ctrl-C does (a BaseException,
    so that no `except Exception` on the way swallows it)."""


def printable(text: str) -> str:
    """`text` with control characters shown as escapes: a label or a tensor name from a
    model never drives the terminal."""
    return "".join(
        c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
        for c in str(text)
    )


def echo(text: str, err: bool = False) -> None:
    """click.echo for text that holds names from a model or a file."""
    click.echo(printable(text), err=err)


def fail(message: str, code: int = 1) -> None:
    echo(f"error: {message}", err=True)
    sys.exit(code)


def usage_error(message: str) -> None:
    """A mistake in the arguments: exit 2, one line pointing at the command's help."""
    ctx = click.get_current_context(silent=True)
    where = ctx.command_path if ctx is not None else "onnxsal"
    fail(f"{message} (see '{where} --help')", 2)


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return printable(f"warning: {' '.join(str(message).split())}") + "\n"


def guarded(fn: Callable) -> Callable:
    """One line per error, no traceback unless -v; an interrupt keeps what is done."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verbose = kwargs.get("verbose", False)
        shown = warnings.formatwarning
        if not verbose:  # without Python's source line (recorders of warnings still see them)
            warnings.formatwarning = _one_line_warning
        previous = _on_sigterm(_terminate)
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            click.echo(INTERRUPTED, err=True)
            sys.exit(130)
        except Terminated:
            click.echo(INTERRUPTED.replace("interrupted", "terminated"), err=True)
            sys.exit(143)
        except (click.exceptions.Exit, click.ClickException, SystemExit, BrokenPipeError):
            raise  # exits, usage errors and a closed pipe are the command group's
        except OptionError as exc:
            if verbose:
                raise
            usage_error(" ".join(str(exc).split()))
        except OnnxsalError as exc:
            if verbose:
                raise
            fail(" ".join(str(exc).split()))
        except Exception as exc:
            if verbose:
                raise
            fail(f"unexpected {type(exc).__name__}: {exc} (a bug: rerun with -v for the traceback)")
        finally:
            _on_sigterm(previous)
            warnings.formatwarning = shown

    return wrapper


def _on_sigterm(handler: Any) -> Any:
    """Install a SIGTERM handler (where signals can be handled); return the previous one."""
    try:
        return signal.signal(signal.SIGTERM, handler)
    except (ValueError, TypeError):  # not the main thread, or nothing to restore
        return None


def verbosity(fn: Callable) -> Callable:
    """-q and -v, which every command that does work takes."""
    fn = click.option("-v", "--verbose", is_flag=True, help="Tracebacks on errors.")(fn)
    fn = click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")(fn)
    return fn


def options(*decorators: Callable) -> Callable:
    """Several click options as one decorator (a bundle), in the order given."""

    def apply(fn: Callable) -> Callable:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


class Numbers(click.ParamType):
    """A comma-separated list of numbers, each within bounds (bad ones are usage errors)."""

    name = "numbers"

    def __init__(
        self,
        count: int | None = None,
        *,
        integer: bool = False,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
    ):
        self.count, self.integer = count, integer
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple:
        if isinstance(value, tuple):
            return value
        kind = "integers" if self.integer else "numbers"
        try:
            parsed = tuple(
                int(v) if self.integer else float(v) for v in str(value).split(",") if v.strip()
            )
        except ValueError:
            self.fail(f"'{value}' is not a comma-separated list of {kind}.", param, ctx)
        if self.count is not None and len(parsed) != self.count:
            self.fail(f"'{value}': give {self.count} {kind}, comma-separated.", param, ctx)
        if not parsed:
            self.fail("give at least one number.", param, ctx)
        for v in parsed:
            if not np.isfinite(v):
                self.fail(f"'{value}' holds a value that is not finite.", param, ctx)
            below = self.low is not None and (v <= self.low if self.low_open else v < self.low)
            if below or (self.high is not None and v > self.high):
                self.fail(f"{v:g} is outside {self.describe()}.", param, ctx)
        return parsed

    def describe(self) -> str:
        low = "(" if self.low_open else "["
        high = self.high if self.high is not None else "inf"
        return f"{low}{self.low if self.low is not None else '-inf'}, {high}]"


def bounded(low: float, high: float, *, integer: bool = False, low_open: bool = False) -> Any:
    """One number within bounds, as a click type."""
    if integer:
        return click.IntRange(int(low), int(high))
    return click.FloatRange(low, high, min_open=low_open)


def build(spec: str) -> Any:
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


def explainer(
    model: str,
    providers: str | None = None,
    *,
    input: str | None = None,
    output: str | None = None,
    keep_softmax: bool = False,
):
    import onnxsal

    chosen = providers.split(",") if providers else None
    return onnxsal.Explainer(
        model, providers=chosen, input=input, output=output, keep_softmax=keep_softmax
    )


def target(text: str | None, labels: list[str] | None) -> Any:
    """The target `-t` names (see onnxsal.targets.grammar), None for each input's top-1."""
    from onnxsal.targets.grammar import parse

    return None if text is None else parse(text, labels)


def example(path: str | None, ex) -> np.ndarray | None:
    """The first sample of an example file, batch first."""
    if path is None:
        return None
    from onnxsal.samples import read_samples

    return read_samples(Path(path), ex.sample_rank, ex.input_name).values[:1]


def feeds(specs: tuple[str, ...]) -> dict[str, np.ndarray]:
    found = {}
    for spec in specs:
        name, eq, path = spec.partition("=")
        if not eq or not name or not path:
            raise click.BadParameter(f"'{spec}' is not NAME=FILE.npy.", param_hint="--feed")
        if not Path(path).is_file():
            raise click.BadParameter(f"no file '{path}'.", param_hint="--feed")
        try:
            found[name] = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise click.BadParameter(
                f"'{path}' is not a readable .npy array ({exc}).", param_hint="--feed"
            ) from None
    return found


def option_value(text: str) -> Any:
    """A method option's value: a number, comma-separated numbers (a tuple), or text."""
    parts = [p.strip() for p in text.split(",")]
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        return text
    values = [int(v) if v.is_integer() and abs(v) < 2**53 else v for v in numbers]
    return values[0] if len(values) == 1 else tuple(values)
