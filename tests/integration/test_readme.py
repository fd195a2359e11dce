"""The README's library example runs as written, and shows what it claims: a KO image->generated leaves the first
generated token (predicted from the last prompt position) untouched."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_example_runs_and_keeps_the_first_token(capsys):
    blocks = _python_blocks()
    assert blocks, "README.md has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102 - the project's own README
    base, cut = namespace["base"], namespace["cut"]
    printed = capsys.readouterr().out
    assert base.text in printed and cut.text in printed
    assert base.token_ids and cut.token_ids
    assert cut.token_ids[0] == base.token_ids[0]
    assert namespace["ko"].source == "image" and namespace["ko"].target == "generated"


def test_readme_recording_and_sweep_example_runs_and_matches_the_cli(tmp_path, monkeypatch, capsys):
    """The second example: the heatmap is the first token's attention over the original image, and ``vf.sweep``
    writes a folder that ``vlmflow sweep`` with the same settings resumes with nothing to compute (same key)."""
    import numpy as np

    from vlmflow.cli import main
    from vlmflow.store import read_manifest

    blocks = _python_blocks()
    assert len(blocks) >= 2, "README.md lost its recording and sweep example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[1], str(README), "exec"), namespace)  # noqa: S102 - the project's own README
    image, heat, table = namespace["image"], namespace["heat"], namespace["table"]
    assert heat.shape == (image.size[1], image.size[0]) and np.nanmax(heat) > 0
    assert table.attrs["computed"] == len(table) and (table["ko_type"] == "none").sum() == 1
    assert read_manifest("results/my-sweep")["provenance"]["preset"] == "from-layer"
    capsys.readouterr()
    assert main(["sweep", "--model", "toy", "--data", "toy-test", "--preset", "from-layer", "--n-images", "1",
                 "--max-new-tokens", "16", "--out", "results/my-sweep", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("0 configurations computed")
    with pytest.raises(Exception, match="holds a 'from-layer' sweep"):
        namespace["vf"].sweep(namespace["vlm"], "toy-test", preset="window", n_images=1, out="results/my-sweep")
