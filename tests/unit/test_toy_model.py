"""Toy model build (prompt, tokenizer, processor), training batches, loss, a training smoke test, save/load and the
evaluation's full knockout (through vf.Knockout) against an explicit-mask oracle. Uses the TINY config (milliseconds per step)."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.oracles import train_losses
from vlmflow.toy.model import IMAGE_TOKEN, SYSTEM_PROMPT, TINY, build, build_prompt, build_tokenizer
from vlmflow.toy.questions import QA
from vlmflow.toy.scenes import SceneConfig, make_scene

SCENES = SceneConfig(image_size=TINY.image_size, cells=TINY.grid)  # one 8 px cell per image token


@pytest.fixture(scope="module")
def tiny():
    return build(TINY, seed=0)


def test_prompt_is_llava_1_5():
    assert build_prompt("describe the image") == (
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the human's questions. USER: <image>\ndescribe the image ASSISTANT:")
    assert build_prompt("q").startswith(SYSTEM_PROMPT + " USER: " + IMAGE_TOKEN + "\n")


def test_processor_expands_image_block(tiny):
    model, proc = tiny
    inputs = proc(images=[make_scene(0, "test", 0, SCENES).image], text=[build_prompt("describe the image")],
                  return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    tok = proc.tokenizer
    assert ids[0] == tok.bos_token_id
    img_pos = [i for i, t in enumerate(ids) if t == model.config.image_token_id]
    assert len(img_pos) == TINY.grid ** 2  # one token per patch, CLS dropped
    assert img_pos == list(range(img_pos[0], img_pos[0] + len(img_pos)))  # one contiguous block
    assert tok.convert_ids_to_tokens(ids[img_pos[0] - 2:img_pos[0]]) == ["USER", ":"]
    assert tok.convert_ids_to_tokens(ids[-5:]) == ["describe", "the", "image", "ASSISTANT", ":"]
    assert tok.unk_token_id not in ids
    assert inputs["pixel_values"].shape == (1, 3, TINY.image_size, TINY.image_size)


def test_tokenizer_round_trips_answers():
    tok = build_tokenizer()
    text = "large red circle , small blue ring"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text and tok.unk_token_id not in ids


def test_batch_labels_are_answer_plus_eos(tiny):
    from vlmflow.toy.train import Batcher

    model, proc = tiny
    b = Batcher(proc)
    img = make_scene(0, "train", 0, SCENES).image
    qas = [QA("exists", "is there a red circle ?", "yes"), QA("describe", "describe the image", "small red ring")]
    batch = b([img, img], qas)
    tok = proc.tokenizer
    for row, qa in enumerate(qas):
        lab = batch["labels"][row]
        target = lab[lab != -100].tolist()
        assert target == tok(qa.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        n = int(batch["attention_mask"][row].sum())
        # labels sit at the end of the real (right-padded) sequence and equal the input ids there
        assert torch.equal(batch["input_ids"][row, n - len(target):n], torch.tensor(target))
        assert (batch["input_ids"][row, n:] == tok.pad_token_id).all()
        # the prompt part equals what the processor produces at inference
        ref = proc(images=[img], text=[build_prompt(qa.question)], return_tensors="pt")
        assert torch.equal(batch["input_ids"][row, :n - len(target)], ref["input_ids"][0])
        assert torch.allclose(batch["pixel_values"][row], ref["pixel_values"][0])


def test_per_sample_loss_matches_oracle():
    from vlmflow.toy.train import per_sample_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 5, generator=g)
    labels = torch.tensor([[-100, -100, -100, 1, 2, 3], [-100, -100, -100, -100, -100, 4],
                           [-100, -100, 0, 0, -100, -100]])
    per = []
    for b in range(3):
        terms = [-torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]] for t in range(1, 6) if labels[b, t] != -100]
        per.append(torch.stack(terms).mean())
    assert torch.allclose(per_sample_loss(logits, labels), torch.stack(per).mean())


def test_a_few_training_steps_reduce_the_loss():
    from vlmflow.toy.train import Batcher, TrainConfig, make_batch, per_sample_loss

    model, proc = build(TINY, seed=1)
    cfg = TrainConfig(batch_size=8, model=TINY, scenes=SCENES)
    batch = make_batch(0, cfg, Batcher(proc))
    labels = batch.pop("labels")
    losses = train_losses(model, lambda: per_sample_loss(model(**batch).logits, labels))
    assert losses[-1] < 0.7 * losses[0]


def test_curriculum_caps_objects_per_scene_and_never_exceeds_the_config():
    from vlmflow.toy.scenes import SceneConfig
    from vlmflow.toy.train import TrainConfig

    cfg = TrainConfig(curriculum=((0.0, 2), (0.15, 3), (0.3, 4)), scenes=SceneConfig(max_objects=4))
    assert [cfg.scenes_at(f).max_objects for f in (0.0, 0.149, 0.15, 0.29, 0.3, 1.0)] == [2, 2, 3, 3, 4, 4]
    small = TrainConfig(curriculum=((0.0, 2), (0.5, 6)), scenes=SceneConfig(min_objects=2, max_objects=3))
    assert [small.scenes_at(f).max_objects for f in (0.0, 0.9)] == [2, 3]  # capped by the configured 3
    assert TrainConfig(curriculum=(), scenes=SceneConfig(max_objects=4)).scenes_at(0.0).max_objects == 4
    early = cfg.scenes_at(0.0)
    counts = {len(make_scene(0, "train", i, early).objects) for i in range(60)}
    assert counts == {1, 2}


def test_train_resume_and_export(tmp_path):
    """`train` runs, checkpoints, resumes at the stored step, and exports a folder Auto* classes load offline."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlmflow.toy.train import TrainConfig, TrainingError, train

    cfg = TrainConfig(batch_size=4, model=TINY, scenes=SCENES, steps=2, eval_scenes=2, warmup_steps=1,
                      vision_steps=2)
    logs = []
    train(cfg, tmp_path / "out", tmp_path / "work", log=logs.append)
    assert sum(m.startswith("vision pretraining") for m in logs) == 1
    cfg.steps = 3
    logs.clear()
    r = train(cfg, tmp_path / "out", tmp_path / "work", resume=True, log=logs.append)
    assert r["step"] == 3
    assert not any(m.startswith("vision pretraining") for m in logs)  # stage 1 is not repeated on resume
    with pytest.raises(TrainingError, match=r"heads \['shape', 'color', 'size'\].*--probe-position"):
        train(replace(cfg, probe_position=True), tmp_path / "out", tmp_path / "work", resume=True, log=logs.append)
    with pytest.raises(TrainingError, match="scale learned, this run's is 10.0 .--probe-scale must match"):
        train(replace(cfg, probe_scale=10.0), tmp_path / "out", tmp_path / "work", resume=True, log=logs.append)
    with pytest.raises(TrainingError, match="'rope_theta': 10000.0"):
        train(replace(cfg, model=replace(TINY, rope_theta=20.0)), tmp_path / "out", tmp_path / "work", resume=True,
              log=logs.append)
    ckpt = tmp_path / "work" / "checkpoint.pt"  # a checkpoint from before ToyModelConfig.rope_theta still resumes
    state = torch.load(ckpt, weights_only=False)
    del state["model_config"]["rope_theta"]
    torch.save(state, ckpt)
    cfg.steps = 4
    assert train(cfg, tmp_path / "out", tmp_path / "work", resume=True, log=logs.append)["step"] == 4
    m = AutoModelForImageTextToText.from_pretrained(tmp_path / "out")
    p = AutoProcessor.from_pretrained(tmp_path / "out")
    assert type(m).__name__ == "LlavaForConditionalGeneration" and m.dtype == torch.float16
    assert m.config.text_config.num_hidden_layers == TINY.text_layers
    x = p(images=[make_scene(0, "test", 0, SCENES).image], text=[build_prompt("describe the image")],
          return_tensors="pt")
    assert torch.isfinite(m.float()(**x).logits).all()


def test_token_targets_name_the_object_under_every_token():
    """Oracle: a per-token loop over the exact masks (the implementation reshapes them)."""
    from vlmflow.toy.probe import token_targets
    from vlmflow.toy.scenes import COLORS, SHAPES, SIZES

    cfg = SceneConfig(max_objects=6)  # the default 128 px scene: 4 x 4 cells, 8 x 8 tokens of 16 px
    for i in range(5):
        sc = make_scene(0, "train", i, cfg)
        t = token_targets(sc, 8)
        assert t.shape == (3, 64)
        for r in range(8):
            for c in range(8):
                under = [o.object for o in sc.objects if o.mask[16 * r:16 * r + 16, 16 * c:16 * c + 16].any()]
                assert len(under) <= 1  # cells are whole tokens: never two objects in one token
                want = ((SHAPES.index(under[0].shape) + 1, list(COLORS).index(under[0].color) + 1,
                         SIZES.index(under[0].size) + 1) if under else (0, 0, 0))
                assert tuple(t[:, 8 * r + c]) == want
        assert (t[0] > 0).sum() >= len(sc.objects)  # every object labels at least one token


def test_position_heads_name_the_row_and_column_of_the_object_under_every_token():
    """With POSITION_HEADS the probe's targets add the row and column word of each object's position word (from its
    centre), on exactly the tokens that name its shape; a word's axes are known on paper."""
    from vlmflow.toy.probe import HEADS, POSITION_HEADS, token_targets
    from vlmflow.toy.scenes import COLUMN_WORDS, ROW_WORDS, position_axes

    assert [position_axes(w) for w in ("top left", "top", "right", "center", "bottom right")] == [
        ("top", "left"), ("top", "center"), ("center", "right"), ("center", "center"), ("bottom", "right")]
    with pytest.raises(ValueError):
        position_axes("middle")
    cfg = SceneConfig(max_objects=6)
    for i in range(5):
        sc = make_scene(0, "train", i, cfg)
        content, both = token_targets(sc, 8), token_targets(sc, 8, HEADS + POSITION_HEADS)
        assert both.shape == (5, 64) and (both[:3] == content).all()
        for o in sc.objects:
            tokens = o.mask.reshape(8, 16, 8, 16).any(axis=(1, 3)).reshape(-1)
            row, column = position_axes(o.position)
            assert (both[3, tokens] == ROW_WORDS.index(row) + 1).all()
            assert (both[4, tokens] == COLUMN_WORDS.index(column) + 1).all()
        assert ((both[3:] > 0) == (both[0] > 0)).all()  # background tokens name no position


@pytest.mark.parametrize("probe_position", [False, True])
def test_vision_pretraining_trains_only_tower_projector_and_probe(probe_position):
    """Stage 1 must leave the language model exactly as initialised and lower the probe loss (position heads
    included with ``probe_position``) on a fixed batch."""
    import copy

    from vlmflow.toy.probe import ProjectorTap, TokenProbe, token_targets
    from vlmflow.toy.train import TrainConfig, pretrain_vision

    cfg = TrainConfig(batch_size=8, model=TINY, scenes=SCENES, vision_steps=40, warmup_steps=1, lr=3e-3,
                      probe_position=probe_position)
    model, proc = build(TINY, seed=3)
    before = copy.deepcopy(model)
    probe = TokenProbe(model, proc.tokenizer, heads=cfg.probe_heads)
    # the LM embedding is read, not owned
    assert {n for n, _ in probe.named_parameters()} == {"background", "bias", "log_scale"}
    scenes = [make_scene(0, "val", i, SCENES) for i in range(8)]
    pv = proc.image_processor([s.image for s in scenes], return_tensors="pt")["pixel_values"]
    targets = torch.from_numpy(np.stack([token_targets(s, TINY.grid, cfg.probe_heads) for s in scenes]))

    def fixed_batch_loss():
        tap = ProjectorTap(model)
        with torch.no_grad():
            model.model.get_image_features(pixel_values=pv, vision_feature_layer=-1,
                                           vision_feature_select_strategy="default")
            loss = probe.loss(tap.take(), targets).item()
        tap.remove()
        return loss

    start = fixed_batch_loss()
    res = pretrain_vision(model, proc, probe, cfg, log=lambda m: None)
    assert res["steps"] == 40 and fixed_batch_loss() < 0.5 * start
    assert (set(res["object_token_accuracy"]) == set(res["object_token_cosine"]) == set(res["object_token_margin"])
            == {n for n, _ in cfg.probe_heads})
    for (name, a), b in zip(model.named_parameters(), before.parameters()):
        trained = name.startswith(("model.vision_tower", "model.multi_modal_projector"))
        if not trained:
            assert torch.equal(a, b), name
    assert not torch.equal(model.model.multi_modal_projector.linear_1.weight,
                           before.model.multi_modal_projector.linear_1.weight)
    assert not model.model.multi_modal_projector._forward_hooks  # the tap is removed


def test_export_works_while_the_tap_holds_a_training_graph(tmp_path):
    """Regression: export deep-copies the model, whose projector hook reaches the tap; a tap still holding the
    features of a training step (a non-leaf tensor) made copy.deepcopy raise and killed a training run."""
    from vlmflow.toy.probe import ProjectorTap
    from vlmflow.toy.train import export

    model, proc = build(TINY, seed=4)
    tap = ProjectorTap(model)
    pv = proc.image_processor([make_scene(0, "val", 0, SCENES).image], return_tensors="pt")["pixel_values"]
    model.model.get_image_features(pixel_values=pv, vision_feature_layer=-1, vision_feature_select_strategy="default")
    assert tap.features is not None and tap.features.grad_fn is not None
    export(model, proc, tmp_path / "out")
    assert (tmp_path / "out" / "config.json").exists()
    assert tap.take() is not None and tap.features is None  # the original tap is untouched by the copy
    tap.remove()


def test_token_probe_classes_are_the_word_embeddings(tiny):
    """The probe scores a feature against [background; embedding(word)]. Cosine mode (the default): a feature along a
    word's embedding row scores that word's class by exactly the learned scale (+ bias), whatever its norm, and
    highest of its head; dot-product mode: by the row's squared norm."""
    from vlmflow.toy.probe import HEADS, TokenProbe

    model, proc = tiny
    emb = model.get_input_embeddings().weight
    cosine, dot = TokenProbe(model, proc.tokenizer), TokenProbe(model, proc.tokenizer, cosine=False)
    for k, (_, words) in enumerate(HEADS):
        for j, w in enumerate(words):
            row = emb[proc.tokenizer.convert_tokens_to_ids(w)]
            logits = cosine.logits(37.0 * row[None], k)[0]
            assert logits.shape == (1 + len(words),)
            assert torch.allclose(logits[1 + j], cosine.log_scale.exp()) and int(logits.argmax()) == 1 + j
            assert torch.allclose(dot.logits(row[None], k)[0, 1 + j], row @ row)


def test_a_fixed_probe_scale_is_not_trained_and_scales_the_cosine(tiny):
    """``scale=S``: a feature along a word's row scores that word's class by exactly S (cosine 1 times S, bias 0),
    the scale is a buffer the optimiser never sees, and it survives a state-dict round trip; a fixed scale without
    cosine scores, or a non-positive one, is refused."""
    from vlmflow.toy.probe import HEADS, TokenProbe

    model, proc = tiny
    probe = TokenProbe(model, proc.tokenizer, scale=4.0)
    assert {n for n, _ in probe.named_parameters()} == {"background", "bias"}
    row = model.get_input_embeddings().weight[proc.tokenizer.convert_tokens_to_ids(HEADS[0][1][2])]
    assert torch.allclose(probe.logits(5.0 * row[None], 0)[0, 3], torch.tensor(4.0), atol=1e-5)
    again = TokenProbe(model, proc.tokenizer, scale=4.0)
    again.load_state_dict(probe.state_dict())
    assert torch.allclose(again.log_scale.exp(), torch.tensor(4.0))
    for bad in ({"scale": 4.0, "cosine": False}, {"scale": 0.0}):
        with pytest.raises(ValueError, match="fixed scale"):
            TokenProbe(model, proc.tokenizer, **bad)


def test_token_probe_cosine_is_each_object_tokens_cosine_with_its_own_words(tiny):
    """``object_token_cosine``: per head, the mean over object tokens of the cosine with the word naming the token's
    object. A token equal to (a multiple of) the ``circle`` row has cosine 1 with its shape word and, with its colour
    word, the cosine of the two embedding rows; background tokens (target 0) do not count, whatever they hold."""
    import torch.nn.functional as F

    from vlmflow.toy.probe import HEADS, TokenProbe

    model, proc = tiny
    emb = model.get_input_embeddings().weight.detach()
    row = {w: emb[proc.tokenizer.convert_tokens_to_ids(w)] for w in ("circle", "square", "red", "blue", "large")}
    words = dict(HEADS)
    features = torch.stack([3.0 * row["circle"], row["square"], torch.randn_like(row["red"])])[None]  # [1, 3, hidden]
    targets = torch.tensor([[[1 + words["shape"].index("circle"), 1 + words["shape"].index("square"), 0],
                             [1 + words["color"].index("red"), 1 + words["color"].index("blue"), 0],
                             [1 + words["size"].index("large")] * 2 + [0]]])  # [1, heads, 3]
    cos = TokenProbe(model, proc.tokenizer).object_token_cosine(features, targets)
    assert cos["shape"] == pytest.approx(1.0, abs=1e-5)
    expected_color = (F.cosine_similarity(row["circle"], row["red"], dim=0)
                      + F.cosine_similarity(row["square"], row["blue"], dim=0)) / 2
    assert cos["color"] == pytest.approx(float(expected_color), abs=1e-5)
    assert cos["size"] == pytest.approx(float((F.cosine_similarity(row["circle"], row["large"], dim=0)
                                               + F.cosine_similarity(row["square"], row["large"], dim=0)) / 2),
                                        abs=1e-5)
    # the margin: own word's cosine minus the mean cosine with the head's other words, by a loop over the words
    margin = TokenProbe(model, proc.tokenizer).object_token_margin(features, targets)
    for head, owns in (("shape", ("circle", "square")), ("color", ("red", "blue"))):
        expected = []
        for token, own in zip(features[0, :2], owns):
            others = [w for w in words[head] if w != own]
            cos_with = {w: float(F.cosine_similarity(token, emb[proc.tokenizer.convert_tokens_to_ids(w)], dim=0))
                        for w in (own, *others)}
            expected.append(cos_with[own] - sum(cos_with[w] for w in others) / len(others))
        assert margin[head] == pytest.approx(sum(expected) / 2, abs=1e-5), head


def test_balanced_token_probe_loss_is_the_mean_of_the_class_means(tiny):
    """``balanced``: per head, each present class's mean cross-entropy, averaged over the classes (ignored tokens,
    -100, nowhere): one rare class counts as much as the background; plain: the mean over tokens."""
    import torch.nn.functional as F

    from vlmflow.toy.probe import TokenProbe

    model, proc = tiny
    heads = (("event", ("circle", "square")),)
    plain = TokenProbe(model, proc.tokenizer, heads=heads)
    balanced = TokenProbe(model, proc.tokenizer, heads=heads, balanced=True)
    features = torch.randn(1, 6, model.get_input_embeddings().weight.shape[1])
    targets = torch.tensor([[[0, 0, 0, 0, 2, -100]]])
    ce = F.cross_entropy(plain.logits(features, 0)[0, :5], targets[0, 0, :5], reduction="none")
    assert torch.allclose(plain.loss(features, targets), ce.mean())
    assert torch.allclose(balanced.loss(features, targets), (ce[:4].mean() + ce[4]) / 2)
    # a head whose every token is ignored (attribute heads on a clip batch without changes) adds nothing
    two = TokenProbe(model, proc.tokenizer, heads=heads * 2, balanced=True)
    both = torch.cat([targets, torch.full_like(targets, -100)], dim=1)
    assert torch.allclose(two.loss(features, both), (ce[:4].mean() + ce[4]) / 2 / 2)


def test_mimetic_init_makes_queries_prefer_keys_like_themselves():
    """After mimetic_init every head's W_k ~ W_q, so a token's pre-softmax score against itself (no rotary shift)
    is about the requested self_score on average, and far above its score against unrelated tokens."""
    from vlmflow.toy.train import mimetic_init

    model, _ = build(TINY, seed=5)
    mimetic_init(model, self_score=4.0, seed=0)
    text = model.config.text_config
    hd = text.hidden_size // text.num_attention_heads
    x = torch.randn(512, text.hidden_size)
    x = x / x.pow(2).mean(-1, keepdim=True).sqrt()  # RMS-normalised, as the attention input
    for layer in model.model.language_model.layers:
        q = (x @ layer.self_attn.q_proj.weight.T).view(512, -1, hd)
        k = (x @ layer.self_attn.k_proj.weight.T).view(512, -1, hd)
        self_score = (q * k).sum(-1) / hd ** 0.5  # [tokens, heads]
        cross = (q * k.roll(1, 0)).sum(-1) / hd ** 0.5
        assert 3.0 < float(self_score.mean()) < 5.0
        assert float(cross.abs().mean()) < 0.35 * float(self_score.mean())


def test_context_curriculum_hides_background_tokens_and_the_system_prompt(tiny):
    """hidden_context(p=1) hides exactly the image tokens with no object under them and the system prompt (never BOS
    or "USER :"); p=0 hides nothing. With the mask, the loss does not depend on what the hidden tokens contain (the
    system prompt replaced by other words gives the same loss, shared-prefix or plain forward), and without it it
    does."""
    from vlmflow.toy.train import Batcher, TrainConfig, forward_loss, hidden_context, make_batch

    model, proc = tiny
    tok = proc.tokenizer
    cfg = TrainConfig(batch_size=4, model=TINY, scenes=SCENES)
    batch = make_batch(0, cfg, Batcher(proc))
    ids = batch["input_ids"]
    img_id = model.config.image_token_id
    g = torch.Generator().manual_seed(0)
    assert not hidden_context(batch, img_id, 0.0, g).any()
    hidden = hidden_context(batch, img_id, 1.0, g)
    first = int((ids[0] == img_id).nonzero()[0, 0])
    for b in range(ids.shape[0]):
        img_pos = (ids[b] == img_id).nonzero()[:, 0]
        background = batch["token_targets"][b, 0] == 0
        assert torch.equal(hidden[b, img_pos], background)
        assert hidden[b, 1:first - 2].all() and not hidden[b, 0] and not hidden[b, first - 2:first].any()
        assert not hidden[b, img_pos[-1] + 1:].any()
    other = ids.clone()
    other[:, 1:first - 2] = tok.convert_tokens_to_ids("circle")
    model.eval()
    with torch.no_grad():
        for share in (True, False):
            a = forward_loss(model, {**batch, "hidden": hidden}, share_prefix=share)
            b = forward_loss(model, {**batch, "input_ids": other, "hidden": hidden}, share_prefix=share)
            assert torch.allclose(a, b, atol=1e-6)
        assert not torch.allclose(forward_loss(model, batch), forward_loss(model, {**batch, "input_ids": other}))
        assert torch.allclose(forward_loss(model, {**batch, "hidden": hidden}, share_prefix=True),
                              forward_loss(model, {**batch, "hidden": hidden}, share_prefix=False), atol=1e-5)
    model.train()


def test_hide_probability_falls_linearly_to_zero():
    from vlmflow.toy.train import hide_probability

    assert [hide_probability(f, 0.4) for f in (0.0, 0.2, 0.4, 0.9)] == [1.0, 0.5, 0.0, 0.0]
    assert hide_probability(0.0, 0.0) == 0.0


def _oracle_mask(ids, image_token_id, attn):
    """Additive float mask [B, 1, T, T]: causal + padding, and non-image rows cannot see image columns."""
    B, T = ids.shape
    img = ids == image_token_id
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))[None].expand(B, T, T).clone()
    allowed &= attn.bool()[:, None, :]
    allowed &= ~((~img)[:, :, None] & img[:, None, :])
    allowed |= torch.eye(T, dtype=torch.bool)[None]  # keep pad rows finite; they are never read
    return torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[:, None]


def test_evaluation_knockout_equals_explicit_mask_oracle(tiny):
    """The toy evaluation's full knockout (``vf.Knockout("image", ("text", "generated"))`` through the registered
    attention) equals eager attention with an explicit 4D mask in which no non-image row sees an image column: the
    prompt logits, and greedy generation against a no-cache greedy loop under that mask."""
    import copy

    from vlmflow.knockout import Knockout
    from vlmflow.model import wrap
    from vlmflow.toy.evaluate import item_rows

    model, proc = tiny
    vlm = wrap(copy.deepcopy(model), proc, name="tiny toy")
    imgs = [make_scene(0, "test", i, SCENES).image for i in range(2)]
    qs = ["describe the image", "how many objects ?"]
    full = Knockout(source="image", target=("text", "generated"))
    batch = vlm.prepare(imgs, qs)
    x = batch.inputs
    ko = vlm.forward(batch, knockout=full).logits
    plain = vlm.forward(batch).logits
    eager = copy.deepcopy(model).eval()
    eager.set_attn_implementation({"text_config": "eager"})
    with torch.no_grad():
        mask = _oracle_mask(x["input_ids"], model.config.image_token_id, x["attention_mask"])
        ref = eager(input_ids=x["input_ids"], pixel_values=x["pixel_values"], attention_mask=mask).logits
    real = x["attention_mask"].bool()
    assert torch.allclose(ko[real], ref[real], atol=1e-5)
    assert not torch.allclose(ko[:, -1], plain[:, -1], atol=1e-4)  # the knockout changes the answer logits
    out = [g.text for g in vlm.generate_batch(batch, knockout=full, max_new_tokens=5)]
    ids, attn = x["input_ids"], x["attention_mask"]
    with torch.no_grad():
        for _ in range(5):
            logits = eager(input_ids=ids, pixel_values=x["pixel_values"],
                           attention_mask=_oracle_mask(ids, model.config.image_token_id, attn)).logits
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            ids, attn = torch.cat([ids, nxt], 1), torch.cat([attn, torch.ones_like(nxt)], 1)
    expected = []
    for row in ids[:, x["input_ids"].shape[1]:].tolist():
        if proc.tokenizer.eos_token_id in row:
            row = row[:row.index(proc.tokenizer.eos_token_id)]
        expected.append(proc.tokenizer.decode(row, skip_special_tokens=True).strip())
    assert out == expected
    # item_rows (what evaluate and the model card use) asks the same knockout of the same library call
    rows = item_rows(vlm, n=2, seed=0, knockout=True, kinds=("describe",), scene_config=SCENES, progress=False)
    direct = vlm.generate([make_scene(0, "test", i, SCENES).image for i in range(2)], "describe the image",
                          knockout=full, max_new_tokens=4 * SCENES.max_objects + 8)
    assert [r["answer"] for r in sorted(rows, key=lambda r: r["scene"])] == [g.text for g in direct]


def test_evaluate_reports_every_metric(tiny):
    import copy

    from vlmflow.model import wrap
    from vlmflow.toy.evaluate import evaluate, item_rows

    model, proc = tiny
    vlm = wrap(copy.deepcopy(model), proc, name="tiny toy")
    res = evaluate(vlm, n=3, scene_config=SCENES)
    assert set(res) >= {"describe_f1", "describe_f1_pooled", "exists_acc", "count_acc", "color_acc"}
    assert all(0 <= res[k] <= 1 for k in ("describe_f1", "exists_acc", "count_acc"))
    assert res["exists_n"] == 6  # one balanced pair per scene
    # the averages are those of the rows (an independent recount)
    rows = item_rows(vlm, n=3, scene_config=SCENES, progress=False)
    exists = [r["correct"] for r in rows if r["kind"] == "exists"]
    assert res["exists_acc"] == round(sum(exists) / len(exists), 4)
    described = [r for r in rows if r["kind"] == "describe"]
    assert res["describe_f1"] == round(sum(r["f1"] for r in described) / len(described), 4)
    for r in described:  # matched + extra = named, matched + missed = present
        assert r["n_matched"] + r["n_extra"] == r["n_answer"] and r["n_matched"] + r["n_missed"] == r["n_truth"]


def test_target_status_applies_targets_and_binomial_chance_bounds():
    from vlmflow.toy.evaluate import CHANCE, target_status

    plain = {"describe_f1": 0.95, "exists_acc": 0.89, "count_acc": 0.9, "color_acc": 1.0}
    ko = {"describe_f1": 0.06, "exists_acc": 0.6, "exists_n": 100, "count_acc": 0.0, "count_n": 100,
          "color_acc": 0.25, "color_n": 100}
    rows = target_status({"metrics": {"plain": plain, "full_knockout": ko}, "chance": CHANCE})
    met = {(r["check"].split()[0], r["metric"]): r["met"] for r in rows}
    assert met == {("plain", "describe_f1"): True, ("plain", "exists_acc"): False, ("plain", "count_acc"): True,
                   ("plain", "color_acc"): True,
                   ("knockout", "describe_f1"): False,  # above the 0.05 blind-guess bound
                   ("knockout", "exists_acc"): True,  # bound 0.5 + 2 * sqrt(0.25 / 100) = 0.6
                   ("knockout", "count_acc"): True,
                   ("knockout", "color_acc"): False}  # bound 1/6 + 2 * sqrt(5/36 / 100) = 0.241


def test_training_aids_are_read_from_every_run_of_the_chain(tmp_path):
    """``training_aids``: the aids of every run a toy model continued (training.json's nested ``base``), oldest
    first, each once, a non-default rotary base among them; none for the plain recipe; None without a record."""
    import json

    from vlmflow.toy.evaluate import training_aids

    first = {"train_config": {"fixed_words": ["yes", "no"], "probe_scale": None, "probe_question": None},
             "model_config": {"rope_theta": 10000.0}}
    second = {"train_config": {"fixed_words": ["yes", "no"], "probe_scale": 10.0}, "base": first}
    last = {"train_config": {"fixed_words": ["yes", "no"], "probe_question": 0, "probe_events": None},
            "model_config": {"rope_theta": 20.0}, "base": second}
    (tmp_path / "training.json").write_text(json.dumps(last))
    assert training_aids(str(tmp_path)) == ["fixed readout rows (yes, no)", "token probe at a fixed scale of 10",
                                            "question probe at layer 0", "rotary base 20"]
    (tmp_path / "training.json").write_text(json.dumps({"train_config": {"fixed_words": [], "probe_events": None}}))
    assert training_aids(str(tmp_path)) == []
    assert training_aids(str(tmp_path / "absent")) is None
    assert training_aids("toy") == []  # the LLaVA toy is the recipe


def test_shared_prefix_forward_equals_plain_forward():
    """Training runs the image-independent prompt prefix once per batch: same loss and gradients as the plain one."""
    import copy

    from vlmflow.toy.train import Batcher, TrainConfig, forward_loss, make_batch

    model, proc = build(TINY, seed=2)
    twin = copy.deepcopy(model)
    batch = make_batch(3, TrainConfig(batch_size=6, model=TINY, scenes=SCENES), Batcher(proc))
    plain, shared = forward_loss(model, batch, share_prefix=False), forward_loss(twin, batch, share_prefix=True)
    plain.backward()
    shared.backward()
    assert torch.allclose(plain, shared, atol=1e-6)
    n_checked = 0
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert (a.grad is None) == (b.grad is None), name  # unused weights (vision post-layernorm) get none
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-6, rtol=1e-4), name
            n_checked += 1
    assert n_checked > 0.9 * len(list(model.parameters()))


def test_image_tokens_carry_the_scene_at_initialisation():
    """Guard for the design that lets the LM see the image from step 0: pixels are normalised around the toy
    background, so the projected image tokens vary between images/positions at the scale of the text embeddings
    (with CLIP's ImageNet statistics the variation was ~0.08x the text-embedding norm and training plateaued)."""
    from vlmflow.toy.model import ToyModelConfig

    model, proc = build(ToyModelConfig(), seed=0)
    images = [make_scene(0, "val", i).image for i in range(6)]
    pv = proc.image_processor(images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        hidden = model.model.vision_tower(pv, output_hidden_states=True).hidden_states[-1][:, 1:]
        feats = model.model.multi_modal_projector(hidden)  # [B, N_img, D]
    variation = (feats - feats.mean((0, 1))).norm(dim=-1).mean()
    text_norm = model.model.language_model.embed_tokens.weight.norm(dim=-1).mean()
    assert variation > 0.5 * text_norm


def test_kind_mix_sets_the_questions_of_a_batch():
    """``TrainConfig.kind_mix`` (``--kind-mix``) decides the question kinds drawn: a mix of existence questions only
    gives yes/no answers only; the default mix gives descriptions too."""
    from vlmflow.toy.train import Batcher, TrainConfig, make_batch

    _, proc = build(TINY, seed=0)
    answers = {}
    for name, mix in (("exists", {"exists": 1.0}), ("default", None)):
        cfg = TrainConfig(batch_size=16, model=TINY, scenes=SCENES, **({"kind_mix": mix} if mix else {}))
        batch = make_batch(0, cfg, Batcher(proc))
        targets = [[t for t in row.tolist() if t != -100] for row in batch["labels"]]
        answers[name] = {proc.tokenizer.decode(t[:-1]).strip() for t in targets}
    assert answers["exists"] <= {"yes", "no"} and answers["exists"] == {"yes", "no"}
    assert any(len(a.split()) > 2 for a in answers["default"])  # descriptions


def test_question_targets_name_the_words_each_question_asks_about():
    """The question probe's targets (``probe.question_targets``): the shape and colour word a question names, by its
    1-based index in the probe head's words; none for a description, and none for a count's plural shape."""
    from vlmflow.toy.probe import IGNORED, QUESTION_HEADS, question_targets
    from vlmflow.toy.questions import plural
    from vlmflow.toy.scenes import COLORS, SHAPES

    shapes, colors = QUESTION_HEADS[0][1], QUESTION_HEADS[1][1]
    assert shapes == SHAPES and colors == tuple(COLORS)
    shape, color = SHAPES[2], list(COLORS)[3]
    got = question_targets([f"is there a {color} {shape} ?", f"what color is the {shape} ?",
                            f"how many {plural(shape)} ?", "describe the image"])
    assert got.shape == (4, 2, 1)
    assert got[:, :, 0].tolist() == [[3, 4], [3, IGNORED], [IGNORED, IGNORED], [IGNORED, IGNORED]]


def test_exists_negatives_decide_what_the_no_question_swaps():
    """``questions.exists_pair`` with ``negatives`` (``TrainConfig.exists_negatives``, ``--exists-negatives``): a
    shape-swapped "no" question asks for the "yes" question's colour on another shape, a colour-swapped one for its
    shape in another colour, both absent from the scene; with only shape swaps asked, every scene that has one gets
    one; the default draws the three rules at NEGATIVE_MIX's shares; an unknown rule is refused by name."""
    from vlmflow.toy.questions import NEGATIVE_MIX, exists_pair

    def negatives(mix, n=600):
        out = []
        for i in range(n):
            scene = make_scene(0, "train", i)
            present = {(o.color, o.shape) for o in scene.toy_objects}
            yes, no = exists_pair(scene, np.random.default_rng(i), mix)
            (yes_colour, yes_shape), (colour, shape) = (q.question.split()[3:5] for q in (yes, no))
            assert (colour, shape) not in present and (yes_colour, yes_shape) in present
            out.append((no.negative, colour == yes_colour, shape == yes_shape))
        return out

    shape_only = negatives({"shape": 1.0})
    assert all(same_colour and not same_shape for rule, same_colour, same_shape in shape_only if rule == "shape")
    assert sum(rule == "shape" for rule, *_ in shape_only) > 0.9 * len(shape_only)  # "random" only with no swap left
    colour_only = negatives({"color": 2.0, "random": 0.0})  # shares are normalised
    assert all(same_shape and not same_colour for rule, same_colour, same_shape in colour_only if rule == "color")
    assert sum(rule == "color" for rule, *_ in colour_only) > 0.9 * len(colour_only)
    default = [rule for rule, *_ in negatives(None, 2000)]
    for rule, share in NEGATIVE_MIX.items():  # only "random" gains from the fallbacks (its pool is never empty)
        observed = default.count(rule) / len(default)
        assert abs(observed - share) < 0.04 if rule != "random" else observed >= share - 0.04, (rule, observed)
    with pytest.raises(ValueError, match="unknown negative rule 'size'"):
        exists_pair(make_scene(0, "train", 0), np.random.default_rng(0), {"size": 1.0})


def test_targets_by_architecture_and_clip_bar():
    """The LLaVA toy's bars are 0.9, the other architectures' 0.85, and a clip model must also describe clips at 0.8."""
    from vlmflow.toy.evaluate import CHANCE, PLANTED_TARGETS, TARGETS, target_status, targets_for

    assert targets_for("llava", planted=False) == TARGETS and targets_for("llava", planted=True) == PLANTED_TARGETS
    plain = {"describe_f1": 0.87, "exists_acc": 0.86, "count_acc": 0.88, "color_acc": 0.95}
    for arch, all_met in (("llava", False), ("internvl", True), ("qwen2_vl", True)):
        res = {"metrics": {"plain": plain}, "chance": CHANCE, "targets": targets_for(arch, planted=False)}
        assert all(r["met"] for r in target_status(res)) == all_met, arch
    for f1, met in ((0.79, False), (0.81, True)):
        res = {"metrics": {"plain": plain}, "chance": CHANCE, "targets": targets_for("qwen2_vl", planted=False),
               "clips": {"describe_video_f1": f1, "count_at_end_acc": 0.5, "n_clips": 7}}
        clip_rows = [r for r in target_status(res) if r["check"] == "clips >= target"]
        assert [(r["metric"], r["bound"], r["met"]) for r in clip_rows] == [("describe_video_f1", 0.8, met)]


def test_model_card_reports_clip_metrics_and_the_clip_command(tmp_path):
    import json

    from vlmflow.toy.architectures import get_arch
    from vlmflow.toy.evaluate import CHANCE, targets_for, write_model_card

    model, _ = get_arch("qwen2-vl").build(TINY, seed=0)
    config = {**model.config.to_dict(), "architectures": [type(model).__name__]}  # as save_pretrained writes it
    (tmp_path / "config.json").write_text(json.dumps(config))
    plain = {"describe_f1": 0.9, "exists_acc": 0.9, "count_acc": 0.9, "color_acc": 0.9, "exists_no_shape_acc": 0.25}
    res = {"metrics": {"plain": plain}, "chance": CHANCE, "targets": targets_for("qwen2_vl", planted=False),
           "n_scenes": 5, "seed": 3, "knockout": "-", "versions": {},
           "clips": {"describe_video_f1": 0.7512, "describe_video_recall_object": 0.96, "describe_video_recall_move": 0.2,
                     "describe_video_recall_recolor": None, "count_at_end_acc": 0.625, "n_clips": 8}}
    card = write_model_card(tmp_path, res, "vlmflow toy train ...", name="toy:qwen2-vl").read_text()
    assert "--n 5 --seed 3 --knockout --clips 8 --card" in card
    assert "description fact F1 0.751" in card and "object count at the end 0.625" in card
    assert "recall of each fact family" in card and "kind): object 0.960, move 0.200; object count" in card
    assert "| clips >= target | describe_video_f1 | 0.751 | - | 0.800 | **no** |" in card  # no interval recorded
    assert "does **not** meet every quality target" in card and "not decided" not in card
    assert "| - `no`, a present colour on an absent shape | 0.250 | - |" in card  # the yes/no split, when measured
    assert "| - `no`, a present shape in an absent colour | - | - |" in card


def test_bar_intervals_resample_scenes_and_match_the_normal_approximation():
    """Oracle: the 95% interval of a mean over n independent scenes is about mean +- 1.96 sd / sqrt(n). 400 scenes
    answer one colour question each (half right) and two yes/no questions each (both right or both wrong): resampled
    by scene, yes/no's interval is as wide as colour's, not the ~0.07 of 800 independent answers."""
    from vlmflow.toy.evaluate import bar_intervals

    rng = np.random.default_rng(0)
    right = rng.permutation(np.arange(400) % 2 == 0)
    f1 = rng.uniform(0.5, 1.0, 400)
    rows = [{"scene": i, "kind": "color", "correct": bool(right[i])} for i in range(400)]
    rows += [{"scene": i, "kind": "exists", "correct": bool(right[i])} for i in range(400) for _ in range(2)]
    rows += [{"scene": i, "kind": "describe", "f1": float(f1[i]), "correct": False} for i in range(400)]
    ci = bar_intervals(rows)
    assert set(ci) == {"color_acc", "exists_acc", "describe_f1"}  # only the kinds the rows have
    half_width = {"color_acc": 1.96 * 0.5 / 20, "exists_acc": 1.96 * 0.5 / 20, "describe_f1": 1.96 * f1.std() / 20}
    centre = {"color_acc": 0.5, "exists_acc": 0.5, "describe_f1": f1.mean()}
    for metric, (low, high) in ci.items():
        assert low <= centre[metric] <= high, metric
        assert abs((high - low) / 2 - half_width[metric]) < 0.15 * half_width[metric], (metric, low, high)


def test_model_card_gives_each_bar_its_interval_and_says_when_the_bound_is_inside_it(tmp_path):
    """The Status table shows each check's 95% interval; a bound inside the interval (met or missed) is named in
    the verdict sentence, one outside it is not."""
    import json

    from vlmflow.toy.architectures import get_arch
    from vlmflow.toy.evaluate import CHANCE, target_status, targets_for, undecided, write_model_card

    model, _ = get_arch("qwen2-vl").build(TINY, seed=0)
    (tmp_path / "config.json").write_text(json.dumps({**model.config.to_dict(), "architectures": ["Qwen2VL"]}))
    plain = {"describe_f1": 0.99, "exists_acc": 0.87, "count_acc": 1.0, "color_acc": 0.95}
    res = {"chance": CHANCE, "targets": targets_for("qwen2_vl", planted=False),
           "n_scenes": 100, "seed": 0, "knockout": "-", "versions": {},
           "metrics": {"plain": plain, "full_knockout": {"describe_f1": 0.02}},
           "intervals": {"plain": {"describe_f1": [0.97, 1.0], "exists_acc": [0.82, 0.91], "count_acc": [1.0, 1.0],
                                   "color_acc": [0.9, 0.99]},
                         "full_knockout": {"describe_f1": [0.0, 0.06]}},  # its bound adds noise already: not named
           "clips": {"describe_video_f1": 0.794, "describe_video_f1_interval": [0.75, 0.84], "count_at_end_acc": 1.0,
                     "n_clips": 50}}
    assert [(r["metric"], r["met"]) for r in undecided(target_status(res))] == [("exists_acc", True),
                                                                                ("describe_video_f1", False)]
    card = write_model_card(tmp_path, res, "vlmflow toy train ...", name="toy:qwen2-vl").read_text()
    assert "| plain >= target | exists_acc | 0.870 | [0.820, 0.910] | 0.850 | yes |" in card
    assert "| clips >= target | describe_video_f1 | 0.794 | [0.750, 0.840] | 0.800 | **no** |" in card
    assert ("The bound lies inside the 95% interval of exists_acc (met), describe_video_f1 (missed): on this sample "
            "that side of the bar is not decided") in card
    assert "description fact F1 0.794 (95% interval [0.750, 0.840])" in card
    assert "| knockout <= chance | describe_f1 | 0.020 | [0.000, 0.060] | 0.050 | yes |" in card


def test_continued_model_card_gives_the_whole_training(tmp_path):
    """A model trained on from another's export (``--init``) keeps that run's record under ``base``
    (``train.base_record``), and its card names that run and lists its held-out history before its own; a chain of
    continuations is listed in order."""
    import json

    from vlmflow.toy.architectures import get_arch
    from vlmflow.toy.evaluate import CHANCE, targets_for, write_model_card
    from vlmflow.toy.train import base_record

    first = {"command": "vlmflow toy train --arch qwen2-vl --steps 9000", "steps": 9000,
             "history": [{"step": 4000, "minutes": 90, "exists_acc": 0.77}, {"step": 9000, "minutes": 190,
                                                                              "exists_acc": 0.86}]}
    (tmp_path / "first").mkdir()
    (tmp_path / "first" / "training.json").write_text(json.dumps(first))
    assert base_record(str(tmp_path / "first")) == first
    assert base_record(str(tmp_path)) is None and base_record(None) is None

    model, _ = get_arch("qwen2-vl").build(TINY, seed=0)
    (tmp_path / "config.json").write_text(json.dumps({**model.config.to_dict(), "architectures": ["Qwen2VL"]}))
    (tmp_path / "training.json").write_text(json.dumps(
        {"command": "vlmflow toy train --init first", "steps": 1500,
         "train_config": {"steps": 1500, "exists_negatives": {"shape": 0.6, "color": 0.4}},
         "history": [{"step": 1500, "minutes": 30, "exists_acc": 0.9}], "base": first}))
    res = {"metrics": {"plain": {"exists_acc": 0.9}}, "chance": CHANCE, "n_scenes": 5, "seed": 3,
           "targets": targets_for("qwen2_vl", planted=False), "knockout": "-", "versions": {}}
    card = write_model_card(tmp_path, res, "vlmflow toy train --init first", name="toy:qwen2-vl").read_text()
    assert "Continues the run `vlmflow toy train --arch qwen2-vl --steps 9000` (9000 steps" in card
    assert "cosine decay over 1500 steps" in card
    assert "negatives drawn by rule {'shape': 0.6, 'color': 0.4}" in card  # --exists-negatives, when set
    history = [line for line in card.splitlines() if line.startswith(("| base ", "| 1500 "))]
    assert [line.split(" | ")[0] for line in history] == ["| base 4000", "| base 9000", "| 1500"]
    # a continuation of a continuation: both runs it stands on, oldest first, each numbered
    second = {"command": "vlmflow toy train --init first", "steps": 1500,
              "history": [{"step": 1500, "minutes": 30, "exists_acc": 0.9}], "base": first}
    (tmp_path / "training.json").write_text(json.dumps(
        {"command": "vlmflow toy train --init second", "steps": 700, "train_config": {"steps": 700},
         "history": [{"step": 700, "minutes": 15, "exists_acc": 0.95}], "base": second}))
    card = write_model_card(tmp_path, res, "vlmflow toy train --init second", name="toy:qwen2-vl").read_text()
    assert ("1. `vlmflow toy train --arch qwen2-vl --steps 9000` (9000 steps); 2. `vlmflow toy train --init first` "
            "(1500 steps)") in card
    history = [line.split(" | ")[0] for line in card.splitlines() if line.startswith(("| base ", "| 700 "))]
    assert history == ["| base 1: 4000", "| base 1: 9000", "| base 2: 1500", "| 700"]
    (tmp_path / "training.json").write_text(json.dumps({"command": "x", "history": []}))
    assert "Continues" not in write_model_card(tmp_path, res, "x", name="toy:qwen2-vl").read_text()


def test_toy_train_vision_steps_fix_stage_one_length(monkeypatch, tmp_path):
    """`--vision-steps N` reaches the trainer as a fixed stage-1 length, and the card states it in steps;
    `--fixed-words` reaches it as a tuple of words, and the card names them (and only then)."""
    import vlmflow.toy.train as train_module
    from vlmflow.cli import main
    from vlmflow.toy.evaluate import _training_lines

    seen = {}
    monkeypatch.setattr(train_module, "train", lambda cfg, *a, **k: seen.__setitem__("cfg", cfg))
    assert main(["toy", "train", "--arch", "internvl", "--out", str(tmp_path / "m"), "--vision-steps", "2500"]) == 0
    assert seen["cfg"].vision_steps == 2500 and seen["cfg"].arch == "internvl" and seen["cfg"].fixed_words == ()
    train = {"train_config": {"vision_steps": 2500, "vision_minutes": 6.0, "aux_weight": 0.3},
             "vision_pretraining": {"steps": 2500}}
    assert "tower + projector alone for 2500 steps" in _training_lines(train)[0]
    assert "`yes`" not in _training_lines(train)[2]
    assert main(["toy", "train", "--out", str(tmp_path / "m"), "--fixed-words", "yes, no"]) == 0
    assert seen["cfg"].fixed_words == ("yes", "no") and seen["cfg"].exists_negatives is None
    assert main(["toy", "train", "--out", str(tmp_path / "m"), "--exists-negatives", "shape=0.6,color=0.2,random=0.2"]) == 0
    assert seen["cfg"].exists_negatives == {"shape": 0.6, "color": 0.2, "random": 0.2}
    with pytest.raises(SystemExit):
        main(["toy", "train", "--out", str(tmp_path / "m"), "--exists-negatives", "size=1"])
    assert seen["cfg"].probe_question is None
    assert main(["toy", "train", "--out", str(tmp_path / "m"), "--probe-question", "2", "--question-weight", "0.5"]) == 0
    assert (seen["cfg"].probe_question, seen["cfg"].question_weight) == (2, 0.5)
    assert (seen["cfg"].event_attributes, seen["cfg"].event_places) == (False, False)
    assert main(["toy", "train", "--out", str(tmp_path / "m"), "--event-attributes", "--event-places"]) == 0
    assert (seen["cfg"].event_attributes, seen["cfg"].event_places) == (True, True)
    train["train_config"]["fixed_words"] = ["yes", "no"]
    assert "the embedding rows of `yes`, `no` keep their random start" in _training_lines(train)[2]
    assert "question probe" not in _training_lines(train)[2]
    train["train_config"].update(probe_question=2, question_weight=0.5)
    assert "a question probe asks language-model layer 2's output at the answer position" in _training_lines(train)[2]


def test_fixed_words_keep_their_embedding_rows_through_training(tmp_path):
    """With ``fixed_words`` the (tied) rows of ``yes`` and ``no`` come out of training bit-identical to the fresh
    model's, step updates and weight decay undone, while the rows of the other answer words moved; a word outside
    the vocabulary is refused by name."""
    from vlmflow.toy.train import FixedRows, TrainConfig, TrainingError, initial_model, train

    cfg = TrainConfig(batch_size=4, model=TINY, scenes=SCENES, steps=3, eval_scenes=2, warmup_steps=1,
                      vision_minutes=0, fixed_words=("yes", "no"), kind_mix={"exists": 0.5, "color": 0.5})
    fresh, proc = initial_model(cfg)
    before = fresh.get_input_embeddings().weight.detach().clone()
    train(cfg, tmp_path / "out", tmp_path / "work", log=lambda m: None)
    state = torch.load(tmp_path / "work" / "checkpoint.pt", weights_only=False)["model"]
    after = state["model.language_model.embed_tokens.weight"]
    tok = proc.tokenizer
    fixed = tok.convert_tokens_to_ids(["yes", "no"])
    assert torch.equal(after[fixed], before[fixed])
    colours = tok.convert_tokens_to_ids(["red", "blue", "green"])
    assert (after[colours] - before[colours]).abs().max() > 1e-4
    with pytest.raises(TrainingError, match="zebra"):
        FixedRows(fresh, tok, ("yes", "zebra"))
