"""A result folder is keyed by what determines its numbers: a COCO folder whose image file was replaced is refused
by the folder of the first run (never resumed as "0 configurations computed"), the same bytes resume, and a sweep of
another preset into the same --out is refused by the CLI as by `vf.sweep`."""
from __future__ import annotations

import json
import shutil

import pytest

from vlmflow.cli import main
from vlmflow.data import resolve
from vlmflow.toy.scenes import write_coco


def _sweep(model_dir, data, out, preset="from-layer"):
    return ["sweep", "--model", str(model_dir), "--data", str(data), "--n-images", "2", "--preset", preset,
            "--max-new-tokens", "3", "--out", str(out), "--quiet"]


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and "%|" not in ln]  # not the progress bars


@pytest.fixture(scope="module")
def coco_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coco") / "scenes"
    write_coco(folder, seed=0, n=3, split="val", progress=False)
    return folder


def test_a_replaced_image_file_is_refused_not_resumed(model_dir, coco_folder, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(coco_folder, data)
    out = tmp_path / "out"
    assert main(_sweep(model_dir, data, out)) == 0
    first = capsys.readouterr().out
    assert "0 configurations computed" not in first
    assert main(_sweep(model_dir, data, out)) == 0  # the same bytes: everything is read back
    assert "0 configurations computed" in capsys.readouterr().out

    images = sorted((data / "images").iterdir())
    shutil.copyfile(images[2], images[0])  # image 0 replaced by another scene's file, same name
    assert main(_sweep(model_dir, data, out)) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("vlmflow: error:") and "other settings" in err[0] and "data:" in err[0]


def test_the_data_id_follows_the_content_not_the_path(coco_folder, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(coco_folder, a)
    shutil.copytree(coco_folder, b)
    fa, fb = resolve(str(a), 2).data_id.split("@")[1], resolve(str(b), 2).data_id.split("@")[1]
    assert fa == fb  # same bytes, same fingerprint
    truth = json.loads((b / "instances.json").read_text())
    truth["annotations"][0]["bbox"][0] += 1
    (b / "instances.json").write_text(json.dumps(truth))
    assert resolve(str(b), 2).data_id.split("@")[1] != fa  # edited ground truth
    third = sorted((a / "images").iterdir())[2]
    third.write_bytes(b"changed")  # outside the first 2 images: not part of this experiment's data
    assert resolve(str(a), 2).data_id.split("@")[1] == fa


def test_another_preset_into_the_same_out_is_refused(model_dir, coco_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_sweep(model_dir, "toy-test", out)) == 0
    capsys.readouterr()
    assert main(_sweep(model_dir, "toy-test", out, preset="upto-layer")) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "holds a 'from-layer' sweep" in err[0] and "'upto-layer'" in err[0]
