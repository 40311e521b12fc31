"""Maps drawn on their own: PAIR's grayscale and diverging recipes, their place beside the
overlay in panels, explain's files and the demo, and the methods' `signed` behind them."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from onnxsal.cli import main as cli
from onnxsal.cli.demo import DEMO_METHODS, TILE, page_html
from onnxsal.cli.render import Drawing, Item
from onnxsal.methods import METHODS
from onnxsal.pictures import (
    DIVERGING_COLORMAP,
    colorbar,
    colorize,
    display_map,
    panel,
    to_map,
)

HEADER, GAP, SIDE = 18, 8, 224  # a panel's title line, white between tiles, tile side


def pair_grayscale(image_3d: np.ndarray, percentile: float = 99) -> np.ndarray:
    """The PAIR saliency library's VisualizeImageGrayscale, written out for (H, W, C)."""
    image_2d = np.sum(np.abs(image_3d), axis=2)
    vmax = np.percentile(image_2d, percentile)
    vmin = np.min(image_2d)
    return np.clip((image_2d - vmin) / (vmax - vmin), 0, 1)


def pair_diverging(image_3d: np.ndarray, percentile: float = 99) -> np.ndarray:
    """The diverging recipe for (H, W, C): the channel sum over the percentile of its
    magnitude, clipped to [-1, 1], then moved to [0, 1]."""
    image_2d = np.sum(image_3d, axis=2)
    span = abs(np.percentile(np.abs(image_2d), percentile))
    return (np.clip(image_2d / span, -1, 1) + 1) / 2


def tile(sheet: Image.Image, k: int, side: int = SIDE) -> np.ndarray:
    """Tile k (0: the photo) of a panel, as (side, side, 3) int."""
    left = k * (side + GAP)
    box = (left, HEADER, left + side, HEADER + side)
    return np.asarray(sheet.convert("RGB").crop(box), dtype=np.int32)


def is_grey(pixels: np.ndarray) -> bool:
    return bool((pixels.max(axis=-1) - pixels.min(axis=-1) <= 1).all())


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", [(3, 17, 23), (1, 32, 32), (4, 9, 64)])
def test_grayscale_is_pair_visualize_image_grayscale(seed, shape):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape) * rng.uniform(0.01, 100)
    expected = pair_grayscale(np.moveaxis(a, 0, -1))
    np.testing.assert_allclose(display_map(a, "NCHW", False), expected, atol=1e-6)
    np.testing.assert_allclose(
        display_map(np.moveaxis(a, 0, -1), "NHWC", False), expected, atol=1e-6
    )
    assert display_map(a.astype(np.float32), "NCHW", False).dtype == np.float32


@pytest.mark.parametrize("seed", range(5))
def test_diverging_is_the_signed_recipe(seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((3, 20, 30)) ** 3  # heavy tails: the clipping matters
    expected = pair_diverging(np.moveaxis(a, 0, -1))
    np.testing.assert_allclose(display_map(a, "NCHW", True), expected, atol=1e-6)
    np.testing.assert_allclose(
        display_map(np.moveaxis(a, 0, -1), "NHWC", True), expected, atol=1e-6
    )


def test_one_huge_outlier_leaves_the_rest_visible():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 1.0, (3, 64, 64))
    a[:, 10, 10] = 1e6
    shown = display_map(a, "NCHW", False)
    assert shown[10, 10] == 1.0
    assert (shown > 0.1).mean() > 0.7
    min_max = to_map(a, "NCHW", normalize="minmax")  # what no clipping would show
    assert (min_max > 0.1).mean() < 0.001


def test_a_nearly_empty_map_shows_its_few_pixels():
    a = np.zeros((3, 40, 40))
    a[0, 5, 5] = a[1, 20, 30] = 2.0  # 2 pixels of 1600: the 99th percentile is 0
    shown = display_map(a, "NCHW", False)
    assert shown[5, 5] == shown[20, 30] == 1.0 and shown.sum() == 2.0
    assert (display_map(np.zeros((3, 8, 8)), "NCHW", False) == 0).all()


def test_diverging_puts_zero_at_the_middle_and_keeps_the_sign():
    a = np.zeros((3, 10, 12))
    a[:, :, :4] = np.linspace(0.1, 5, 10)[:, None]  # positive columns
    a[:, :, 8:] = -np.linspace(0.1, 5, 10)[:, None]  # negative columns
    shown = display_map(a, "NCHW", True)
    assert (shown[:, 4:8] == 0.5).all()
    assert (shown[:, :4] > 0.5).all() and (shown[:, 8:] < 0.5).all()
    assert shown.min() >= 0 and shown.max() <= 1
    assert (display_map(np.zeros((3, 8, 8)), "NCHW", True) == 0.5).all()


def test_non_finite_entries_and_other_ranks():
    a = np.ones((3, 6, 6))
    a[0, 0, 0], a[0, 1, 1] = np.nan, np.inf
    unsigned, signed = display_map(a, "NCHW", False), display_map(a, "NCHW", True)
    assert unsigned[0, 0] == 0 and unsigned[1, 1] == 1 and np.isfinite(unsigned).all()
    assert signed[0, 0] == 0.5 and signed[1, 1] == 1
    vector = np.array([3.0, -1.0, 0.0, 0.5])
    assert display_map(vector, None, False).shape == (1, 4)  # a strip, as to_map draws it
    np.testing.assert_allclose(display_map(vector, None, False), to_map(vector, None))
    assert display_map(vector, None, True)[0, 2] == 0.5
    square = np.arange(12.0).reshape(3, 4) - 6
    np.testing.assert_allclose(display_map(square, None, False), to_map(square, None))


def test_signed_comes_from_the_method_classes():
    assert all(isinstance(m.signed, bool) for m in METHODS.values())
    signed = {name for name, m in METHODS.items() if m.signed}
    assert {"integrated_gradients", "input_x_gradient"} <= signed
    assert not signed & {"vanilla", "guided", "deconv", "smoothgrad", "gradcam", "fullgrad"}


def test_a_panel_shows_the_grey_map_beside_the_overlay():
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 255, (50, 60, 3), dtype=np.uint8))
    a = rng.standard_normal((3, 50, 60))
    sheet = panel(photo, display_map(a, "NCHW", False), to_map(a, "NCHW"), title="t")
    alone, over = tile(sheet, 1), tile(sheet, 2)
    assert is_grey(alone) and alone.std() > 20
    assert not is_grey(over)
    assert sheet.width > 3 * SIDE + 2 * GAP  # and the colour bars
    widths = {
        show: panel(photo, display_map(a, "NCHW", False), show=show).width
        for show in ("both", "saliency", "overlay")
    }
    assert widths["saliency"] < widths["both"] and widths["overlay"] < widths["both"]


def test_a_signed_panel_is_red_and_blue_with_white_at_zero():
    a = np.zeros((3, 32, 32))
    a[:, :, :10], a[:, :, 22:] = 1.0, -1.0
    photo = Image.new("RGB", (32, 32), "grey")
    sheet = panel(photo, display_map(a, "NCHW", True), signed=True, show="saliency")
    alone = tile(sheet, 1)
    red, middle, blue = alone[100, 20], alone[100, 112], alone[100, 200]
    assert red[0] > red[2] + 50 and blue[2] > blue[0] + 50
    assert (middle > 235).all()


def test_colour_bars_run_from_zero_to_one_or_from_minus_to_plus():
    bar = np.asarray(colorbar(101, DIVERGING_COLORMAP, signed=True), dtype=np.int32)
    top, middle, bottom = bar[2, 7], bar[50, 7], bar[98, 7]
    assert top[0] > top[2] + 50 and bottom[2] > bottom[0] + 50  # + red at the top
    assert (middle > 235).all()  # zero is white
    grey = np.asarray(colorbar(101, "gray"), dtype=np.int32)
    assert grey[2, 7].min() > 240 and grey[98, 7].max() < 15


def test_drawing_writes_the_map_on_its_own_and_the_panel(tmp_path):
    rng = np.random.default_rng(2)
    picture = Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    item = Item(np.zeros((1, 3, 40, 40), np.float32), picture=picture)
    a = rng.standard_normal((3, 40, 40)).astype(np.float32)
    drawing = Drawing(panel=True)
    for signed in (False, True):
        stem = tmp_path / f"x{signed}"
        files = drawing.files(stem, picture=True)
        drawing.draw(files, item, a, "NCHW", "title", {}, signed=signed)
        alone = np.asarray(Image.open(files["saliency"]).convert("RGB"), dtype=np.int32)
        assert alone.shape == (40, 40, 3)
        own = display_map(a, "NCHW", signed)
        cmap = DIVERGING_COLORMAP if signed else "gray"
        expected = np.asarray(colorize(own, cmap), dtype=np.int32)
        assert (alone == expected).all()
        assert is_grey(alone) != signed
        sheet = Image.open(files["panel"])
        assert is_grey(tile(sheet, 1)) != signed and not is_grey(tile(sheet, 2))
    assert Drawing().settings()["show"] == "both"


def test_explain_panel_has_the_standalone_tile(tmp_path):
    from onnxsal.models.digits_recipe import dataset

    _, _, x, _ = dataset()
    Image.fromarray((x[0] * 255).astype(np.uint8), "L").save(tmp_path / "d0.png")
    out = tmp_path / "out"
    args = ["explain", "digits-cnn", str(tmp_path / "d0.png"), "-m", "guided", "--panel"]
    result = CliRunner().invoke(cli, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    (panel_file,) = out.glob("*.panel.png")
    sheet = Image.open(panel_file)
    alone, over = tile(sheet, 1), tile(sheet, 2)
    assert is_grey(alone) and alone.max() == 255 and alone.std() > 20
    assert not is_grey(over)
    (saliency,) = out.glob("*.saliency.png")
    assert is_grey(np.asarray(Image.open(saliency).convert("RGB"), dtype=np.int32))


@pytest.fixture(scope="module")
def demo_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(cli, ["demo", "-o", str(out), "--show", "both", "-q"])
    assert result.exit_code == 0, result.output
    return out


def test_the_demo_puts_each_map_beside_its_overlay(demo_rows):
    sheet = Image.open(demo_rows / "chelsea.png").convert("RGB")
    pixels = np.asarray(sheet, dtype=np.int32)
    lefts = [0]  # photo, then per method: map (gap 8 before it), overlay (gap 2)
    for _ in DEMO_METHODS:
        lefts += [lefts[-1] + TILE + 8, lefts[-1] + 2 * TILE + 10]
    assert sheet.width > lefts[-1] + TILE
    tiles = [pixels[HEADER : HEADER + TILE, x : x + TILE] for x in lefts]
    for k, (method, _) in enumerate(DEMO_METHODS):
        alone, over = tiles[1 + 2 * k], tiles[2 + 2 * k]
        assert is_grey(alone) != METHODS[method].signed, method
        assert not is_grey(over), method
    for k in (0, 1):  # vanilla and guided: no longer a few specks
        brightness = tiles[1 + 2 * k][..., 0]
        assert (brightness > 25).mean() > 0.3, DEMO_METHODS[k][0]


def test_the_demo_page_says_what_it_shows():
    entries = [{"name": "cat", "label": "tabby", "top": 281, "file": "cat.png"}]
    both = page_html(entries, "m", "both")
    signed = [m for m, _ in DEMO_METHODS if METHODS[m].signed]
    assert "99th percentile" in both and "over the photo" in both
    assert all(name in both for name in signed) and "white at zero" in both
    overlay_only = page_html(entries, "m", "overlay")
    assert "99th percentile" not in overlay_only and "over the photo" in overlay_only
