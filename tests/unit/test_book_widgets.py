"""Executed notebooks lose their widget outputs and widget state when staged into the book (vlmflow.book.drop_widgets):
tqdm draws notebook progress bars as widgets once ipywidgets is installed, and a page with widgets would load
require.js and the widget manager from a CDN. Every other output stays."""
from __future__ import annotations

import nbformat

from vlmflow import book


def test_drop_widgets_removes_widget_outputs_and_state_only(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("run()")
    widget = nbformat.v4.new_output("display_data", data={book.WIDGET_VIEW: {"model_id": "x", "version_major": 2,
                                                                               "version_minor": 0},
                                                            "text/plain": "sweep:   0%|"})
    text = nbformat.v4.new_output("stream", name="stdout", text="recorded 4 images\n")
    image = nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})
    cell.outputs = [widget, text, image]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), cell]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2,
                                                                             "version_minor": 0}}
    path = tmp_path / "page.ipynb"
    nbformat.write(nb, path)
    book.drop_widgets(path)
    out = nbformat.read(path, as_version=4)
    assert "widgets" not in out.metadata
    assert out.cells[1].outputs == [text, image]
    before = path.read_text()
    book.drop_widgets(path)  # nothing left to drop: the file is not rewritten
    assert path.read_text() == before
