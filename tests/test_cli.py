"""The command line: outputs, resumable runs, and bad input turned into one clear line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from PIL import Image

import onnxsal
from onnxsal.cli import main as cli
from onnxsal.images import load_image
from onnxsal.models import locate
from tests.support import explained, external_data_model, make_model

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, expect: int | None = 0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if expect is not None:
        assert result.exit_code == expect, (result.exit_code, result.output, result.exception)
    return result


def one_line_error(result, *fragments: str, code: int = 1) -> None:
    """Exit `code` (1: a failure, 2: a usage error), an 'error:' line naming the problem,
    and no traceback."""
    assert result.exit_code == code, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors, result.output
    assert "Traceback" not in result.output
    text = " ".join(errors)
    for fragment in fragments:
        assert fragment.lower() in text.lower(), text


@pytest.fixture(scope="module")
def digit_images(tmp_path_factory):
    """Real digits as 32x32 grayscale PNGs in a folder tree, plus a corrupt one."""
    from onnxsal.models.digits_recipe import dataset

    _, _, x, _ = dataset()
    folder = tmp_path_factory.mktemp("digits")
    (folder / "more").mkdir()
    for i in range(5):
        Image.fromarray((x[i] * 255).astype(np.uint8), "L").save(
            folder / ("more" if i >= 3 else ".") / f"d{i}.png"
        )
    return folder


def test_every_command_has_help_with_an_example():
    commands = [
        "explain",
        "export",
        "compare",
        "inspect",
        "models",
        "doctor",
        "demo",
        "convert torch",
        "convert keras",
    ]
    for command in commands:
        result = run(*command.split(), "--help")
        assert "Example" in result.output, command


def test_explain_a_folder_writes_maps_overlays_raw_and_summary(digit_images, tmp_path):
    out = tmp_path / "out"
    result = run(
        "explain",
        "digits-cnn",
        digit_images,
        "-m",
        "guided",
        "-o",
        out,
        "--format",
        "npz",
        "--panel",
    )
    assert "5 explained, 0 failed" in result.output
    rows = explained(out)
    assert sorted(rows) == ["d0.png", "d1.png", "d2.png", "more/d3.png", "more/d4.png"]
    for name, row in rows.items():
        assert sorted(row["files"]) == ["overlay", "panel", "raw", "saliency"], name
        for path in row["files"].values():
            assert path.is_file() and path.name.startswith(Path(name).name + ".guided.")
    assert all(r["status"] == "ok" for r in rows.values())
    row = rows["d0.png"]
    assert row["method"] == "guided" and row["label"] == str(row["target"])
    assert len(row["top5"]) == 5 and abs(sum(t["probability"] for t in row["top5"]) - 1) < 0.01
    assert (out / "summary.csv").read_text().count("\n") == 6
    saved = np.load(row["files"]["raw"])
    x = onnxsal.Explainer("digits-cnn").preprocess(Image.open(digit_images / "d0.png"))
    expected = onnxsal.Explainer("digits-cnn").explain(x, "guided")[0]
    np.testing.assert_allclose(saved["attribution"], expected, rtol=1e-5, atol=1e-7)
    assert Image.open(row["files"]["saliency"]).size == (32, 32)
    assert not list(out.rglob(".*partial*"))


def test_bad_images_are_skipped_reported_and_counted(digit_images, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(digit_images, folder)
    (folder / "more" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no jpeg")
    (folder / "fake.png").write_text("not an image at all")
    out = tmp_path / "out"
    result = run("explain", "digits-cnn", folder, "-o", out, expect=1)
    assert "5 explained, 2 failed" in result.output
    assert "broken.jpg: not a readable image" in result.output
    assert "fake.png: not a readable image" in result.output
    assert "Traceback" not in result.output
    rows = {Path(r["input"]).name: r for r in json.loads((out / "summary.json").read_text())}
    assert rows["broken.jpg"]["status"] == "failed" and rows["d1.png"]["status"] == "ok"
    assert not list((out / "more").glob("broken*"))


def test_interrupted_run_keeps_its_outputs_and_resume_finishes(digit_images, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = onnxsal.Explainer.run
    calls = {"n": 0}

    def interrupt_second_batch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(onnxsal.Explainer, "run", interrupt_second_batch)
    result = run("explain", "digits-cnn", digit_images, "-o", out, "--batch-size", "2", expect=130)
    assert "rerun with --resume" in result.output
    done = sorted(p.name.split(".")[0] for p in out.rglob("*.saliency.png"))
    assert done == ["d0", "d1"]
    assert not list(out.rglob(".*partial*"))
    assert len(json.loads((out / "summary.json").read_text())) == 2
    monkeypatch.setattr(onnxsal.Explainer, "run", real)
    calls["n"] = 0
    counted = {"n": 0}

    def counting(self, x, *args, **kwargs):
        counted["n"] += len(x)
        return real(self, x, *args, **kwargs)

    monkeypatch.setattr(onnxsal.Explainer, "run", counting)
    run("explain", "digits-cnn", digit_images, "-o", out, "--batch-size", "2", "--resume")
    assert counted["n"] == 3  # the two finished inputs were not explained again
    assert len(list(out.rglob("*.saliency.png"))) == 5
    assert len(json.loads((out / "summary.json").read_text())) == 5


def test_missing_model_and_missing_input(digit_images, tmp_path):
    one_line_error(
        run("explain", tmp_path / "nope.onnx", digit_images, expect=None), "no model file"
    )
    result = run(
        "explain", "digits-cnn", tmp_path / "nothing-here.png", "-o", tmp_path / "o", expect=None
    )
    one_line_error(result, "nothing-here.png", "no such file")


@pytest.mark.parametrize("content", [b"", os.urandom(2000), "truncated"])
def test_files_that_are_not_onnx(tmp_path, digit_images, content):
    path = tmp_path / "model.onnx"
    if content == "truncated":
        content = locate("digits-cnn").read_bytes()[:5000]
    path.write_bytes(content)
    one_line_error(
        run("explain", path, digit_images, "-o", tmp_path / "o", expect=None), "not", "onnx"
    )


@pytest.mark.parametrize("location", ["missing.data", "../../etc/passwd", "/etc/passwd"])
def test_external_data_missing_or_outside_the_folder(tmp_path, location):
    model = external_data_model(location)
    folder = tmp_path / "m"
    folder.mkdir()
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    fragment = "missing" if location == "missing.data" else "outside its folder"
    one_line_error(run("inspect", path, expect=None), fragment)


@pytest.fixture
def npy_input(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32))
    return path


def _tiny(tmp_path, nodes, name="tiny.onnx", inits=()):
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    path = tmp_path / name
    onnx.save(model, path)
    return path


def test_op_without_gradient_rule_is_named_with_what_still_works(tmp_path, npy_input):
    path = _tiny(
        tmp_path,
        [
            helper.make_node("Relu", ["x"], ["r"], name="act"),
            helper.make_node("Hardmax", ["r"], ["y"], name="hm"),
        ],
    )
    result = run("explain", path, npy_input, "-o", tmp_path / "o", expect=1)
    assert "Hardmax" in result.output and "layer='r'" in result.output
    assert "Traceback" not in result.output
    inspected = run("inspect", path)
    assert "NO gradient rule for" in inspected.output and "Hardmax" in inspected.output
    ok = run("explain", path, npy_input, "--layer", "r", "--unit", "1", "-o", tmp_path / "o2")
    assert "1 explained" in ok.output


def test_target_out_of_range_and_unknown_layer(digit_images, tmp_path):
    one_line_error(
        run("explain", "digits-cnn", digit_images, "-t", "12", "-o", tmp_path / "o", expect=None),
        "target 12 is out of range",
        "10 units",
    )
    one_line_error(
        run(
            "explain",
            "digits-cnn",
            digit_images,
            "--layer",
            "relu_9",
            "--unit",
            "0",
            "-o",
            tmp_path / "o",
            expect=None,
        ),
        "no layer named",
        "relu",
    )


def test_a_tensor_of_the_wrong_shape_fails_alone(tmp_path, digit_images):
    folder = tmp_path / "in"
    shutil.copytree(digit_images, folder)
    np.save(folder / "wrong.npy", np.zeros((1, 1, 28, 28), np.float32))
    result = run("explain", "digits-cnn", folder, "-o", tmp_path / "o", expect=1)
    assert "wrong.npy" in result.output and "must be 32, not 28" in result.output
    assert "5 explained, 1 failed" in result.output


def test_nan_model_output_is_reported_and_no_map_written(tmp_path):
    w = onnx.numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    path = _tiny(
        tmp_path,
        [helper.make_node("Log", ["x"], ["l"]), helper.make_node("MatMul", ["l", "w"], ["y"])],
        inits=[w],
    )
    good, bad = tmp_path / "good.npy", tmp_path / "bad.npy"
    np.save(good, np.full((1, 4), 2.0, np.float32))
    np.save(bad, np.full((1, 4), -1.0, np.float32))
    result = run("explain", path, good, bad, "-o", tmp_path / "o", expect=1)
    assert "bad.npy" in result.output and "NaN/Inf" in result.output
    rows = explained(tmp_path / "o")
    assert rows["good.npy"]["files"]["saliency"].exists()
    assert rows["bad.npy"]["status"] == "failed" and not list((tmp_path / "o").glob("bad*"))


def test_output_folder_that_cannot_be_written(tmp_path, digit_images):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    one_line_error(
        run("explain", "digits-cnn", digit_images, "-o", blocker / "sub", expect=None),
        "cannot write to output folder",
    )


def test_model_without_metadata_asks_for_preprocessing_flags(tmp_path, digit_images):
    model = onnx.load(locate("digits-cnn"))
    del model.metadata_props[:]
    path = tmp_path / "bare.onnx"
    onnx.save(model, path)
    one_line_error(run("explain", path, digit_images, "-o", tmp_path / "o", expect=None), "--size")
    ok = run(
        "explain",
        path,
        digit_images,
        "-o",
        tmp_path / "o",
        "--size",
        "32,32",
        "--scale",
        str(1 / 255),
    )
    assert "5 explained" in ok.output


def test_images_of_every_kind_load_upright():
    from PIL.TiffImagePlugin import ImageFileDirectory_v2  # noqa: F401  (pillow's EXIF support)

    rgba = Image.new("RGBA", (4, 2), (255, 0, 0, 0))
    assert load_image(_saved(rgba, "png")).getpixel((0, 0)) == (255, 255, 255)  # on white
    pal = Image.new("P", (4, 2))
    assert load_image(_saved(pal, "png")).mode == "RGB"
    sixteen = Image.fromarray(np.full((2, 4), 65535, np.uint16))
    loaded = load_image(_saved(sixteen, "png"))
    assert loaded.mode == "L" and loaded.getpixel((0, 0)) == 255
    gray = Image.new("L", (4, 2), 7)
    assert load_image(_saved(gray, "png")).mode == "L"
    rotated = Image.new("RGB", (4, 2))
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90
    path = _saved(rotated, "jpg", exif=exif)
    assert load_image(path).size == (2, 4)


def _saved(img, fmt, **kw):
    import tempfile

    path = Path(tempfile.mkdtemp()) / f"img.{fmt}"
    img.save(path, **kw)
    return path


def test_export_writes_a_standalone_explainer_and_checks_it(tmp_path):
    out = tmp_path / "digits-guided.onnx"
    result = run("export", "digits-cnn", "-m", "guided", "-o", out, "--check")
    assert "check: the file reproduces explain()" in result.output
    model = onnx.load(out)
    name = onnxsal.Explainer("digits-cnn").input_name
    assert [i.name for i in model.graph.input] == [name]
    names = [o.name for o in model.graph.output]
    assert names[0] == "softmax" and "attribution" in names
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    got = dict(zip(names, ort.InferenceSession(str(out)).run(None, {name: x})))
    np.testing.assert_allclose(
        got["attribution"],
        onnxsal.Explainer("digits-cnn").explain(x, "guided"),
        rtol=1e-5,
        atol=1e-7,
    )
    assert np.allclose(got["softmax"].sum(1), 1, atol=1e-5)
    fixed = run(
        "export",
        "digits-cnn",
        "-m",
        "input_x_gradient",
        "-t",
        "3",
        "-o",
        tmp_path / "t3.onnx",
        "--check",
    )
    assert "reproduces" in fixed.output
    one_line_error(
        run(
            "export",
            "digits-cnn",
            "-m",
            "guided",
            "-t",
            "10",
            "-o",
            tmp_path / "t10.onnx",
            expect=None,
        ),
        "out of range",
    )


def test_compare_twins_and_a_perturbed_twin(tmp_path, digit_images):
    result = run(
        "compare",
        "digits-cnn",
        "digits-cnn-keras",
        digit_images / "d0.png",
        digit_images / "d1.png",
        "-m",
        "guided",
        "-o",
        tmp_path / "cmp",
    )
    assert result.output.count("yes") >= 4 and "NO" not in result.output
    assert (tmp_path / "cmp" / "d0.png.compare.png").exists()
    model = onnx.load(locate("digits-cnn-keras"))
    for init in model.graph.initializer:
        arr = onnx.numpy_helper.to_array(init)
        if arr.ndim == 4:
            init.CopyFrom(onnx.numpy_helper.from_array(arr * 1.2, init.name))
            break
    onnx.save(model, tmp_path / "nudged.onnx")
    different = run(
        "compare", "digits-cnn", tmp_path / "nudged.onnx", digit_images / "d0.png", expect=1
    )
    assert "NO" in different.output


def test_inspect_models_doctor():
    out = run("inspect", "digits-cnn").output
    assert "layout: NCHW (from metadata)" in out and "labels: 10 classes" in out
    assert "every op on the path has a gradient rule" in out
    assert "relu" in out and "preprocess:" in out
    assert "digits-cnn-keras" in run("models").output
    doctor = run("doctor").output
    assert "onnxruntime" in doctor and "CPUExecutionProvider" in doctor and "cache:" in doctor


def test_verbose_shows_the_traceback(tmp_path, digit_images):
    result = CliRunner().invoke(
        cli, ["explain", str(tmp_path / "no.onnx"), str(digit_images), "-v"]
    )
    assert result.exit_code == 1 and isinstance(result.exception, onnxsal.ModelLoadError)


def test_a_real_subprocess_run(tmp_path, digit_images):
    """The installed console script, in its own process: output files and exit codes."""
    exe = shutil.which("onnxsal", path=str(Path(sys.executable).parent)) or "onnxsal"
    done = subprocess.run(
        [exe, "explain", "digits-cnn", str(digit_images), "-o", str(tmp_path / "o"), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and len(list((tmp_path / "o").rglob("*.overlay.png"))) == 5
    bad = subprocess.run(
        [exe, "explain", str(tmp_path / "nope.onnx"), str(digit_images)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and bad.stderr.startswith("error:")
    usage = subprocess.run([exe, "explain"], capture_output=True, text=True, timeout=300)
    assert usage.returncode == 2
