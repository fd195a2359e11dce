"""Toy InternVL and toy Qwen2-VL (toy/architectures.py) on the TINY config: image tokens in the order the geometry
says, the training prompt equal to the core adapter's after a save and `vf.load`, the shared-prefix and
context-curriculum forward equal to the plain one, a few steps lowering the loss, and `train` exporting a folder that
loads and answers. The LLaVA toy's own tests are in test_toy_model.py."""
import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.oracles import train_losses
from vlmflow.toy.architectures import get_arch
from vlmflow.toy.model import TINY
from vlmflow.toy.scenes import SceneConfig, make_scene

SCENES = SceneConfig(image_size=TINY.image_size, cells=TINY.grid // 2)  # one 16 px cell under 2 x 2 tokens
ARCHES = ("internvl", "qwen2-vl")


@pytest.fixture(scope="module", params=ARCHES)
def built(request):
    arch = get_arch(request.param)
    model, processor = arch.build(TINY, seed=0)
    return arch, model, processor


def _region_image(grid: int, token_px: int):
    """An image whose every token square has its own grey level (token k at row-major cell k: level 10 + 7k)."""
    side = grid * token_px
    arr = np.zeros((side, side, 3), dtype=np.uint8)
    for k in range(grid * grid):
        r, c = divmod(k, grid)
        arr[r * token_px:(r + 1) * token_px, c * token_px:(c + 1) * token_px] = 10 + 7 * k
    from PIL import Image

    return Image.fromarray(arr)


def test_every_architecture_gives_the_llava_token_grid(built):
    """64 tokens over 128 px in the real config, TINY's grid here: every scene cell under 2 x 2 image tokens."""
    arch, model, processor = built
    image = make_scene(0, "test", 0, SCENES).image
    inputs = processor(images=[image], text=[arch.prompt(processor, "describe the image")], return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == TINY.grid ** 2
    assert processor.tokenizer.unk_token_id not in inputs["input_ids"][0].tolist()
    full = get_arch(arch.name).image_inputs(processor, [image])
    for key, value in full.items():
        assert torch.equal(value, inputs[key]), key  # training feeds the pixels inference feeds


def test_qwen2_vl_tokens_are_row_major_as_the_geometry_says():
    """Each merged token holds the 2 x 2 patches of one token square, in the order of qwen2_vl_geometry's boxes."""
    from vlmflow.adapters.geometry import qwen2_vl_geometry

    arch = get_arch("qwen2-vl")
    model, processor = arch.build(TINY, seed=0)
    token_px = TINY.patch_size
    image = _region_image(TINY.grid, token_px)
    inputs = arch.image_inputs(processor, [image])
    ip = processor.image_processor
    pv = inputs["pixel_values"]  # [patches, C * T * p * p], normalised
    merge = model.config.vision_config.spatial_merge_size
    level = (pv[:, 0] * ip.image_std[0] + ip.image_mean[0]) * 255  # first value of each patch, red channel
    per_token = level.reshape(-1, merge * merge).round()
    assert (per_token == per_token[:, :1]).all()  # the 4 patches of a token come from one token square
    cells = ((per_token[:, 0] - 10) / 7).long().tolist()
    geo = qwen2_vl_geometry(image.size, inputs["image_grid_thw"][0], processor)
    expected = [int(b[1] // token_px) * TINY.grid + int(b[0] // token_px) for b in geo.boxes]
    assert cells == expected == list(range(TINY.grid ** 2))


def test_internvl_pixel_shuffle_is_row_major_as_the_geometry_says():
    """The model's own get_image_features path (CLS dropped, pixel shuffle 0.5): token k gathers the 2 x 2 patches
    of geometry box k. The vision tower's output is replaced by each patch's (row, column)."""
    from vlmflow.adapters.geometry import internvl_geometry

    arch = get_arch("internvl")
    model, processor = arch.build(TINY, seed=0)
    S = TINY.image_size // (TINY.patch_size // 2)  # patches per side
    coords = torch.zeros(1, 1 + S * S, model.config.vision_config.hidden_size)
    rows, cols = np.divmod(np.arange(S * S), S)
    coords[0, 1:, 0], coords[0, 1:, 1] = torch.tensor(rows).float(), torch.tensor(cols).float()
    coords[0, 0] = -1  # CLS, dropped by the "default" strategy

    def fake_tower(module, args, kwargs, output):
        output.last_hidden_state = coords
        return output

    seen = {}
    h1 = model.model.vision_tower.register_forward_hook(fake_tower, with_kwargs=True)
    h2 = model.model.multi_modal_projector.register_forward_hook(lambda m, a, o: seen.update(x=a[0]))
    try:
        arch.image_features(model, arch.image_inputs(processor, [make_scene(0, "test", 0, SCENES).image]))
    finally:
        h1.remove()
        h2.remove()
    x = seen["x"][0].reshape(TINY.grid ** 2, 4, -1)  # 4 patches per token, hidden channels each
    patch_px = TINY.patch_size // 2
    boxes = torch.stack([x[:, :, 1].min(1).values * patch_px, x[:, :, 0].min(1).values * patch_px,
                         (x[:, :, 1].max(1).values + 1) * patch_px, (x[:, :, 0].max(1).values + 1) * patch_px], 1)
    geo = internvl_geometry((TINY.image_size, TINY.image_size), processor, model.config)
    assert torch.equal(boxes, torch.tensor(geo.boxes, dtype=boxes.dtype))


def test_tap_reads_the_image_tokens_in_sequence_order(built):
    """What the token probe reads (arch.tap) is exactly what the language model receives at the image positions."""
    from vlmflow.toy.train import Batcher, TrainConfig, make_batch

    arch, model, processor = built
    cfg = TrainConfig(batch_size=3, model=TINY, scenes=SCENES, arch=arch.name)
    batch = make_batch(0, cfg, Batcher(processor, arch, model))
    tap = arch.tap(model, TINY.grid ** 2)
    seen = {}
    lm = model.model.language_model
    hook = lm.register_forward_hook(lambda m, a, kw, o: seen.update(embeds=kw["inputs_embeds"]), with_kwargs=True)
    try:
        with torch.no_grad():
            model(**{k: v for k, v in batch.items() if k not in ("labels", "token_targets")})
    finally:
        hook.remove()
        features = tap.take()
        tap.remove()
    is_img = batch["input_ids"] == model.config.image_token_id
    assert features.shape == (3, TINY.grid ** 2, model.config.text_config.hidden_size)
    assert torch.equal(seen["embeds"][is_img].reshape(features.shape), features)


def test_shared_prefix_and_hidden_context_equal_the_plain_forward(built):
    """Shared prefix (M-RoPE positions passed explicitly) and context curriculum: the loss of one plain forward;
    Qwen2-VL's explicit positions equal the model's own get_rope_index."""
    from vlmflow.toy.train import Batcher, TrainConfig, forward_loss, hidden_context, make_batch

    arch, model, processor = built
    model = copy.deepcopy(model).train()
    cfg = TrainConfig(batch_size=4, model=TINY, scenes=SCENES, arch=arch.name)
    batch = make_batch(1, cfg, Batcher(processor, arch, model))
    batch["hidden"] = hidden_context(batch, model.config.image_token_id, 1.0, torch.Generator().manual_seed(0),
                                     system=arch.system_span(processor))
    span = arch.system_span(processor)
    assert bool(batch["hidden"][:, span].all())
    twin = copy.deepcopy(model)
    plain, shared = forward_loss(model, batch, share_prefix=False), forward_loss(twin, batch, share_prefix=True)
    assert torch.allclose(plain, shared, atol=1e-5)
    if "position_ids" in batch:
        own = {k: v for k, v in batch.items() if k not in ("position_ids", "hidden", "token_targets", "labels")}
        model.model.rope_deltas = None
        with torch.no_grad():
            pos, _ = model.model.get_rope_index(own["input_ids"], own["mm_token_type_ids"], own["image_grid_thw"],
                                                attention_mask=own["attention_mask"])
        assert torch.equal(pos, batch["position_ids"])
        assert not torch.equal(pos[1], pos[0])  # image tokens carry 2D positions: M-RoPE really is in play


def test_a_few_training_steps_reduce_the_loss(built):
    from vlmflow.toy.train import Batcher, TrainConfig, forward_loss, make_batch

    arch, model, processor = built
    model = copy.deepcopy(model).train()
    batch = make_batch(0, TrainConfig(batch_size=8, model=TINY, scenes=SCENES, arch=arch.name),
                       Batcher(processor, arch, model))
    losses = train_losses(model, lambda: forward_loss(model, batch, share_prefix=True))
    assert losses[-1] < 0.7 * losses[0]


def test_the_question_probe_reads_the_answer_position_of_the_shared_and_the_plain_forward(built):
    """``probe.AnswerTap`` hands the question probe layer 0's output at each sequence's last prompt token, whether
    the forward shared the prefix or not: the probe's loss through ``forward_loss`` equals the loss on that position
    of ``output_hidden_states`` (the independent oracle); the loss trains the path to it; and the held-out accuracy
    is the probe's argmax at that oracle position, for the heads the questions name."""
    from vlmflow.toy.probe import QUESTION_HEADS, AnswerTap, TokenProbe
    from vlmflow.toy.train import Batcher, TrainConfig, forward_loss, make_batch, question_probe_accuracy

    arch, model, processor = built
    model = copy.deepcopy(model).train()
    cfg = TrainConfig(batch_size=6, model=TINY, scenes=SCENES, arch=arch.name, probe_question=0,
                      kind_mix={"exists": 0.3, "color": 0.3, "describe": 0.4})
    batch = make_batch(2, cfg, Batcher(processor, arch, model))
    asked = batch["question_targets"]
    assert (asked[:, 0] > 0).any() and (asked[:, 0] < 0).any()  # some questions name a shape, some none
    probe = TokenProbe(model, processor.tokenizer, heads=QUESTION_HEADS, balanced=True)
    torch.nn.init.normal_(probe.background)
    tap = AnswerTap(model, 0)
    feed = {k: v for k, v in batch.items() if k not in ("labels", "token_targets", "question_targets")}
    with torch.no_grad():
        hidden = model(**feed, output_hidden_states=True).hidden_states[1]  # [0] is the embeddings
        answer_position = [int((row != -100).nonzero()[0, 0]) - 1 for row in batch["labels"]]
        oracle = probe.loss(hidden[torch.arange(6), answer_position][:, None], asked)
        for share in (False, True):
            with_probe = forward_loss(model, batch, share_prefix=share, question=(probe, tap), question_weight=1.0)
            torch.testing.assert_close(with_probe - forward_loss(model, batch, share_prefix=share), oracle,
                                       atol=1e-5, rtol=1e-4)
    losses = train_losses(model, lambda: (forward_loss(model, batch, question=(probe, tap), question_weight=1.0)
                                          - forward_loss(model, batch).detach()), steps=12)
    assert losses[-1] < 0.5 * losses[0]
    # held out (question_probe_accuracy): the probe's argmax at the oracle's answer position, per head it names
    model.eval()
    held_out = replace(cfg, eval_scenes=6, kind_mix={"exists": 1.0})
    got = question_probe_accuracy(model, (probe, tap), Batcher(processor, arch, model), held_out)
    val = make_batch(0, replace(held_out, batch_size=6), Batcher(processor, arch, model), split="val")
    feed = {k: v for k, v in val.items() if k not in ("labels", "token_targets", "question_targets")}
    with torch.no_grad():
        hidden = model(**feed, output_hidden_states=True).hidden_states[1]
        answer_position = [int((row != -100).nonzero()[0, 0]) - 1 for row in val["labels"]]
        features = hidden[torch.arange(6), answer_position]
        expected = {f"question_probe_acc_{name}": round(float((probe.logits(features, k).argmax(-1)
                                                               == val["question_targets"][:, k, 0]).float().mean()), 4)
                    for k, (name, _) in enumerate(QUESTION_HEADS)}
    assert got == expected
    describe_only = replace(held_out, kind_mix={"describe": 1.0})
    assert question_probe_accuracy(model, (probe, tap), Batcher(processor, arch, model), describe_only) == {}
    tap.remove()


@pytest.mark.parametrize("name", ARCHES)
def test_exported_folder_loads_and_prompts_as_training_did(tmp_path, name):
    """The exported folder (Qwen2-VL: `train` itself, both stages, curriculum on, some steps on clips; InternVL:
    `export` of the built toy, to keep the suite short) loads with `vf.load` through the core adapter, whose prompt
    ids equal the ids training fed."""
    import vlmflow as vf
    from vlmflow.toy.train import Batcher, TrainConfig, TrainingError, export, train

    arch = get_arch(name)
    if name == "qwen2-vl":
        clips, seed = 0.5, 4  # seed 4 draws clip, image, clip for steps 0-2
        cfg = TrainConfig(seed=seed, batch_size=4, model=TINY, scenes=SCENES, steps=3, eval_scenes=1,
                          warmup_steps=1, vision_steps=1, arch=name, clip_fraction=clips, threads=1, probe_events=0,
                          probe_question=1)
        history = train(cfg, tmp_path / "out", tmp_path / "work", log=lambda m: None)["history"]
        saved = torch.load(tmp_path / "work" / "checkpoint.pt", weights_only=False)
        assert saved["event_probe"]["bias"].any() and saved["question_probe"]["bias"].any()
        assert {"event_recall_none", "event_recall_appears"} <= set(history[-1])  # the event probe, held out
        with pytest.raises(TrainingError, match=r"question probe at layer 1, this run's is at 0 \(--probe-question"):
            train(replace(cfg, probe_question=0), tmp_path / "out", tmp_path / "work", resume=True, log=lambda m: None)
        with pytest.raises(TrainingError, match=r"--probe-question 2: no such language-model layer \(0\.\.1\)"):
            train(replace(cfg, probe_question=2), tmp_path / "o7", tmp_path / "w7", log=lambda m: None)
        with pytest.raises(TrainingError, match="trained with the event probe"):
            train(replace(cfg, probe_events=None), tmp_path / "out", tmp_path / "work", resume=True,
                  log=lambda m: None)
        with pytest.raises(TrainingError, match=r"event probe with 1 heads, this run's has 4 \(--event-attributes"):
            train(replace(cfg, event_attributes=True), tmp_path / "out", tmp_path / "work", resume=True,
                  log=lambda m: None)
        with pytest.raises(TrainingError, match=r"event probe with 1 heads, this run's has 6 \(--event-attributes"):
            train(replace(cfg, event_attributes=True, event_places=True), tmp_path / "out", tmp_path / "work",
                  resume=True, log=lambda m: None)
        with pytest.raises(TrainingError, match="--event-places .* needs --event-attributes"):
            train(replace(cfg, event_places=True), tmp_path / "o8", tmp_path / "w8", log=lambda m: None)
        with pytest.raises(TrainingError, match="--event-attributes .* needs --probe-events"):
            train(replace(cfg, probe_events=None, event_attributes=True), tmp_path / "o6", tmp_path / "w6",
                  log=lambda m: None)
        with pytest.raises(TrainingError, match=r"--probe-events 2: no such language-model layer \(0\.\.1\)"):
            train(replace(cfg, probe_events=2), tmp_path / "o4", tmp_path / "w4", log=lambda m: None)
        with pytest.raises(TrainingError, match="--probe-events 0 reads clips"):
            train(replace(cfg, clip_fraction=0.0), tmp_path / "o5", tmp_path / "w5", log=lambda m: None)
        assert "describe_video_f1" in history[-1] and "exists_acc" in history[-1]
        from vlmflow.toy.video import is_clip_step
        assert [is_clip_step(seed, s, clips) for s in range(3)] == [True, False, True]  # both kinds ran
        with pytest.raises(TrainingError, match="holds a"):
            train(TrainConfig(batch_size=4, model=TINY, scenes=SCENES, steps=3, arch="llava"), tmp_path / "o2",
                  tmp_path / "work", resume=True, log=lambda m: None)
        with pytest.raises(TrainingError, match="needs --arch qwen2-vl"):
            train(TrainConfig(batch_size=4, model=TINY, scenes=SCENES, steps=1, vision_steps=0, clip_fraction=0.5),
                  tmp_path / "o3", tmp_path / "w3", log=lambda m: None)
    else:
        model, processor = arch.build(TINY, seed=0)
        export(model, processor, tmp_path / "out")
    vlm = vf.load(str(tmp_path / "out"), dtype="float32")
    assert vlm.adapter.name == {"internvl": "internvl", "qwen2-vl": "qwen2_vl"}[name]
    image = make_scene(0, "test", 0, SCENES).image
    batcher = Batcher(vlm.processor, arch, vlm.model)
    for question in ("describe the image", "is there a red circle ?"):
        assert vlm.adapter.prompt(question) == arch.prompt(vlm.processor, question)
        prepared = vlm.prepare(image, question)
        assert prepared.inputs["input_ids"][0].tolist() == batcher.prompt_ids(question)


def test_model_card_architecture_lines():
    """LLaVA: the lines of the shipped card, unchanged; the others state their own token grid from config.json."""
    import json
    from pathlib import Path

    from vlmflow.model import toy_model_path
    from vlmflow.toy.architectures import architecture_card

    folder = Path(toy_model_path())
    shipped = (folder / "MODEL_CARD.md").read_text()
    lines = architecture_card(json.loads((folder / "config.json").read_text()), 0.0).splitlines()
    assert all(line in shipped for line in lines[:-1]) and len(lines) == 7
    for name in ARCHES:
        model, _ = get_arch(name).build(TINY, seed=0)
        card = architecture_card(model.config.to_dict(), 1.0)
        assert "4x4 = 16 image tokens" in card if name == "internvl" else "one image token per 8 px" in card


@pytest.mark.parametrize("name", ("llava", *ARCHES))
def test_rope_theta_sets_the_language_models_rotary_frequencies(name):
    """``ToyModelConfig.rope_theta`` reaches the language model's rotary frequencies theta^(-2i/d) in every
    architecture (Qwen2-VL's M-RoPE splits the same frequencies into its time / height / width sections), and the
    default keeps transformers' base of 10000 that the shipped toys were trained with."""
    from dataclasses import replace

    head_dim = TINY.text_hidden // TINY.text_heads
    for theta in (None, 20.0):
        cfg = TINY if theta is None else replace(TINY, rope_theta=theta)
        model, _ = get_arch(name).build(cfg, seed=0)
        expected = 1.0 / (theta or 10000.0) ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        inv_freq = model.model.language_model.rotary_emb.inv_freq
        torch.testing.assert_close(inv_freq, expected)


def test_a_continued_run_takes_the_rope_theta_asked_for(tmp_path):
    """``--init FOLDER --rope-theta 20``: the loaded weights run exactly as a model built at theta 20 with the same
    weights does, unlike at the folder's own base, and the export keeps the new base. Without the flag the CLI's
    model config is the one the folder records (an older record without the field: the default it was built with)."""
    import json
    from dataclasses import replace

    from vlmflow.cli.toy import _model_config_of
    from vlmflow.toy.train import TrainConfig, export, initial_model

    arch = get_arch("qwen2-vl")
    model, processor = arch.build(TINY, seed=0)
    export(model, processor, tmp_path / "base")
    at20 = replace(TINY, rope_theta=20.0)
    continued, _ = initial_model(TrainConfig(init=str(tmp_path / "base"), arch="qwen2-vl", model=at20))
    same_base, _ = initial_model(TrainConfig(init=str(tmp_path / "base"), arch="qwen2-vl", model=TINY))
    built20, _ = arch.build(at20, seed=1)
    built20.load_state_dict(continued.state_dict())
    ids = torch.tensor([processor.tokenizer("is there a red circle ?")["input_ids"]])

    def logits(m):
        with torch.no_grad():
            return m.eval()(input_ids=ids).logits

    torch.testing.assert_close(logits(continued), logits(built20))
    assert (logits(continued) - logits(same_base)).abs().max() > 1e-4  # float32 noise is ~1e-7
    export(continued, processor, tmp_path / "continued")
    saved = json.loads((tmp_path / "continued" / "config.json").read_text())
    assert saved["text_config"]["rope_parameters"]["rope_theta"] == 20.0

    assert _model_config_of(None) == TINY.__class__()
    (tmp_path / "base" / "training.json").write_text(json.dumps({"model_config": {**TINY.to_dict(), "rope_theta": 20.0}}))
    assert _model_config_of(str(tmp_path / "base")) == at20
    old = {k: v for k, v in TINY.to_dict().items() if k != "rope_theta"}
    (tmp_path / "base" / "training.json").write_text(json.dumps({"model_config": old}))
    assert _model_config_of(str(tmp_path / "base")) == TINY
