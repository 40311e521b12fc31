"""evaluate's report: the terminal table and report.html, from the journal's rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxsal.evaluate.figure import chart_svg
from onnxsal.evaluate.suite import METRICS, RANDOM


def values(rows: Sequence[dict], method: str, metric: str) -> np.ndarray:
    """The headline values of every evaluated input (NaN kept out)."""
    found = [
        r["results"][method][metric]["value"]
        for r in rows
        if r.get("status") == "ok" and metric in (r.get("results") or {}).get(method, {})
    ]
    arr = np.array([v for v in found if v is not None], dtype=np.float64)
    return arr[np.isfinite(arr)]


def cell(rows: Sequence[dict], method: str, metric: str) -> str:
    v = values(rows, method, metric)
    if not v.size:
        return "—"
    return f"{v.mean():.3f} ± {v.std():.3f}" if v.size > 1 else f"{v.mean():.3f}"


def table(rows: Sequence[dict], methods: Sequence[str], metrics: Sequence[str]) -> list[list[str]]:
    """Header then one line per method (and the random baseline where it is judged)."""
    names = [*methods, *([RANDOM] if any(METRICS[m].judges_random for m in metrics) else [])]
    head = ["method", *(f"{m} ({'↓' if METRICS[m].better == 'lower' else '↑'})" for m in metrics)]
    return [head, *([name, *(cell(rows, name, m) for m in metrics)] for name in names)]


def table_lines(rows: Sequence[dict], methods: Sequence[str], metrics: Sequence[str]) -> list[str]:
    lines = table(rows, methods, metrics)
    widths = [max(len(line[k]) for line in lines) for k in range(len(lines[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]


def _mean_curve(rows: Sequence[dict], method: str, metric: str, key: str) -> np.ndarray | None:
    curves = [
        r["results"][method][metric][key]
        for r in rows
        if r.get("status") == "ok" and metric in (r.get("results") or {}).get(method, {})
    ]
    lengths = {len(c) for c in curves}
    if not curves or len(lengths) != 1:
        return None
    return np.nanmean(np.array(curves, dtype=np.float64), axis=0)


def plot(title: str, series: dict[str, np.ndarray], x_label: str,
         ticks: Sequence[str] = ()) -> dict:  # fmt: skip
    """One chart of the page: its title, its SVG (text escaped), the x axis's ticks."""
    return {"title": title, "svg": chart_svg(title, series, x_label, ticks), "ticks": list(ticks)}


def plots(rows: Sequence[dict], methods: Sequence[str], metrics: Sequence[str]) -> list[dict]:
    found = []
    with_random = [*methods, RANDOM]
    for metric, label in (("deletion", "deleted"), ("insertion", "inserted")):
        if metric in metrics:
            series = {m: c for m in with_random if (c := _mean_curve(rows, m, metric, "curve"))
                      is not None}  # fmt: skip
            found.append(plot(f"{metric}: probability (mean over inputs)", series,
                              f"share of pixels {label}"))  # fmt: skip
    if "road" in metrics:
        for key, name in (("morf", "most relevant first"), ("lerf", "least relevant first")):
            series = {m: c for m in with_random if (c := _mean_curve(rows, m, "road", key))
                      is not None}  # fmt: skip
            found.append(plot(f"ROAD, {name}: change of the probability", series,
                              "share of pixels removed (10–90 %)"))  # fmt: skip
    if "randomization" in metrics:
        blocks = next((r["results"][methods[0]]["randomization"]["blocks"] for r in rows
                       if r.get("status") == "ok"), [])  # fmt: skip
        for measure in ("spearman_abs", "ssim"):  # the original map is itself: 1 at 0
            series = {
                m: np.concatenate([[1.0], c])
                for m in methods
                if (c := _mean_curve(rows, m, "randomization", measure)) is not None
            }
            found.append(
                plot(
                    f"randomisation: {measure} with the original map",
                    series,
                    "blocks randomised, from the output",
                    ["original", *blocks],
                )
            )
    return found


def report_html(rows: Sequence[dict], recorded: dict, model: str) -> str:
    """The page; every value is escaped by the template engine."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("onnxsal.cli"), autoescape=True, undefined=StrictUndefined
    )
    methods, metrics = recorded["methods"], recorded["metrics"]
    return env.get_template("evaluation.html").render(
        model=model,
        recorded=recorded,
        table=table(rows, methods, metrics),
        help={m: METRICS[m].help for m in metrics},
        plots=plots(rows, methods, metrics),
        inputs=[r for r in rows if r.get("status") == "ok"],
        failed=[r for r in rows if r.get("status") != "ok"],
    )
