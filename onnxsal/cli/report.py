"""evaluate's report: the terminal table and report.html, from the journal's rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxsal.evaluate.suite import METRICS, RANDOM

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
PLOT_W, PLOT_H, PAD = 420, 220, 36


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


def plot(title: str, series: dict[str, np.ndarray], x_label: str, y_label: str,
         x_ticks: Sequence[str] | None = None) -> dict:  # fmt: skip
    """A line chart as numbers for the template's SVG: one polyline per series."""
    finite = [s[np.isfinite(s)] for s in series.values() if np.isfinite(s).any()]
    lo = min([0.0, *(float(s.min()) for s in finite)])
    hi = max([1.0 if lo >= 0 else 0.0, *(float(s.max()) for s in finite)])
    hi = hi if hi > lo else lo + 1.0
    lines = []
    for k, (name, s) in enumerate(series.items()):
        xs = np.linspace(0, 1, len(s)) if len(s) > 1 else np.zeros(1)
        left = PAD + xs * (PLOT_W - PAD - 8)
        top = 8 + (1 - (s - lo) / (hi - lo)) * (PLOT_H - PAD)
        points = [f"{a:.1f},{b:.1f}" for a, b, y in zip(left, top, s) if np.isfinite(y)]
        lines.append(
            {"name": name, "colour": COLOURS[k % len(COLOURS)], "points": " ".join(points)}
        )
    return {
        "title": title, "lines": lines, "x_label": x_label, "y_label": y_label,
        "lo": f"{lo:.2f}", "hi": f"{hi:.2f}", "width": PLOT_W, "height": PLOT_H, "pad": PAD,
        "x_ticks": list(x_ticks or []),
    }  # fmt: skip


def plots(rows: Sequence[dict], methods: Sequence[str], metrics: Sequence[str]) -> list[dict]:
    found = []
    with_random = [*methods, RANDOM]
    for metric, label in (("deletion", "deleted"), ("insertion", "inserted")):
        if metric in metrics:
            series = {m: c for m in with_random if (c := _mean_curve(rows, m, metric, "curve"))
                      is not None}  # fmt: skip
            found.append(plot(f"{metric} (mean over inputs)", series,
                              f"share of pixels {label}", "probability"))  # fmt: skip
    if "road" in metrics:
        for key, name in (("morf", "most relevant first"), ("lerf", "least relevant first")):
            series = {m: c for m in with_random if (c := _mean_curve(rows, m, "road", key))
                      is not None}  # fmt: skip
            found.append(plot(f"ROAD, {name}", series, "share of pixels removed (10–90 %)",
                              "probability change"))  # fmt: skip
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
                    "similarity",
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
