"""The book's sources stay reviewable and consistent, without executing anything: notebooks in git carry no outputs
and declare the shared parameters; the registry, the notebooks, the toc and the pages agree."""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from vlmflow import book

from .conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def parameter_names(nb) -> set[str]:
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected exactly one cell tagged 'parameters', found {len(cells)}"
    assert cells[0].cell_type == "code"
    names = set()
    for node in ast.parse(cells[0].source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ has no .ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_source_has_no_outputs_and_declares_parameters(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs: clear them before committing"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
    assert "papermill" not in nb.metadata, f"{path.name} is an executed copy (papermill metadata)"
    missing = set(book.REQUIRED_PARAMETERS) - parameter_names(nb)
    assert not missing, f"{path.name}: parameters cell lacks {sorted(missing)}"


def test_registry_covers_every_notebook_and_names_only_declared_parameters():
    specs = book.load_registry(REPO)
    registered = {(REPO / s.notebook).resolve() for s in specs.values()}
    unregistered = sorted(p.name for p in NOTEBOOKS if p.resolve() not in registered)
    assert not unregistered, f"notebooks without a notebooks/figures.toml entry (and _toc.yml line): {unregistered}"
    for spec in specs.values():
        declared = parameter_names(nbformat.read(REPO / spec.notebook, as_version=4))
        # papermill injects unknown names silently: a typo in the registry would be ignored without this check
        for where, params in (("defaults", spec.defaults), ("test", spec.test)):
            unknown = set(params) - declared
            assert not unknown, f"{spec.name}.{where} sets {sorted(unknown)}, not in the notebook's parameters cell"


def test_toc_and_registry_agree_and_pages_exist():
    specs = book.load_registry(REPO)
    book.check_toc(REPO, specs)  # raises on a page missing from the toc, an orphan figure page, a missing file
    entries = book.toc_files(REPO)
    assert len(entries) == len(set(entries)), "a page is listed twice in _toc.yml"
    for spec in specs.values():
        assert (spec.toc_entry in entries) == spec.in_book, spec.name  # a figure that waits is not in the toc
        assert spec.page.startswith("book/figures/") and spec.page.endswith(".ipynb")
        if spec.chapter:
            assert (REPO / spec.chapter).is_file(), f"{spec.name}: chapter page {spec.chapter} missing"


def test_check_toc_rejects_orphan_and_unregistered_pages(tmp_path):
    (tmp_path / "book" / "figures").mkdir(parents=True)
    (tmp_path / "book" / "index.md").write_text("# x\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/index\nchapters:\n  - file: book/figures/ghost\n")
    with pytest.raises(book.RegistryError, match="book/figures/ghost"):
        book.check_toc(tmp_path, {})
    spec = book.FigureSpec(name="fig", title="t", notebook="n.ipynb", page="book/figures/fig.ipynb")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/index\n")
    with pytest.raises(book.RegistryError, match="fig"):
        book.check_toc(tmp_path, {"fig": spec})


def test_executed_pages_are_git_ignored():
    import subprocess

    out = subprocess.run(["git", "check-ignore", "book/figures/token_roles.ipynb", "_build/html/index.html"],
                         cwd=REPO, capture_output=True, text=True)
    assert out.stdout.split() == ["book/figures/token_roles.ipynb", "_build/html/index.html"]


def test_paper_numbers_are_marked_unverified():
    """Every page that restates the paper's reported numbers says they are unverified (PROTOCOL.md's rule)."""
    for page in ("finding1_query_tokens.md", "finding2_middle_layers.md", "finding3_localized.md", "reprompting.md"):
        text = (REPO / "book" / page).read_text()
        assert "*(unverified)*" in text, page


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_plotting_code_is_hidden_the_same_way_on_every_page(path: Path):
    """A cell that draws a figure is tagged "hide-input" (the page shows the figure, its code folds away); analysis
    cells stay visible."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "plt.show()" in cell.source:
            assert "hide-input" in cell.metadata.get("tags", []), f"{path.name} cell {i} draws a figure but shows its code"


def test_claim_pages_paste_their_verdicts_instead_of_typing_them():
    """The opening page's table pastes every claim's parts from its executed notebook (glue), and each claim's
    notebook shows the criterion, decides with vlmflow.verdicts and publishes the result."""
    from vlmflow.verdicts import CLAIMS

    index = (REPO / "book" / "index.md").read_text()
    for claim in CLAIMS.values():
        nb = f"{claim.page}.ipynb::{claim.id}"
        for part in ("claim", "paper", "measured", "verdict"):
            assert f"{{glue:text}}`{nb}_{part}:s`" in index, f"index.md lacks {claim.id}_{part}"
        source = nbformat.read(REPO / "notebooks" / f"{Path(claim.page).name}.ipynb", as_version=4)
        code = "\n".join(c.source for c in source.cells if c.cell_type == "code")
        assert f"verdicts.decide_{claim.id}(" in code and ".publish(results)" in code, claim.id
        assert f'criterion_markdown("{claim.id}")' in code, f"{claim.id}: the criterion is not shown before the numbers"


def test_the_across_architectures_rerun_command_parses_as_written():
    """The rerun command on the chapter's page and in its notebook is one command, and `vlmflow figure` reads it as
    the page says: the `others` list as a list of model ids, every parameter one the notebook declares."""
    import re
    import shlex

    def command(text):
        (block,) = re.findall(r"^(vlmflow figure across_architectures .*?)(?:\n```|\Z)", text, flags=re.M | re.S)
        return shlex.split(block.replace("\\\n", " "))

    page = command((REPO / "book" / "across_architectures.md").read_text())
    nb = nbformat.read(REPO / "notebooks" / "across_architectures.ipynb", as_version=4)
    assert command(nb.cells[0].source) == page
    params = dict(book.parse_param(v) for k, v in zip(page, page[1:]) if k == "--param")
    assert isinstance(params["others"], list) and len(params["others"]) == 2
    assert all(isinstance(m, str) and "/" in m for m in params["others"])
    spec = book.load_registry(REPO)["across_architectures"]
    book.check_parameter_names(spec, params, REPO)  # RegistryError on a name the notebook does not declare
    assert page[page.index("--model") + 1] == "llava-hf/llava-1.5-7b-hf" and "--device" in page
