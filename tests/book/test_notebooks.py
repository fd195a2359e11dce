"""Every registered notebook runs under papermill with its small test parameters (the pipeline's test mode), leaves
no secret in its executed copy, stores its results, and reuses them on a rerun. Per-figure checks compare what the
notebook stored against an independent reading of the same inputs."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from vlmflow import book

from .conftest import REPO

SPECS = book.load_registry(REPO)


def check_token_roles(results: Path, model: str) -> None:
    """The stored layout must agree with the processor's own ids: image positions are exactly those holding the
    model's image token id (read from the model's config, not from the adapter), the query is the user's words."""
    import pandas as pd

    from vlmflow.model import toy_model_path

    layout = pd.read_parquet(results / "layout.parquet")
    folder = toy_model_path() if model == "toy" else Path(model)
    config = json.loads((folder / "config.json").read_text())
    image_token_id = config.get("image_token_index", config.get("image_token_id"))
    for _, prompt in layout.groupby("prompt"):
        assert ((prompt.role == "image") == (prompt.token_id == image_token_id)).all()
        assert prompt.role.iloc[-1] != "image" and (prompt.role == "image").sum() > 0
        query = prompt[prompt.role == "query"].token.str.replace("▁", "").str.strip()
        assert " ".join(t for t in query if t) == "describe the image"
        text = prompt[prompt.paper_group == "text"]
        assert set(text.role) <= {"bos", "system", "user", "query", "assistant"}
    assert (results / "token_roles.png").stat().st_size > 10_000


CHECKS = {"token_roles": check_token_roles}


@pytest.mark.book
@pytest.mark.parametrize("name", list(SPECS))
def test_notebook_runs_with_test_parameters(name, tmp_path, notebook_model, secret_env):
    spec = SPECS[name]
    results = tmp_path / "results"
    params = spec.parameters(test=True, overrides={"model": notebook_model}, results_dir=results)
    run = book.run_notebook(REPO / spec.notebook, tmp_path / f"{name}.ipynb", params, cwd=REPO,
                            log=tmp_path / f"{name}.log", name=name)
    executed = nbformat.read(run.output, as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "a cell did not run"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{name} shows no figure"
    assert secret_env not in run.output.read_text(), "the executed notebook contains OPENAI_API_KEY's value"
    if name in CHECKS:
        CHECKS[name](results, notebook_model)

    # A rerun with the same parameters reuses the stored results (and may not recompute them).
    stamp = {p.name: p.stat().st_mtime_ns for p in results.iterdir() if p.suffix in (".parquet", ".json")}
    again = book.run_notebook(REPO / spec.notebook, tmp_path / f"{name}-2.ipynb", params, cwd=REPO,
                              log=tmp_path / f"{name}-2.log", name=name)
    assert "reusing" in again.output.read_text()
    assert stamp == {p.name: p.stat().st_mtime_ns for p in results.iterdir() if p.name in stamp}
