"""Questions: balanced MME-style yes/no pairs with hard negatives, and exact answers from ground truth."""
from collections import Counter

import numpy as np

from vlmflow.toy.model import build_tokenizer
from vlmflow.toy.questions import KINDS, NUMBER_WORDS, sample_question, scene_questions
from vlmflow.toy.scenes import SceneConfig, make_scene


def _scenes(n=120, config=SceneConfig()):
    return [make_scene(0, "val", i, config) for i in range(n)]


def test_exists_pairs_balanced_and_correct():
    rules = Counter()
    for sc in _scenes():
        present = {(o.color, o.shape) for o in sc.toy_objects}
        ex = [q for q in scene_questions(sc) if q.kind == "exists"]
        assert sorted(q.answer for q in ex) == ["no", "yes"]  # exactly one yes and one no per image
        for q in ex:
            _, _, _, color, shape, _ = q.question.split()
            assert ((color, shape) in present) == (q.answer == "yes")
        yes = next(q for q in ex if q.answer == "yes")
        no = next(q for q in ex if q.answer == "no")
        _, _, _, yc, ys, _ = yes.question.split()
        _, _, _, nc, ns, _ = no.question.split()
        if no.negative == "color":  # same shape, other colour
            assert ns == ys and nc != yc
        if no.negative == "shape":  # same colour, other shape
            assert nc == yc and ns != ys
        rules[no.negative] += 1
    # hard negatives of both kinds are common
    assert rules["color"] > 25 and rules["shape"] > 25 and rules["random"] > 10


def test_count_color_position_answers():
    for sc in _scenes(60, SceneConfig.for_objects(1, 9)):
        objs = sc.toy_objects
        qs = scene_questions(sc)
        assert qs[0].kind == "describe" and qs[0].question == "describe the image"
        for q in qs:
            w = q.question.split()
            if q.question == "how many objects ?":
                assert q.answer == NUMBER_WORDS[len(objs)]
            elif q.kind == "count":
                shape = w[2].removesuffix("es") if w[2] == "crosses" else w[2].removesuffix("s")
                assert q.answer == NUMBER_WORDS[sum(o.shape == shape for o in objs)]
            elif q.kind == "color":
                matches = [o for o in objs if o.shape == w[4]]
                assert len(matches) == 1 and q.answer == matches[0].color
            elif q.kind == "position":
                matches = [o for o in sc.objects if (o.object.color, o.object.shape) == (w[3], w[4])]
                assert len(matches) == 1 and q.answer == matches[0].position


def test_sampling_is_balanced_for_yes_no():
    rng = np.random.default_rng(0)
    answers = Counter(sample_question(sc, "exists", rng).answer for sc in _scenes(400))
    assert abs(answers["yes"] - answers["no"]) < 60  # 400 fair coin flips: sd 10


def test_every_question_and_answer_is_in_the_vocabulary():
    tok = build_tokenizer()
    rng = np.random.default_rng(1)
    texts = set()
    for sc in _scenes(80, SceneConfig.for_objects(1, 9)):
        texts.update(q.question for q in scene_questions(sc))
        texts.update(q.answer for q in scene_questions(sc))
        texts.update(sample_question(sc, k, rng).question for k in KINDS)
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, t
