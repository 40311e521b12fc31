"""The command line's wing: how it is put together, and its journal's rules on their own."""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from onnxsal.cli import COMMANDS, main
from onnxsal.cli.files import STATE
from onnxsal.cli.journal import Journal, neutral, settings_id
from onnxsal.cli.options import flag, method_options
from onnxsal.methods import METHODS
from onnxsal.methods.base import Method

ROOT = Path(__file__).resolve().parent.parent


def _imports(folder: Path) -> dict[Path, set[str]]:
    found = {}
    for path in folder.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        found[path] = names
    return found


def test_the_library_never_imports_the_cli_and_graph_io_never_the_zoo():
    for path, names in _imports(ROOT / "onnxsal").items():
        if "cli" in path.relative_to(ROOT / "onnxsal").parts:
            continue
        assert not any(n.startswith("onnxsal.cli") for n in names), path
        if path.parent.name == "graph":
            assert not any(n.startswith(("onnxsal.models", "onnxsal.converters")) for n in names), (
                path
            )


def test_every_package_is_installed():
    """A folder missing from pyproject's list works in a checkout and breaks when installed."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    mapped = {"onnxsal.models": ROOT / "models", "onnxsal.converters": ROOT / "converters"}
    found = {"onnxsal"} | set(mapped)
    for init in (ROOT / "onnxsal").rglob("__init__.py"):
        found.add(".".join(("onnxsal", *init.parent.relative_to(ROOT / "onnxsal").parts)))
    assert found == listed


def test_every_method_option_is_a_flag_and_no_flag_is_taken_twice():
    for command in COMMANDS:
        names = [p.name for p in command.params]
        assert len(names) == len(set(names)), command.name
        opts = [o for p in command.params for o in getattr(p, "opts", [])]
        assert len(opts) == len(set(opts)), command.name
    explain_flags = {o for p in main.commands["explain"].params for o in p.opts}
    for method in METHODS.values():
        for option in method.options:
            assert flag(option) in explain_flags, option


def test_a_new_method_needs_no_cli_edit(monkeypatch):
    class Sharpen(Method):
        name = "sharpen"
        options = frozenset({"edge_weight"})

    monkeypatch.setitem(METHODS, "sharpen", Sharpen())

    @click.command()
    @method_options
    def command(**given):
        click.echo(json.dumps(given["edge_weight"]))

    result = CliRunner().invoke(command, ["--edge-weight", "0.5"])
    assert result.exit_code == 0 and result.output.strip() == "0.5"
    assert "Option of sharpen" in CliRunner().invoke(command, ["--help"]).output


def _journal(folder: Path) -> Journal:
    (folder / STATE).mkdir()  # a run's lock makes it; the journal never does
    return Journal(folder)


def _summary(folder: Path) -> dict[tuple[str, str], dict]:
    def refuse(constant: str) -> None:
        raise ValueError(constant)

    rows = json.loads((folder / "summary.json").read_text(), parse_constant=refuse)
    return {(r["input"], r["settings_id"]): r for r in rows}


def test_journal_keeps_the_latest_row_per_input_and_settings_and_skips_torn_lines(tmp_path):
    journal = _journal(tmp_path)
    journal.append([{"input": "/a", "settings_id": "s1", "score": 1.0}])
    journal.append([{"input": "/a", "settings_id": "s2", "score": 2.0}])
    with open(journal.path, "a") as f:
        f.write('{"input": "/b", "settings_id": "s1", "sco')  # a kill mid-line
    journal.append([{"input": "/a", "settings_id": "s1", "score": 3.0}])
    journal.append([{"settings_id": "s1", "settings": {"method": "guided"}}])
    journal.write_summaries()
    rows = _summary(tmp_path)
    assert set(rows) == {("/a", "s1"), ("/a", "s2")}
    assert rows["/a", "s1"]["score"] == 3.0  # the torn line did not swallow the next row
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert settings == {"s1": {"method": "guided"}}


def test_a_retired_input_leaves_the_summaries(tmp_path):
    journal = _journal(tmp_path)
    journal.append([{"input": "/a", "settings_id": "s", "name": "x.png", "status": "ok"}])
    journal.append([{"input": "/b", "settings_id": "s", "name": "y.png", "status": "ok"}])
    journal.append([{"input": "/a", "settings_id": "s", "status": "retired"}])
    journal.write_summaries()
    assert set(_summary(tmp_path)) == {("/b", "s")}
    assert journal.index().names == {"/b": "y.png"}


def test_journal_compacts_once_most_lines_are_stale(tmp_path):
    journal = _journal(tmp_path)
    for k in range(200):
        journal.append([{"input": f"/x{k % 3}", "settings_id": "s", "score": float(k)}])
    journal.write_summaries()
    assert len(journal.path.read_text().splitlines()) == 3
    assert _summary(tmp_path)["/x2", "s"]["score"] == 197.0


def test_summaries_are_strict_json_and_neutral_csv(tmp_path):
    journal = _journal(tmp_path)
    hostile = ['=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", "\tx", "\rx", "ok"]
    journal.append(
        [
            {"input": f"/{k}", "settings_id": "s", "label": label, "score": float("nan")}
            for k, label in enumerate(hostile)
        ]
    )
    journal.write_summaries()
    assert all(r["score"] is None for r in _summary(tmp_path).values())
    with open(tmp_path / "summary.csv", newline="", encoding="utf-8") as f:
        cells = list(csv.DictReader(f))
    labels = [c["label"] for c in cells]
    assert not any(label.startswith(("=", "+", "-", "@", "\t", "\r")) for label in labels)
    assert sorted(label.lstrip("'") for label in labels) == sorted(hostile)


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@x", "\tx", "\rx"])
def test_owasp_rule(cell):
    assert neutral(cell) == "'" + cell and neutral("plain") == "plain" and neutral(3) == 3


def test_settings_id_is_stable_and_tells_settings_apart():
    a = settings_id({"method": "guided", "options": {"steps": 5}, "score": float("nan")})
    assert a == settings_id({"options": {"steps": 5}, "method": "guided", "score": None})
    assert a != settings_id({"method": "vanilla", "options": {"steps": 5}, "score": None})
