"""`onnxsal demo`: real photos explained by a real model, and a page showing them.

Each photo's row shows every method's map on its own (grey; red-blue for methods whose
maps are signed) and over the photo (`--show`). The page comes from a Jinja2 template
with autoescaping on: labels and names come from the model's metadata and must never
become markup.
"""

from __future__ import annotations

from pathlib import Path

import click

from onnxsal.cli import common
from onnxsal.cli.files import atomic_write, exclusive
from onnxsal.cli.options import colormap_option, show_options
from onnxsal.errors import OnnxsalError

DEMO_PHOTOS = ("chelsea", "coffee", "astronaut")
DEMO_METHODS = (
    ("vanilla", {}),
    ("guided", {}),
    ("deconv", {}),
    ("smoothgrad", {"n_samples": 24}),
    ("integrated_gradients", {"steps": 24}),
    ("lrp", {"composite": "epsilon_plus_flat"}),
    ("fullgrad", {}),
    ("gradcam", {}),
)
TILE = 192  # pixels a side of each picture in a row
GAPS = (8, 2)  # white before each method's tiles, and between its map and its overlay


@click.command()
@click.option(
    "-o", "--out", default="onnxsal-demo", show_default=True, type=click.Path(file_okay=False)
)
@click.option("--model", default="efficientnet-lite0", show_default=True)
@colormap_option
@show_options
@common.verbosity
@common.guarded
def demo(out, model, colormap, show, saliency_colormap, quiet, verbose) -> None:
    """Explain scikit-image's bundled photos with EfficientNet-Lite0, eight methods each.

    Writes one panel per photo and an HTML page showing them all (images beside it), and
    prints the page's path. Needs the zoo's extras: pip install 'onnxsal[examples]'.

    \b
    Example:
      onnxsal demo -o demo/
      onnxsal demo -o demo/ --show overlay
    """
    from PIL import Image

    from onnxsal.methods import METHODS
    from onnxsal.pictures import colorbars, display_map, map_tiles, tile_row, to_map

    try:
        from skimage import data
    except ImportError as exc:
        raise OnnxsalError(
            "the demo's photos come from scikit-image: pip install 'onnxsal[examples]'"
        ) from exc
    folder = Path(out)
    ex = common.explainer(model)
    if ex.preprocess is None:
        raise OnnxsalError(
            f"'{model}' records no preprocessing for pictures; the demo needs a model that "
            "does (see 'onnxsal convert')."
        )
    entries = []
    with exclusive(folder):
        for photo_name in DEMO_PHOTOS:
            photo = Image.fromarray(getattr(data, photo_name)())
            x = ex.preprocess(photo)
            top = int(ex.predict(x).argmax())
            label = ex.labels[top] if ex.labels and top < len(ex.labels) else str(top)
            picture = photo.convert("RGB").resize((TILE, TILE), Image.BICUBIC)
            tiles, names, gaps = [picture], ["photo"], []
            for method, method_options in DEMO_METHODS:
                result = ex.run(x, method, top, **method_options)
                a, signed = result.attribution[0], METHODS[method].signed
                shown = map_tiles(
                    picture,
                    display_map(a, ex.layout, signed),
                    to_map(a, ex.layout),
                    signed=signed,
                    show=show,
                    colormap=colormap,
                    saliency_cmap=saliency_colormap,
                )
                tiles += shown
                names += [method, "over the photo"][: len(shown)]
                gaps += list(GAPS[: len(shown)])
            signs = [METHODS[m].signed for m, _ in DEMO_METHODS]
            bars = colorbars(
                TILE, signs, show=show, colormap=colormap, saliency_cmap=saliency_colormap
            )
            sheet = tile_row([*tiles, *bars], gap=[*gaps, GAPS[0]], captions=names)
            path = folder / f"{photo_name}.png"
            atomic_write(path, lambda tmp, s=sheet: s.save(tmp, format="PNG"))
            entries.append({"name": photo_name, "label": label, "top": top, "file": path.name})
            if not quiet:
                common.echo(f"{photo_name}: top-1 {top} '{label}' -> {path}")
        page = folder / "index.html"
        html = page_html(entries, model, show)
        atomic_write(page, lambda tmp: Path(tmp).write_text(html, encoding="utf-8"))
    common.echo(str(page.resolve()))


def page_html(entries: list[dict], model: str, show: str = "both") -> str:
    """The demo page; every value is escaped by the template engine."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    from onnxsal.methods import METHODS

    env = Environment(
        loader=PackageLoader("onnxsal.cli"), autoescape=True, undefined=StrictUndefined
    )
    methods = [m for m, _ in DEMO_METHODS]
    signed = [m for m in methods if METHODS[m].signed]
    return env.get_template("demo.html").render(
        entries=entries, model=model, methods=methods, signed=signed, show=show
    )
