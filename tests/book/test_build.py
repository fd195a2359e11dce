"""The book builds (test mode, on a tmp copy): every toc page has HTML, figure pages embed their executed notebook's
images, no internal link is broken, and the build really treats warnings as errors."""
from __future__ import annotations

import re

import pytest

from vlmflow import book

pytestmark = pytest.mark.book


def test_every_page_is_built_and_figures_are_embedded(built_book):
    root, report = built_book
    html = report.html
    assert html == root / "_build" / "html"
    in_book = [s for s in book.load_registry(root).values() if s.in_book]
    assert {r.name for r in report.runs} == {s.name for s in in_book}  # a figure that waits for a model is skipped
    for entry in book.toc_files(root):
        assert (html / f"{entry}.html").is_file(), f"no HTML for toc entry {entry}"
    for spec in in_book:
        page = (html / f"{spec.toc_entry}.html").read_text()
        pngs = re.findall(r'<img[^>]+src="([^"]+\.png)"', page)
        assert pngs, f"figure page {spec.toc_entry} embeds no image"
        for src in pngs:
            assert (html / spec.toc_entry).parent.joinpath(src).resolve().stat().st_size > 1000
    assert book.check_links(html) == []
    card = (html / "book" / "toy_world.html").read_text()
    assert "Model card" in card or "model card" in card.lower()


def test_executed_notebooks_stay_in_the_build(built_book):
    root, _ = built_book
    assert (root / "_build" / "notebooks" / "token_roles.ipynb").is_file()
    assert not any((root / "notebooks").rglob("*.log"))
    import nbformat

    for nb_path in (root / "notebooks").glob("*.ipynb"):  # sources untouched by the build
        nb = nbformat.read(nb_path, as_version=4)
        assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code")


def _mini_book(tmp_path, page: str):
    (tmp_path / "_config.yml").write_text("title: mini\nonly_build_toc_files: true\nexecute:\n  execute_notebooks: 'off'\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: index\nchapters:\n  - file: other\n")
    (tmp_path / "index.md").write_text("# Mini\n\nSee {doc}`other`.\n")
    (tmp_path / "other.md").write_text(page)
    return tmp_path


def test_warnings_fail_the_build_and_name_the_page(tmp_path):
    root = _mini_book(tmp_path, "# Other\n\nA reference to {doc}`does_not_exist` breaks the build.\n")
    with pytest.raises(book.BookBuildError, match=r"(?s)other\.md.*does_not_exist"):
        book.build_html(root)


def test_a_clean_mini_book_builds(tmp_path):
    root = _mini_book(tmp_path, "# Other\n\nBack to {doc}`index`.\n")
    html = book.build_html(root)
    assert (html / "other.html").is_file()


def _glued_notebook(path, glued: dict):
    """An executed-looking notebook whose one code cell glued ``glued`` (myst-nb's record format, display=False)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("glue(...)")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"application/papermill.record/text/plain": repr(v)},
                                           metadata={"scrapbook": {"name": k,
                                                                   "mime_prefix": "application/papermill.record/"}})
                    for k, v in glued.items()]
    nb.cells = [nbformat.v4.new_markdown_cell("# Numbers"), cell]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_a_page_cannot_state_a_number_its_notebook_no_longer_produces(tmp_path):
    """Prose numbers are pasted from the executed notebook (glue); a key the notebook stopped producing fails the
    strict build and names the key, instead of leaving a stale number on the page."""
    (tmp_path / "_config.yml").write_text("title: mini\nonly_build_toc_files: true\nexecute:\n  execute_notebooks: 'off'\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: index\nchapters:\n  - file: nb\n")
    _glued_notebook(tmp_path / "nb.ipynb", {"f1_measured": "0.42 [0.31, 0.55]"})
    (tmp_path / "index.md").write_text("# Mini\n\nMeasured: {glue:text}`nb.ipynb::f1_measured:s`.\n")
    html = book.build_html(tmp_path)
    assert "Measured: <span class=\"pasted-text\">0.42 [0.31, 0.55]</span>" in (html / "index.html").read_text()
    _glued_notebook(tmp_path / "nb.ipynb", {"f1_renamed": "0.42 [0.31, 0.55]"})
    with pytest.raises(book.BookBuildError, match="f1_measured"):
        book.build_html(tmp_path)
