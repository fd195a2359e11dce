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
