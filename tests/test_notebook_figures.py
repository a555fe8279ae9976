"""Figures on the website are sharp at 2x: bnbook.notebook.setup() stores figures at twice
their pixel density with their display size in the output's metadata, glue keeps that
metadata, and myst-nb gives the page's <img> the display size (so the PNG has twice the
pixels of the box it is shown in)."""

from __future__ import annotations

import base64
import io
import re

import matplotlib
import nbformat
import pytest
from PIL import Image

matplotlib.use("agg")


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    yield shell
    InteractiveShell.clear_instance()


def _glued_output(fig, name: str) -> dict:
    """The display_data output myst_nb.glue(name, fig, display=False) sends."""
    from IPython.core.formatters import format_display_data
    from myst_nb.ext.glue import GLUE_PREFIX

    data, metadata = format_display_data(fig)
    metadata["scrapbook"] = {"name": name, "mime_prefix": GLUE_PREFIX}
    png = data["image/png"]
    png = png if isinstance(png, str) else base64.b64encode(png).decode()
    return nbformat.v4.new_output(
        "display_data", data={GLUE_PREFIX + "image/png": png,
                              GLUE_PREFIX + "text/plain": "<Figure>"}, metadata=metadata)


def test_setup_stores_figures_at_twice_their_display_size(shell):
    import matplotlib.pyplot as plt

    from bnbook.notebook import PIXEL_DENSITY, setup

    setup()
    fig, ax = plt.subplots(figsize=(4.0, 2.0))
    ax.plot([0, 1], [1, 0])   # an empty figure has no PNG
    out = _glued_output(fig, "fig")
    plt.close(fig)
    size = out.metadata["image/png"]
    png = Image.open(io.BytesIO(base64.b64decode(next(iter(out.data.values())))))
    assert PIXEL_DENSITY == 2
    # The inline backend crops the figure tightly and halves the pixel size for the display
    # size (rounding down), so the PNG has twice the pixels, give or take one.
    assert all(abs(p - 2 * s) <= 1 for p, s in zip(png.size, (size["width"], size["height"])))


def test_a_glued_figure_is_shown_at_its_display_size(tmp_path, shell):
    """A {glue:figure} of a 2x figure: the page's <img> gets the 1x size, its PNG 2x."""
    import matplotlib.pyplot as plt
    from sphinx.application import Sphinx

    from bnbook.notebook import setup

    setup()
    fig, ax = plt.subplots(figsize=(4.0, 2.0))
    ax.plot([0, 1], [1, 0])   # an empty figure has no PNG
    glued = _glued_output(fig, "fig")
    plt.close(fig)
    cell = nbformat.v4.new_code_cell("glue_figure('fig', fig)", outputs=[glued],
                                     execution_count=1)
    text = nbformat.v4.new_markdown_cell("# A page\n\n```{glue:figure} fig\n:name: f1\n\n"
                                         "A caption.\n```\n")
    nb = nbformat.v4.new_notebook(cells=[cell, text])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    source = tmp_path / "src"
    source.mkdir()
    nbformat.write(nb, source / "index.ipynb")
    (source / "conf.py").write_text("extensions = ['myst_nb']\nnb_execution_mode = 'off'\n")
    app = Sphinx(str(source), str(source), str(tmp_path / "html"), str(tmp_path / "doctrees"),
                 "html", status=None, warning=None, freshenv=True)
    app.build()
    html = (tmp_path / "html" / "index.html").read_text()
    (img,) = re.findall(r"<img [^>]*>", html)
    shown = re.search(r'style="width: (\d+)px; height: (\d+)px;"', img)
    assert shown, img
    src = re.search(r'src="([^"]+)"', img).group(1)
    pixels = Image.open(tmp_path / "html" / src).size
    assert all(abs(p - 2 * int(s)) <= 1 for p, s in zip(pixels, shown.groups())), (pixels, img)
