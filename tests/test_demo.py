"""The demo end to end, and its HTML page opened in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from onnxsal.cli import DEMO_PHOTOS
from onnxsal.cli import main as cli

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def demo_page(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(cli, ["demo", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_demo_writes_a_panel_per_photo_and_a_page(demo_page):
    out, printed = demo_page
    page = out / "index.html"
    assert str(page.resolve()) in printed
    assert "chelsea: top-1 285 'Egyptian cat'" in printed
    for name in DEMO_PHOTOS:
        panel = Image.open(out / f"{name}.png")
        assert panel.width > 8 * panel.height  # photo + eight methods in a row
        assert np.asarray(panel).std() > 20  # not blank
    html = page.read_text()
    assert html.count("<img") == len(DEMO_PHOTOS)


def _chromium() -> str | None:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and os.environ.get("ONNXSAL_REQUIRE_BROWSER"):
        pytest.fail("Chromium is required here (.ci/run installs Debian's chromium)")
    if path is None:
        pytest.skip("no Chromium on this machine (.ci/run installs it)")
    return path


def test_every_image_on_the_page_loads_in_chromium(demo_page, tmp_path):
    out, _ = demo_page
    browser = _chromium()
    url = (out / "index.html").resolve().as_uri()
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run(
        [browser, *CHROMIUM_FLAGS, *profile, "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body, dom.stderr[-2000:]
    loaded = re.search(r'data-loaded="(\d+)"', body.group(0))
    assert loaded and int(loaded.group(1)) == len(DEMO_PHOTOS), body.group(0)
    shot = tmp_path / "page.png"
    subprocess.run(
        [browser, *CHROMIUM_FLAGS, *profile, "--window-size=1400,900", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert pixels.shape[:2] == (900, 1400)
    assert (pixels.min(axis=2) < 200).mean() > 0.4  # much of the page is pictures, not white
    assert (pixels.std(axis=2) > 30).mean() > 0.08  # colour among them: photos, overlays
