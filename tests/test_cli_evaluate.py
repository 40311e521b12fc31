"""`onnxsal evaluate` end to end: the table, the record, resume, kills, hostile names,
the report in headless Chromium."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import onnxsal
from onnxsal.cli import main as cli
from onnxsal.evaluate import Positions, deletion, method_relevance
from tests.test_demo import CHROMIUM_FLAGS, _chromium
from tests.test_hostile import finished, save_digits, spawn, wait_for

FAST = ["--metrics", "deletion,insertion,sparseness", "--deletion-steps", "16"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    save_digits(folder, range(4))
    return folder


def run(*args, code: int = 0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


def rows(out) -> list[dict]:
    return json.loads((out / "evaluation.json").read_text())


def test_table_record_and_csv_agree_with_the_library(digits, tmp_path):
    out = tmp_path / "eval"
    printed = run("evaluate", "digits-cnn", digits, "-o", out, "-m", "vanilla,guided", *FAST)
    head, *lines = [line for line in printed.splitlines() if line.strip()][:4]
    assert head.split()[:4] == ["method", "deletion", "(↓)", "insertion"]
    assert [line.split()[0] for line in lines] == ["vanilla", "guided", "random"]
    found = rows(out)
    assert len(found) == 4 and all(r["status"] == "ok" for r in found)
    # the record's deletion AUC is the library's on the same input
    ex = onnxsal.Explainer("digits-cnn")
    first = sorted(digits.iterdir())[0]
    x = ex.preprocess(__import__("PIL.Image").Image.open(first))
    row = next(r for r in found if r["input"] == str(first.resolve()))
    a = ex.explain(x, "vanilla", row["class"])
    own = deletion(ex, x, method_relevance(a, Positions.of(x, ex.layout), "vanilla"),
                   row["class"], steps=16)  # fmt: skip
    assert row["results"]["vanilla"]["deletion"]["value"] == pytest.approx(own.auc[0], abs=1e-6)
    # the CSV: one line per input, method (and the random map) and metric
    with open(out / "evaluation.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 4 * (2 * 3 + 3)
    assert (out / "report.html").read_text().count("<tr") == 1 + 3


def test_resume_skips_what_is_done_and_a_changed_setting_runs_again(digits, tmp_path):
    out = tmp_path / "eval"
    run("evaluate", "digits-cnn", digits, "-o", out, "-m", "vanilla", *FAST)
    again = run("evaluate", "digits-cnn", digits, "-o", out, "-m", "vanilla", *FAST, "--resume")
    assert "0 evaluated, 0 failed, 4 done before" in again
    other = run("evaluate", "digits-cnn", digits, "-o", out, "-m", "guided", *FAST, "--resume")
    assert "4 evaluated" in other
    assert len(rows(out)) == 8  # both settings kept, each input once per settings


def test_a_killed_run_resumes_with_every_input_exactly_once(tmp_path):
    folder = tmp_path / "in"
    save_digits(folder, range(10))
    out = tmp_path / "eval"
    args = ["evaluate", "digits-cnn", folder, "-o", out, "-m", "vanilla", *FAST,
            "--batch-size", "1"]  # fmt: skip
    journal = out / ".onnxsal" / "evaluation.jsonl"
    proc = spawn(*args, log=tmp_path / "killed")
    wait_for(lambda: journal.exists() and journal.read_text().count('"status"') >= 2, proc,
             "two rows")  # fmt: skip
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    rc, out_text, _ = finished(spawn(*args, "--resume", log=tmp_path / "resumed"),
                               tmp_path / "resumed")  # fmt: skip
    assert rc == 0, out_text
    found = rows(out)
    assert sorted(r["name"] for r in found) == sorted(p.name for p in folder.iterdir())
    assert all(r["status"] == "ok" for r in found)


def test_hostile_names_stay_text_in_the_csv_and_the_page(tmp_path):
    folder = tmp_path / "in"
    names = ["=HYPERLINK(1).png", "<script>alert(1).png", "ça va.png"]
    save_digits(folder, range(3), names)
    out = tmp_path / "eval"
    run("evaluate", "digits-cnn", folder, "-o", out, "-m", "vanilla", *FAST)
    with open(out / "evaluation.csv", newline="") as f:
        cells = [line["name"] for line in csv.DictReader(f)]
    assert "'=HYPERLINK(1).png" in cells and "=HYPERLINK(1).png" not in cells
    page = (out / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert not any(p.name.startswith("<") for p in out.rglob("*"))


def test_bad_requests_are_one_line(digits, tmp_path):
    out = tmp_path / "eval"
    cases = [
        (["--metrics", "deletion,accuracy"], "Unknown metric 'accuracy'"),
        (["-m", "vanilla,nope"], "unknown method 'nope'"),
        (["-t", "box=1,2,3,4,class=1"], "evaluate explains a class"),
        (["-m", "vanilla", "--n-samples", "5"], "no method of vanilla takes n_samples"),
    ]
    for extra, message in cases:
        result = CliRunner().invoke(cli, ["evaluate", "digits-cnn", str(digits), "-o", str(out),
                                          *FAST, *extra])  # fmt: skip
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_road_and_randomization_reach_the_page_and_it_renders_in_chromium(digits, tmp_path):
    out = tmp_path / "eval"
    run("evaluate", "digits-cnn", digits, "-o", out, "-m", "vanilla,integrated_gradients",
        "--metrics", "randomization,road,complexity", "--steps", "8")  # fmt: skip
    found = rows(out)
    r = found[0]["results"]["vanilla"]["randomization"]
    assert r["blocks"] == ["12", "9", "5", "1"] and len(r["spearman_abs"]) == 4
    assert all((out / row["figure"]).is_file() for row in found)
    browser = _chromium()
    url = (out / "report.html").resolve().as_uri()
    dom = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert re.search(r'<table id="scores">', dom.stdout), dom.stderr[-2000:]
    assert dom.stdout.count("<svg") == 4  # ROAD both orders, two randomisation measures
    assert dom.stdout.count("<polyline") == 2 * 3 + 2 * 2  # ROAD judges the random map too
    assert len(re.findall(r"<img ", dom.stdout)) == len(found)


def test_without_the_extra_the_command_says_which_to_install(digits, tmp_path):
    code = (
        "import sys; sys.modules['skimage'] = None\n"
        "from onnxsal.cli import main\n"
        f"main(['evaluate', 'digits-cnn', {str(digits)!r}, '-o', {str(tmp_path / 'e')!r}])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: onnxsal.evaluate needs scipy and scikit-image: pip install 'onnxsal[evaluate]'"
    ]


def test_charts_escape_names_a_model_may_carry():
    from onnxsal.evaluate.figure import chart_svg

    svg = chart_svg("<b>t</b>", {"<script>x": np.array([1.0, 0.5, np.nan, 0.2])}, "a&b",
                    ["<img src=x onerror=alert(1)>"])  # fmt: skip
    assert "<script" not in svg and "<img" not in svg and "<b>" not in svg
    assert "&lt;script&gt;x" in svg and "a&amp;b" in svg
    assert svg.count("<polyline") == 1 and svg.count(",") == 3  # the NaN point left out


def test_randomization_result_draws_its_figure_and_curves():
    from onnxsal.evaluate import randomization

    ex = onnxsal.Explainer("digits-cnn")
    r = randomization(ex, ex.example_input(1), ["vanilla", "guided"], layers=["12", "9"])
    picture = r.figure()
    assert picture.size[1] > 2 * 64 and picture.size[0] > 3 * 64  # 2 rows, original + 2 steps
    assert r.curves().count("<polyline") == 2


def test_a_class_out_of_range_or_a_second_input_is_refused_before_anything_is_written(
    digits, tmp_path
):
    from onnx import TensorProto, helper

    from tests.support import make_model

    out = tmp_path / "eval"
    result = CliRunner().invoke(cli, ["evaluate", "digits-cnn", str(digits), "-o", str(out),
                                      *FAST, "-t", "20"])  # fmt: skip
    assert result.exit_code == 2 and "class 20 is not one of the model's 0..9" in result.output
    assert not out.exists()
    two = make_model(
        [helper.make_node("Add", ["x", "s"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )  # fmt: skip
    model = tmp_path / "two.onnx"
    model.write_bytes(two.SerializeToString())
    sample = tmp_path / "x.npy"
    np.save(sample, np.ones((1, 4), np.float32))
    unnamed = CliRunner().invoke(cli, ["evaluate", str(model), str(sample), "-o", str(out)])
    assert unnamed.exit_code != 0 and "--input" in unnamed.output
    named = ["evaluate", str(model), str(sample), "-o", str(out), "--input", "x"]
    result = CliRunner().invoke(cli, named)
    assert result.exit_code != 0 and "single input" in result.output
    for done in (unnamed, result):
        assert len(done.output.strip().splitlines()) == 1 and not out.exists()
