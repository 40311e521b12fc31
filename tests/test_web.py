"""The exported web explainer, run by its own page in headless Chromium, against Python."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socketserver
import subprocess
import tarfile
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import onnxsal
import onnxsal.web
from onnxsal.errors import OptionError
from tests.support import rel_l2
from tests.test_demo import CHROMIUM_FLAGS, _chromium

PACK = f"onnxruntime-web-{onnxsal.web.RUNTIME_VERSION}.tgz"


@pytest.fixture(scope="module")
def runtime_pack(tmp_path_factory) -> Path:
    """onnxruntime-web's npm archive (npm is a package registry, as PyPI is for pip)."""
    cached = os.environ.get("ONNXSAL_ORT_WEB")
    if cached and Path(cached).is_file():
        return Path(cached)
    if shutil.which("npm") is None:
        if os.environ.get("ONNXSAL_REQUIRE_BROWSER"):
            pytest.fail("npm is required here (.ci/run installs it)")
        pytest.skip("no npm on this machine")
    folder = tmp_path_factory.mktemp("npm")
    subprocess.run(onnxsal.web.NPM_PACK.split(), cwd=folder, check=True, capture_output=True,
                   timeout=600)  # fmt: skip
    return folder / PACK


class _Handler(http.server.SimpleHTTPRequestHandler):
    reports: ClassVar[list] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).reports.append((self.path, body))
        self.send_response(204)
        self.end_headers()

    def end_headers(self):
        # cross-origin isolated: onnxruntime-web may then run WASM on several threads
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, *args):
        pass


def run_page(folder: Path, spec: dict, tmp_path: Path, offline: bool, query: str = "") -> list:
    """Serve `folder`, open its page on `spec` in headless Chromium, return the posted runs."""
    handler = type("Handler", (_Handler,), {"reports": []})
    (folder / "spec.json").write_text(json.dumps({**spec, "report": "/result"}))
    server = socketserver.TCPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/index.html?selftest=spec.json{query}"
    # --no-proxy-server and a host map to nothing: the page reaches the local server only
    network = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"] if offline else []
    browser = subprocess.Popen(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
         "--remote-debugging-port=0", *network, url],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for _ in range(1200):
            if handler.reports:
                break
            if browser.poll() is not None:
                break
            threading.Event().wait(0.1)
    finally:
        browser.kill()
        browser.wait()
        server.shutdown()
        server.server_close()
    assert handler.reports, "the page posted nothing"
    path, body = handler.reports[0]
    assert path == "/result", body.decode()[:2000]
    return json.loads(body)


@pytest.fixture(scope="module")
def digits():

    from tests.test_hostile import save_digits

    return onnxsal.Explainer("digits-cnn"), save_digits


def test_the_page_gives_pythons_maps_offline(digits, runtime_pack, tmp_path):
    ex, save_digits = digits
    [picture] = save_digits(tmp_path / "in", [3])
    from PIL import Image

    x = ex.preprocess(Image.open(picture))
    folder = tmp_path / "web"
    onnxsal.web.export(ex, folder, runtime=runtime_pack)
    # the three graphs share one copy of the weights: the page downloads the model once
    whole = len(ex.compiled("vanilla")[0].SerializeToString())
    served = sum(f.stat().st_size for f in [*folder.glob("*.onnx"), folder / "weights.bin"])
    assert served < 1.3 * whole, (served, whole)
    draws = np.random.default_rng(0).standard_normal((4, x.size))
    runs = [
        {"method": "vanilla"}, {"method": "guided"}, {"method": "deconv"},
        {"method": "input_x_gradient"}, {"method": "integrated_gradients", "steps": 8},
        {"method": "smoothgrad", "samples": 4, "draws": draws.ravel().tolist()},
    ]  # fmt: skip
    results = run_page(folder, {"x": x.ravel().tolist(), "runs": runs}, tmp_path, True)
    target = results[0]["target"]
    assert target == int(ex.predict(x).argmax())
    for run, got in zip(runs, results):
        method = run["method"]
        if method == "smoothgrad":
            flat = x.reshape(-1)
            sigma = 0.15 * (flat.max() - flat.min())
            noisy = (x + sigma * draws.reshape(4, *x.shape[1:])).astype(np.float32)
            want = ex.explain(noisy, "vanilla", target).mean(axis=0, keepdims=True)
        elif method == "integrated_gradients":
            want = ex.explain(x, method, target, steps=8)
        else:
            want = ex.explain(x, method, target)
        err = rel_l2(np.asarray(got["attribution"], np.float32).reshape(x.shape), want)
        assert err <= 1e-4, (method, err)
        assert got["provider"] == "wasm"


def test_export_refuses_what_the_page_cannot_take(tmp_path):
    bad = tmp_path / "not-a-pack.tgz"
    bad.write_bytes(b"nothing")
    with pytest.raises(OptionError, match="npm pack onnxruntime-web"):
        onnxsal.web.export("digits-cnn", tmp_path / "web", runtime=bad)
    with tarfile.open(tmp_path / "empty.tgz", "w:gz"):
        pass
    with pytest.raises(OptionError, match="npm pack onnxruntime-web"):
        onnxsal.web.export("digits-cnn", tmp_path / "web2", runtime=tmp_path / "empty.tgz")
    other = tmp_path / "other" / "package"
    other.mkdir(parents=True)
    (other / "package.json").write_text('{"version": "1.18.0"}')
    with pytest.raises(OptionError, match=r"it holds version 1\.18\.0"):
        onnxsal.web.export("digits-cnn", tmp_path / "web3", runtime=tmp_path / "other")


def test_the_pinned_cdn_hashes_are_those_of_the_npm_package(runtime_pack):
    import base64
    import hashlib

    with tarfile.open(runtime_pack) as pack:
        for name, integrity in onnxsal.web.RUNTIME_FILES.items():
            data = pack.extractfile(f"package/dist/{name}").read()
            digest = base64.b64encode(hashlib.sha384(data).digest()).decode()
            assert integrity == f"sha384-{digest}", name


def test_cli_writes_the_folder_and_refuses_a_foreign_one(runtime_pack, tmp_path):
    from click.testing import CliRunner

    from onnxsal.cli import main as cli

    out = tmp_path / "page"
    done = CliRunner().invoke(
        cli, ["export", "digits-cnn", "--web", str(out), "--offline", str(runtime_pack)]
    )
    assert done.exit_code == 0, done.output
    assert {p.name for p in out.iterdir()} >= {"index.html", "onnxsal.js", "onnxsal.json", "ort"}
    assert not list(out.rglob("*.partial"))
    meta = json.loads((out / "onnxsal.json").read_text())
    assert meta["runtime"]["base"] == "ort/" and meta["methods"]["guided"]["rewritten"] > 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    refused = CliRunner().invoke(cli, ["export", "digits-cnn", "--web", str(foreign)])
    assert refused.exit_code != 0 and "holds files of its own" in refused.output
    both = CliRunner().invoke(cli, ["export", "digits-cnn"])
    assert both.exit_code == 2 and "give -o FILE" in both.output
    cdn = CliRunner().invoke(cli, ["export", "digits-cnn", "--web", str(tmp_path / "cdn")])
    meta = json.loads((tmp_path / "cdn" / "onnxsal.json").read_text())
    assert cdn.exit_code == 0 and meta["runtime"]["base"].startswith("https://cdn.jsdelivr.net/")
    assert meta["runtime"]["integrity"] == onnxsal.web.RUNTIME_FILES


def test_the_page_takes_a_picture_as_a_user_does(digits, runtime_pack, tmp_path):
    """Preprocessing in the browser, the top-5 list, the map and the overlay drawn."""
    import base64
    import io

    from PIL import Image

    ex, save_digits = digits
    [picture] = save_digits(tmp_path / "in", [5])
    folder = tmp_path / "web"
    onnxsal.web.export(ex, folder, runtime=runtime_pack)
    shutil.copyfile(picture, folder / "digit.png")
    spec = {"x": [], "runs": [], "picture": "digit.png"}
    [drawn] = run_page(folder, spec, tmp_path, True)
    top = int(ex.predict(ex.preprocess(Image.open(picture))).argmax())
    assert len(drawn["classes"]) == 5 and drawn["classes"][0].startswith(ex.labels[top])
    assert "vanilla" in drawn["status"] and "ms per map" in drawn["status"]
    images = {}
    for key in ("map", "overlay"):
        data = base64.b64decode(drawn[key].split(",", 1)[1])
        images[key] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32)
        assert images[key].shape[:2] == tuple(ex.preprocess.size)
    assert images["map"].std() > 20  # a map, not a blank
    assert np.abs(images["map"] - images["overlay"]).mean() > 5


def test_an_nhwc_keras_model_gives_pythons_maps(runtime_pack, tmp_path):
    from PIL import Image

    from tests.test_hostile import save_digits

    ex = onnxsal.Explainer("digits-cnn-keras")
    assert ex.layout == "NHWC"
    [picture] = save_digits(tmp_path / "in", [2])
    x = ex.preprocess(Image.open(picture))
    folder = tmp_path / "web"
    onnxsal.web.export(ex, folder, runtime=runtime_pack)
    runs = [{"method": "vanilla"}, {"method": "guided"}]
    results = run_page(folder, {"x": x.ravel().tolist(), "runs": runs}, tmp_path, True)
    for run, got in zip(runs, results):
        want = ex.explain(x, run["method"], got["target"])
        err = rel_l2(np.asarray(got["attribution"], np.float32).reshape(x.shape), want)
        assert err <= 1e-4, (run["method"], err)
