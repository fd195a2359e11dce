"""The training recipes of the training study (vlmflow.toy.recipes) on the TINY config: what each recipe changes,
the vision start (copied, frozen tower; trained projector and LM), the text-only stage, the CPU-time budget and the
record in training.json."""
import json

import pytest

from vlmflow.toy.model import IMAGE_TOKEN, TINY, build
from vlmflow.toy.scenes import SceneConfig, make_scene

SCENES = SceneConfig(image_size=TINY.image_size, cells=TINY.grid)


def load(folder):
    """(model, None): a saved toy model folder in float32 (as the recipes read the vision start)."""
    import torch
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(str(folder), dtype=torch.float32), None


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A TINY 'shipped' model folder whose vision weights the recipes start from."""
    from vlmflow.toy.train import export

    model, proc = build(TINY, seed=11)
    return export(model, proc, tmp_path_factory.mktemp("src") / "model", half=True)


def _base(**kw):
    from vlmflow.toy.train import TrainConfig

    return TrainConfig(batch_size=4, model=TINY, scenes=SCENES, eval_scenes=2, warmup_steps=1, **kw)


def test_each_recipe_changes_what_it_says_and_shares_the_budget():
    from vlmflow.toy.recipes import RECIPES, config

    base = config("baseline", 20, base=_base())
    assert (base.clock, base.threads, base.vision_minutes, base.minutes) == ("process", 1, 0.0, 20)
    assert set(RECIPES) >= {"baseline", "text-first", "no-mimetic", "deep", "crowded"}
    assert config("no-mimetic", 20, base=_base()).mimetic is False and base.mimetic is True
    assert config("deep", 20).model.text_layers == 12
    crowded = config("crowded", 20)
    assert crowded.scenes.max_objects == 8 and crowded.scenes_at(1.0).max_objects == 8
    assert crowded.scenes_at(0.0).max_objects == 2
    text_first = config("text-first", 20)
    assert text_first.minutes == pytest.approx(20 * (1 - RECIPES["text-first"].text_fraction))
    for name in RECIPES:  # one change each: everything else is the baseline's
        cfg = config(name, 20)
        differs = {k for k in cfg.__dict__ if getattr(cfg, k) != getattr(config("baseline", 20), k)}
        assert differs <= {"mimetic", "minutes", "curriculum", "model", "scenes"}, (name, differs)


def test_unknown_recipe_and_bad_budget_are_named():
    from vlmflow.toy.recipes import config
    from vlmflow.toy.train import TrainingError

    with pytest.raises(TrainingError, match="'wide'.*baseline"):
        config("wide", 10)
    with pytest.raises(TrainingError, match="positive"):
        config("baseline", 0)


def test_text_prompt_writes_the_scene_where_the_image_goes_and_labels_only_the_answer():
    from vlmflow.toy.model import build_tokenizer
    from vlmflow.toy.recipes import config, text_batch, text_prompt

    scene = make_scene(0, "train", 3)
    prompt = text_prompt(scene, "describe the image")
    assert IMAGE_TOKEN not in prompt and f"USER: {scene.description}\ndescribe the image ASSISTANT:" in prompt
    tok = build_tokenizer()
    batch = text_batch(0, config("text-first", 5, base=_base()), tok)
    assert tok.unk_token_id not in batch["input_ids"][batch["attention_mask"].bool()].tolist()
    assert tok.convert_tokens_to_ids(IMAGE_TOKEN) not in batch["input_ids"].tolist()
    assistant = tok("ASSISTANT:", add_special_tokens=False)["input_ids"]
    for ids, lab, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        seq, labels = ids[mask.bool()].tolist(), lab[mask.bool()].tolist()
        n = sum(x != -100 for x in labels)
        assert labels[:-n] == [-100] * (len(seq) - n) and labels[-n:] == seq[-n:]  # the answer is the tail
        assert seq[-1] == tok.eos_token_id and seq[-n - len(assistant):-n] == assistant
        assert lab[~mask.bool()].eq(-100).all()


def test_load_vision_copies_tower_and_projector_and_refuses_another_shape(source, tmp_path):
    import torch

    from vlmflow.toy.recipes import load_vision
    from vlmflow.toy.train import TrainingError

    model, _ = build(TINY, seed=0)
    lm_before = model.model.language_model.layers[0].self_attn.q_proj.weight.clone()
    n = load_vision(model, source)
    src, _ = load(source)
    for part in ("vision_tower", "multi_modal_projector"):
        theirs, ours = getattr(src.model, part).state_dict(), getattr(model.model, part).state_dict()
        assert theirs and all(torch.equal(ours[k], v) for k, v in theirs.items()), part
        n -= len(theirs)
    assert n == 0
    assert torch.equal(model.model.language_model.layers[0].self_attn.q_proj.weight, lm_before)  # LM untouched
    from dataclasses import replace

    wider, _ = build(replace(TINY, vision_hidden=48), seed=0)
    with pytest.raises(TrainingError, match="shape"):
        load_vision(wider, source)
    with pytest.raises(TrainingError, match="no toy model weights"):
        load_vision(model, tmp_path)


def test_recipe_training_freezes_the_tower_trains_the_rest_and_records_the_recipe(source, tmp_path):
    import torch

    from vlmflow.toy.recipes import train_recipe

    out, work = tmp_path / "out", tmp_path / "work"
    res = train_recipe("text-first", 0.5, out, work, vision_from=source, base=_base(steps=2), text_steps=3,
                       log=lambda m: None)
    assert res["step"] == 2
    info = json.loads((out / "training.json").read_text())
    assert info["recipe"]["name"] == "text-first" and info["recipe"]["cpu_budget_minutes"] == 0.5
    assert info["train_config"]["clock"] == "process" and info["train_config"]["threads"] == 1
    assert info["prepared"]["text_first"]["steps"] == 3 and info["prepared"]["vision_tower"] == "frozen"
    (src, _), (got, _) = load(source), load(out)
    tower = [(src.model.vision_tower.state_dict(), got.model.vision_tower.state_dict())]
    proj = [(src.model.multi_modal_projector.state_dict(), got.model.multi_modal_projector.state_dict())]
    assert all(torch.equal(a[k], b[k]) for a, b in tower for k in a)  # frozen: bit-identical after export
    assert any(not torch.equal(a[k], b[k]) for a, b in proj for k in a)  # the projector trains
    # resuming runs neither the vision copy nor the text stage again, and keeps what the first run prepared
    res2 = train_recipe("text-first", 0.5, out, work, vision_from=source, base=_base(steps=3), resume=True,
                        text_steps=50, log=lambda m: None)
    info2 = json.loads((out / "training.json").read_text())
    assert res2["step"] == 3 and info2["prepared"]["text_first"]["steps"] == 3


def test_process_clock_budget_ends_training(source, tmp_path):
    """A process-time budget ends the main stage (a tiny budget: a handful of steps, never the 10**6 cap)."""
    from vlmflow.toy.recipes import train_recipe

    res = train_recipe("baseline", 0.02, tmp_path / "out", tmp_path / "work", vision_from=source, base=_base(),
                       log=lambda m: None)
    import torch

    elapsed = torch.load(tmp_path / "work" / "checkpoint.pt", weights_only=False)["elapsed"]
    assert 1 <= res["step"] < 10 ** 6
    assert elapsed >= 0.02 * 60  # it ran until its CPU seconds were spent (and stopped: res came back)


def test_export_checkpoint_records_the_cpu_time_the_checkpoint_used(source, tmp_path):
    """A run stopped before its planned budget is exported from its last checkpoint: same weights (float16), and
    training.json's budget is the checkpoint's CPU time plus the recipe's own stage, next to the planned one."""
    import torch

    from vlmflow.toy.recipes import export_checkpoint, train_recipe
    from vlmflow.toy.train import TrainingError

    work = tmp_path / "work"
    train_recipe("text-first", 3, tmp_path / "out", work, vision_from=source, base=_base(steps=2), text_steps=2,
                 log=lambda m: None)
    state = torch.load(work / "checkpoint.pt", weights_only=False)
    record = export_checkpoint("text-first", 3, work, tmp_path / "stopped", base=_base(steps=2))
    stage = state["prepared"]["text_first"]["cpu_minutes"]
    assert record["cpu_budget_minutes"] == round(state["elapsed"] / 60 + stage, 2) and record["planned_cpu_minutes"] == 3
    info = json.loads((tmp_path / "stopped" / "training.json").read_text())
    assert info["recipe"] == record and info["steps"] == state["step"] == 2
    (got, _) = load(tmp_path / "stopped")
    for k, v in got.state_dict().items():
        assert torch.equal(v, state["model"][k].half().float()), k
    with pytest.raises(TrainingError, match="not recipe 'deep'"):
        export_checkpoint("deep", 3, work, tmp_path / "x", base=_base(steps=2))
    del state["model_config"]["rope_theta"]  # a checkpoint from before ToyModelConfig.rope_theta still exports
    torch.save(state, work / "checkpoint.pt")
    assert export_checkpoint("text-first", 3, work, tmp_path / "old", base=_base(steps=2)) == record
