"""One experiment path (vlmflow.runner): `vlmflow sweep`, `vf.sweep` and the notebooks' `stored_sweep` give the same
experiment the same key, so whichever runs second computes nothing and loads no model; other weights, a changed
image file or another preset get another key (another folder) or a clear refusal, never a stale read."""
from __future__ import annotations

import shutil

import pytest

from vlmflow.cli import main
from vlmflow.presets import preset
from vlmflow.store import SettingsMismatchError, load_results, read_manifest
from vlmflow.sweep_scores import stored_sweep
from vlmflow.toy.scenes import write_coco

N, T = 2, 3  # images, generated tokens: the smallest sweep that still has two parts


def _cli(model_dir, out, data="toy-test", extra=()):
    return ["sweep", "--model", str(model_dir), "--data", str(data), "--n-images", str(N), "--preset", "from-layer",
            "--max-new-tokens", str(T), "--out", str(out), "--quiet", *extra]


def _notebook(folder, model_dir, data="toy-test"):
    return stored_sweep(folder, model=str(model_dir), configs_for=lambda n_layers: preset("from-layer", n_layers),
                        data=str(data), n_images=N, max_new_tokens=T, progress=False)


def test_cli_then_notebook_reads_the_cli_results(model_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cli"
    assert main(_cli(model_dir, out)) == 0
    assert "0 configurations computed" not in capsys.readouterr().out
    cli_rows = load_results(out)
    import vlmflow.model as model_module

    monkeypatch.setattr(model_module, "load", lambda *a, **k: pytest.fail("the notebook loaded the model"))
    rows, n_layers = _notebook(out, model_dir)
    assert rows.attrs["store"] == str(out) and rows.attrs["computed"] == 0 == rows.attrs["computed_images"]
    assert len(rows) == len(cli_rows) == N * len(preset("from-layer", n_layers))
    assert list(rows.sort_values(["image", "spec_id"]).text) == list(cli_rows.sort_values(["image", "spec_id"]).text)


def test_notebook_then_cli_and_vf_sweep_compute_nothing(model_dir, tmp_path, capsys):
    import vlmflow as vf

    rows, _ = _notebook(tmp_path / "results", model_dir)
    folder = rows.attrs["store"]
    assert rows.attrs["computed"] == len(rows) > 0 and folder.startswith(str(tmp_path / "results" / "sweep-"))
    assert main(_cli(model_dir, folder)) == 0
    assert "0 configurations computed" in capsys.readouterr().out
    table = vf.sweep(vf.load(str(model_dir)), "toy-test", preset="from-layer", out=folder, n_images=N,
                     max_new_tokens=T, progress=False)
    assert table.attrs["computed"] == 0 and len(table) == len(rows)
    assert read_manifest(folder)["settings_hash"] == rows.attrs["manifest"]["settings_hash"]


def test_other_weights_get_another_key(model_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    first, _ = _notebook(tmp_path / "results", model_dir)
    other = tmp_path / "other_weights"
    shutil.copytree(model_dir, other)
    weights = next(other.glob("*.safetensors"))
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    save_file({**tensors, name: tensors[name] + 1}, weights, metadata={"format": "pt"})
    second, _ = _notebook(tmp_path / "results", other)
    assert second.attrs["store"] != first.attrs["store"] and second.attrs["computed"] == len(second) > 0
    assert main(_cli(other, first.attrs["store"])) == 2  # the first weights' folder refuses the others
    assert "weights" in capsys.readouterr().err


def test_a_folder_of_another_experiment_is_refused_by_the_notebook_helper(model_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(_cli(model_dir, out, extra=("--question", "what is in the image?"))) == 0
    with pytest.raises(SettingsMismatchError, match="question"):
        _notebook(out, model_dir)


def test_a_changed_image_file_gets_another_key(model_dir, tmp_path):
    data = tmp_path / "data"
    write_coco(data, seed=0, n=3, split="val", progress=False)
    first, _ = _notebook(tmp_path / "results", model_dir, data)
    images = sorted((data / "images").iterdir())
    shutil.copyfile(images[1], images[0])  # image 0 replaced by another scene's file, same name
    second, _ = _notebook(tmp_path / "results", model_dir, data)
    assert second.attrs["store"] != first.attrs["store"] and second.attrs["computed_images"] == N
    assert main(_cli(model_dir, first.attrs["store"], data)) == 2  # the old folder refuses the new bytes


def test_another_preset_is_refused_by_a_cli_folder(model_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(_cli(model_dir, out)) == 0
    capsys.readouterr()
    args = _cli(model_dir, out)
    args[args.index("from-layer")] = "upto-layer"
    assert main(args) == 2
    assert "holds a 'from-layer' sweep" in capsys.readouterr().err


def test_item_sweep_goes_through_the_same_path(model_dir, tmp_path, monkeypatch):
    """Sweeps where every item asks its own question (the open-question chapters) use the same runner: the rows equal
    plain generation, a rerun computes nothing and loads no model, and a new item is the only thing computed."""
    import vlmflow as vf
    from vlmflow.item_sweep import SweepItem, stored_item_sweep
    from vlmflow.sweep import SweepConfig
    from vlmflow.toy.scenes import make_scene

    scenes = [make_scene(0, "test", i) for i in range(2)]
    questions = ["describe the image", "how many objects ?"]
    items = [SweepItem(f"s{i}|{q}", f"s{i}", q, (lambda sc=sc: sc.image)) for i, sc in enumerate(scenes)
             for q in questions]

    def run(its):
        rows, _, _ = stored_item_sweep(tmp_path / "results", its, model=str(model_dir), items_id="test-items",
                                       configs_for=lambda n_layers: [SweepConfig()], max_new_tokens=T,
                                       progress=False)
        return rows

    first = run(items)
    assert first.attrs["computed_items"] == 4 and first.attrs["store"].startswith(str(tmp_path / "results" / "items-"))
    vlm = vf.load(str(model_dir))
    for item in items:
        expected = vlm.generate(item.load(), item.question, max_new_tokens=T).text
        assert first.set_index("item").loc[item.key, "text"] == expected, item.key
    import vlmflow.model as model_module

    monkeypatch.setattr(model_module, "load", lambda *a, **k: pytest.fail("a fully stored item sweep loaded the model"))
    again = run(items)
    assert again.attrs["computed_items"] == 0 and list(again.text) == list(first.text)
    monkeypatch.undo()
    extra = SweepItem("s0|what color is the circle ?", "s0", "what color is the circle ?", items[0].load)
    grown = run([*items, extra])
    assert grown.attrs["computed_items"] == 1 and len(grown) == 5


def test_cli_localize_is_the_stored_localization(model_dir, tmp_path, monkeypatch, capsys):
    """`vlmflow localize --out` stores through the same runner as the notebooks' stored_localization: a rerun computes
    no image and loads no model, the library reads the CLI's folder back, and other settings are refused."""
    import json

    import pandas as pd

    from vlmflow.localize import stored_localization

    out = tmp_path / "loc"
    args = ["localize", "--model", str(model_dir), "--data", "toy-test", "--n-images", str(N), "--max-new-tokens", "8",
            "--out", str(out), "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert json.loads((out / "provenance.json").read_text())["computed_images"] == N == first["images"]
    import vlmflow.model as model_module

    monkeypatch.setattr(model_module, "load", lambda *a, **k: pytest.fail("a stored localization loaded the model"))
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == first
    assert json.loads((out / "provenance.json").read_text())["computed_images"] == 0
    res = stored_localization(out, model=str(model_dir), data="toy-test", n_images=N, max_new_tokens=8, exact=True,
                              progress=False)
    assert res.provenance["computed_images"] == 0
    stored = pd.read_parquet(out / "objects.parquet")  # parquet reads None back as NaN: compare as JSON (null both)
    assert len(stored) > 0 and res.objects.reset_index(drop=True).to_json() == stored.to_json()
    other = [*args[:-1], "--row", "fed", "--json"]
    assert main(other) == 2
    assert "row" in capsys.readouterr().err
