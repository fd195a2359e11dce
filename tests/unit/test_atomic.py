"""vlmflow.atomic: a reader sees the old file or the complete new one; a failed writer leaves no trace."""
from __future__ import annotations

import json

import pytest

from vlmflow.atomic import TMP_PREFIX, atomic_write, atomic_write_json


def test_atomic_write_replaces_whole_files(tmp_path):
    path = tmp_path / "sub" / "a.bin"
    atomic_write(path, b"old")  # the folder is created
    assert path.read_bytes() == b"old"
    atomic_write(path, "new é")
    assert path.read_text(encoding="utf-8") == "new é"
    atomic_write(path, lambda f: (f.write(b"part 1 "), f.write(b"part 2")))
    assert path.read_bytes() == b"part 1 part 2"
    atomic_write_json(tmp_path / "b.json", {"x": [1, 2]}, indent=1)
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": [1, 2]}


def test_a_failed_writer_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.bin"
    atomic_write(path, b"old")

    def half_then_fail(f):
        f.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
    assert not list(tmp_path.glob(f"{TMP_PREFIX}*"))
