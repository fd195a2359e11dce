"""Planted mechanisms (``vlmflow.plant``): training applies ``vf.Knockout`` specs through the registered attention
function exactly as inference does, a planted model folder runs its plant by default, and the toy model registry
(``vf.load("toy:NAME")``, ``vlmflow toy models``). TINY toy models (milliseconds per forward)."""
import json

import pytest
import torch

from vlmflow.knockout import Knockout
from vlmflow.plant import Plant, PlantError, preset, read_plant, sample_rows
from vlmflow.toy.model import TINY, build
from vlmflow.toy.questions import QA
from vlmflow.toy.scenes import SceneConfig, make_scene

SCENES = SceneConfig(image_size=TINY.image_size, cells=TINY.grid)
# TINY has 2 decoder layers: a window-like plant (text and generated blind to the image in layer 0) and the compress one
PLANTS = {"window": Plant((Knockout("image", ("text", "generated"), layers=(0,)),), "tiny window"),
          "compress": Plant((Knockout("image", "generated"),), "tiny compress")}
QAS = [QA("describe", "describe the image", "a small red circle"), QA("count", "how many objects ?", "two"),
       QA("exists", "is there a blue square ?", "no"), QA("describe", "describe the image", "a big green triangle")]


@pytest.fixture(scope="module")
def tiny():
    return build(TINY, seed=1)


def _oracle_loss(vlm, images, qas, rows) -> torch.Tensor:
    """The training loss recomputed through inference: each sample's answer (+ EOS) teacher-forced with
    ``VLM.generate(force_prefix=..., return_logits=True)`` under that row's knockouts (left-padded prompt, KV cache,
    answer tokens ``generated`` by position), cross-entropy per answer token, mean per sample, mean over samples."""
    tok = vlm.tokenizer
    losses = []
    for image, qa, kos in zip(images, qas, rows):
        target = tok(qa.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        gen = vlm.generate(image, qa.question, knockout=kos or None, force_prefix=target, return_logits=True,
                           max_new_tokens=len(target))
        losses.append(torch.nn.functional.cross_entropy(gen.logits.float(), torch.tensor(target)))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("name", ["window", "compress"])
def test_training_loss_under_a_plant_equals_inference_under_the_same_knockout(tiny, name):
    from vlmflow.model import wrap
    from vlmflow.toy.train import Batcher, forward_loss

    model, proc = tiny
    vlm = wrap(model, proc, name="tiny")
    images = [make_scene(0, "train", i, SCENES).image for i in range(len(QAS))]
    batch = Batcher(proc, adapter=vlm.adapter)(images, QAS)
    soft = Plant(PLANTS[name].knockouts, probability=0.5)
    rows = sample_rows(soft, len(QAS), torch.Generator().manual_seed(0))
    assert 0 < sum(bool(r) for r in rows) < len(QAS)  # some rows planted, some not: per-sample application
    with torch.no_grad():
        shared = forward_loss(model, batch, share_prefix=True, knockouts=rows)
        plain_path = forward_loss(model, batch, share_prefix=False, knockouts=rows)
        unplanted = forward_loss(model, batch, share_prefix=True)
    oracle = _oracle_loss(vlm, images, QAS, rows)
    assert torch.allclose(shared, oracle, atol=1e-5) and torch.allclose(plain_path, oracle, atol=1e-5)
    assert not torch.allclose(unplanted, oracle, atol=1e-4)  # the plant changes what training sees


def test_share_prefix_refuses_a_knockout_of_the_shared_text(tiny):
    from vlmflow.model import wrap
    from vlmflow.toy.train import Batcher, TrainingError, forward_loss

    model, proc = tiny
    vlm = wrap(model, proc, name="tiny")
    images = [make_scene(0, "train", i, SCENES).image for i in range(2)]
    batch = Batcher(proc, adapter=vlm.adapter)(images, QAS[:2])
    with pytest.raises(TrainingError, match="share_prefix"):
        forward_loss(model, batch, share_prefix=True, knockouts=[[Knockout("system", "generated")]] * 2)


def _planted_folder(tiny, tmp_path, name="window"):
    from vlmflow.toy.train import export

    model, proc = tiny
    return export(model, proc, tmp_path / name, half=False, plant=PLANTS[name])


def test_a_planted_folder_runs_its_plant_by_default(tiny, tmp_path):
    """``vf.load`` of a folder with plant.json equals the bare weights under the explicit ``vf.Knockout``
    (forward logits and generation), and differs from the bare weights without it; a caller's knockout adds to it."""
    import vlmflow as vf

    folder = _planted_folder(tiny, tmp_path)
    planted, bare = vf.load(str(folder), dtype="float32"), vf.load(str(folder), dtype="float32", plant=False)
    assert planted.planted == PLANTS["window"].knockouts and bare.planted == ()
    images = [make_scene(0, "test", i, SCENES).image for i in range(3)]
    batch = planted.prepare(images, "describe the image")
    explicit = list(PLANTS["window"].knockouts)
    assert torch.equal(planted.forward(batch).logits, bare.forward(batch, knockout=explicit).logits)
    assert not torch.allclose(planted.forward(batch).logits, bare.forward(batch).logits, atol=1e-4)
    gen = planted.generate(images, return_logits=True, max_new_tokens=6)
    ref = bare.generate(images, knockout=explicit, return_logits=True, max_new_tokens=6)
    assert [g.text for g in gen] == [g.text for g in ref]
    assert all(torch.equal(a.logits, b.logits) for a, b in zip(gen, ref))
    extra = Knockout("image", "text", layers=(1,))
    assert torch.equal(planted.forward(batch, knockout=extra).logits,
                       bare.forward(batch, knockout=explicit + [extra]).logits)


@pytest.mark.parametrize("name", ["window", "compress"])
def test_a_knockout_and_the_part_its_plant_leaves_unblocked_run_the_same(tiny, tmp_path, name):
    """``Plant.unblocked``: the part of a top-K-like knockout (some image tokens hidden from text and generated rows in
    every layer) that the plant does not block already is exactly the layers / rows the plant leaves readable, and
    under the plant the two give the same generation (the planted-models notebook's top-K check rests on this)."""
    import vlmflow as vf

    vlm = vf.load(str(_planted_folder(tiny, tmp_path, name)), dtype="float32")
    L = vlm.num_layers
    images = [make_scene(0, "test", i, SCENES).image for i in range(2)]
    image_pos = vlm.prepare(images[:1], "describe the image").roles.positions("image", 0).tolist()
    ko = Knockout("image", ("text", "generated"), source_positions=image_pos[1::2])
    part = PLANTS[name].unblocked(ko, L)
    expected = {"window": [f"image[{','.join(map(str, image_pos[1::2]))}]:generated+text@1"],
                "compress": [f"image[{','.join(map(str, image_pos[1::2]))}]:text@all"]}[name]
    assert [k.spec_id for k in part] == expected
    gen = vlm.generate(images, knockout=ko, return_logits=True, max_new_tokens=6)
    ref = vlm.generate(images, knockout=list(part), return_logits=True, max_new_tokens=6)
    assert all(torch.equal(a.logits, b.logits) for a, b in zip(gen, ref))
    plain = vlm.generate(images, return_logits=True, max_new_tokens=6)  # the part is not a no-op: the check can fail
    assert not all(torch.equal(a.logits[:1], b.logits[:1]) for a, b in zip(gen, plain))
    assert PLANTS[name].unblocked(Knockout("image", "generated"), L) == (() if name == "compress" else
                                                                          (Knockout("image", "generated", (1,)),))


def test_the_fingerprint_names_the_plant(tiny, tmp_path):
    import vlmflow as vf
    from vlmflow.store import weights_fingerprint

    folder = _planted_folder(tiny, tmp_path)
    by_name = weights_fingerprint(str(folder))
    assert by_name == weights_fingerprint(vf.load(str(folder)))  # the name and the loaded model: one key
    assert by_name != weights_fingerprint(vf.load(str(folder), plant=False))  # the bare weights compute other numbers
    assert by_name.endswith("+plant:image:generated+text@0")


def test_toy_registry_lists_loads_and_names_the_valid_models(tiny, tmp_path, monkeypatch, capsys):
    import vlmflow as vf
    from vlmflow.cli import main
    from vlmflow.errors import WeightsNotAvailableError
    from vlmflow.model import toy_models
    from vlmflow.toy.evaluate import model_status, status_text

    _planted_folder(tiny, tmp_path / "registry", "compress")
    monkeypatch.setenv("VLMFLOW_TOY_MODELS", str(tmp_path / "registry"))
    assert list(toy_models()) == ["toy", "toy:compress"]
    assert vf.load("toy:compress").planted == PLANTS["compress"].knockouts
    with pytest.raises(WeightsNotAvailableError, match="'toy:compres'.*valid toy models: toy, toy:compress"):
        vf.load("toy:compres")
    assert main(["toy", "models", "--json"]) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["toy:compress"]["plant"] == ["image:generated@all"] and listed["toy"]["plant"] == []
    assert listed["toy:compress"]["architecture"] == "llava" and listed["toy:compress"]["unmet_targets"] is None
    # its stored evaluation (eval.json) decides which targets it meets: one bar missed, one knockout above chance
    plain = {"describe_f1": 0.95, "exists_acc": 0.9, "count_acc": 0.84, "color_acc": 0.9}
    ko = {"describe_f1": 0.0, "exists_acc": 0.5, "exists_n": 100, "count_acc": 0.6, "count_n": 100}
    (tmp_path / "registry" / "compress" / "eval.json").write_text(json.dumps(
        {"metrics": {"plain": plain, "full_knockout": ko}, "chance": {"exists_acc": 0.5, "count_acc": 0.25},
         "targets": {k: 0.85 for k in plain}}))
    assert main(["toy", "models", "--json"]) == 0
    unmet = {r["name"]: r["unmet_targets"] for r in json.loads(capsys.readouterr().out)}["toy:compress"]
    assert [(u["check"], u["metric"], u["value"]) for u in unmet] == [("plain >= target", "count_acc", 0.84),
                                                                     ("knockout <= chance", "count_acc", 0.6)]
    assert main(["toy", "models"]) == 0
    assert "unmet: count_acc 0.840 < 0.85, count_acc under knockout 0.600 > 0.3366" in capsys.readouterr().out
    # the chapters read the same status by the name they were given, a toy name or a folder; a hub id has none
    by_name, by_folder = model_status("toy:compress"), model_status(str(tmp_path / "registry" / "compress"))
    assert by_name == by_folder and [r["metric"] for r in by_name if not r["met"]] == ["count_acc", "count_acc"]
    assert status_text(by_name).startswith("unmet: count_acc 0.840 < 0.85")
    assert model_status("llava-hf/llava-1.5-7b-hf") is None and status_text(None) == "not evaluated"
    # an evaluation with intervals (``vlmflow toy eval --card`` records them): the line gives the unmet bar's
    (tmp_path / "registry" / "compress" / "eval.json").write_text(json.dumps(
        {"metrics": {"plain": plain}, "targets": {k: 0.85 for k in plain},
         "intervals": {"plain": {"count_acc": [0.77, 0.9], "color_acc": [0.84, 0.95]}}}))
    assert status_text(model_status("toy:compress")) == "unmet: count_acc 0.840 < 0.85 (95% interval [0.770, 0.900])"
    with pytest.raises(WeightsNotAvailableError, match="'toy:compres'"):
        model_status("toy:compres")


def test_presets_and_broken_plant_files(tmp_path):
    assert preset("window").knockouts[0].layers == (0, 1, 2, 5, 6, 7)  # the image only in layers 3 and 4 of 8
    assert preset("compress", 0.5).probability == 0.5
    with pytest.raises(PlantError, match="valid plants: window, compress"):
        preset("windows")
    (tmp_path / "plant.json").write_text('{"knockouts": ["image:nowhere"]}')
    with pytest.raises(PlantError, match="plant.json"):
        read_plant(tmp_path)
    assert read_plant(tmp_path / "absent") is None


def test_reprompting_a_planted_folder_runs_its_plant(tiny, tmp_path):
    """``vf.load`` of a planted folder re-prompts under its plant in the answer turn too (the oracles are in
    tests/unit/test_reprompt_plant.py): its answer equals the bare weights' answer turn under the explicit plant,
    and ``plant=False`` re-prompts the bare weights, which answer otherwise."""
    import dataclasses

    import vlmflow as vf
    from vlmflow.model import wrap
    from vlmflow.reprompt import answer, compress, describe

    folder = _planted_folder(tiny, tmp_path, "compress")
    planted, bare = vf.load(str(folder), dtype="float32"), vf.load(str(folder), dtype="float32", plant=False)
    image = make_scene(0, "test", 0, SCENES).image
    run = describe(planted, image, max_new_tokens=2)
    ctx = compress(run, "context")
    got = answer(ctx, "how many objects ?", max_new_tokens=3)
    explicit = wrap(bare.model, bare.processor, plant=Plant(PLANTS["compress"].knockouts))
    ref = answer(dataclasses.replace(ctx, run=dataclasses.replace(run, vlm=explicit)), "how many objects ?",
                 max_new_tokens=3)
    assert torch.equal(got.token_logits, ref.token_logits)
    off = answer(compress(describe(bare, image, max_new_tokens=2), "context"), "how many objects ?",
                 max_new_tokens=3)
    n = min(len(off.token_logits), len(got.token_logits))
    assert n >= 2  # compress blocks only the answer rows: the steps after the first tell the two apart
    assert not torch.allclose(off.token_logits[:n], got.token_logits[:n], atol=1e-4)


@pytest.mark.parametrize("name", ["window", "compress"])
def test_the_shipped_planted_models_carry_their_preset_and_met_their_bars(name):
    """data/toy_models/NAME: its plant.json is the preset it is named after, its card's evaluation (eval.json, under
    the plant) meets the 0.85 bars, and the folder fits the 8 MB budget."""
    from pathlib import Path

    from vlmflow.toy.evaluate import PLANTED_TARGETS, target_status

    folder = Path(__file__).resolve().parents[2] / "data" / "toy_models" / name
    assert read_plant(folder) == preset(name)
    results = json.loads((folder / "eval.json").read_text())
    assert results["plant"] == preset(name).spec_ids and results["targets"] == PLANTED_TARGETS
    assert all(r["met"] for r in target_status(results))
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 8 * 2 ** 20
