"""Query kinds (the paper's first open question): does the image reach the answer the same way for every question?

Where it sits: the toy world's questions (``vlmflow.toy.questions``: describe, exists, count, colour, position) and
their exact answers become sweep items (``vlmflow.item_sweep``) in two phrasings each, the trained one and a
paraphrase; the notebook ``query_kinds`` runs the paper's knockouts on them and this module scores and classifies
what comes back:

- :data:`PARAPHRASES` rewrites a question in other words *of the toy's own vocabulary* (its word-level tokenizer
  maps any other word to ``<unk>``): the same content in an order the model never saw in training;
- :func:`query_items` draws one question per kind per scene (deterministic; exists alternates a present and an absent
  object between scenes, so yes and no are balanced), with the object it names (for localization);
- :func:`answer_agreement` scores a knocked-out answer against the unmasked one (the paper's protocol: F1 with the
  exact judge for descriptions; for one-word answers, whether the answer is the same) and :func:`answer_correct`
  against the exact truth;
- :func:`object_token_hits` are the image tokens under an object (a peak there is a hit; their share is chance);
- :func:`pathway` names the route a kind's answer takes from the intervals of the two all-layer knockouts.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vlmflow.errors import VlmflowError
from vlmflow.stats import CI

if TYPE_CHECKING:
    from vlmflow.item_sweep import SweepItem
    from vlmflow.toy.scenes import Scene

KINDS = ("describe", "exists", "count", "color", "position")
PHRASINGS = ("trained", "paraphrase")


class QueryKindError(VlmflowError):
    pass


def paraphrase(kind: str, question: str) -> str:
    """The question in another word order, using only words the toy model's tokenizer knows."""
    words = question.replace("?", "").split()
    if kind == "describe":
        return "what is there ?"
    if kind == "exists":  # is there a red circle ? -> a red circle is there ?
        return " ".join(words[2:]) + " is there ?"
    if kind == "count":  # how many objects ? -> how many objects is there ?
        return " ".join(words) + " is there ?"
    if kind == "color":  # what color is the circle ? -> the circle is what color ?
        return " ".join(words[3:]) + " is what color ?"
    if kind == "position":  # where is the red circle ? -> the red circle is where ?
        return " ".join(words[2:]) + " is where ?"
    raise QueryKindError(f"unknown query kind {kind!r}; known: {', '.join(KINDS)}")


PARAPHRASES = {k: paraphrase(k, q) for k, q in (
    ("describe", "describe the image"), ("exists", "is there a red circle ?"), ("count", "how many objects ?"),
    ("color", "what color is the circle ?"), ("position", "where is the red circle ?"))}


@dataclass(frozen=True)
class KindQuestion:
    """One scene's question of one kind: its exact answer, and the scene object it names (index, or None)."""

    kind: str
    question: str
    answer: str
    named: int | None


def kind_questions(scene: "Scene", index: int) -> list[KindQuestion]:
    """At most one question per kind for the scene (scene ``index`` decides yes or no for exists)."""
    from vlmflow.toy.questions import scene_questions

    qs = scene_questions(scene)
    objects = scene.toy_objects
    out = []
    for kind in KINDS:
        pool = [q for q in qs if q.kind == kind]
        if kind == "exists":
            want = "yes" if index % 2 == 0 else "no"
            pool = [q for q in pool if q.answer == want]
        elif kind == "count":
            pool = [q for q in pool if q.question == "how many objects ?"]
        if not pool:
            continue
        q = pool[0]
        named = None
        if kind in ("exists", "position") and q.answer != "no":
            color, shape = q.question.replace("?", "").split()[-2:]
            named = next(i for i, o in enumerate(objects) if (o.color, o.shape) == (color, shape))
        elif kind == "color":
            shape = q.question.replace("?", "").split()[-1]
            named = next(i for i, o in enumerate(objects) if o.shape == shape)
        out.append(KindQuestion(kind, q.question, q.answer, named))
    return out


def query_items(n_images: int, seed: int = 0, kinds: Sequence[str] = KINDS,
                phrasings: Sequence[str] = PHRASINGS) -> list["SweepItem"]:
    """Sweep items for toy-test scenes 0..n-1: one per (scene, kind, phrasing), labelled with ``kind``,
    ``phrasing``, ``truth`` (the exact answer), ``scene`` and ``named`` (index of the named object, -1 for none)."""
    from vlmflow.item_sweep import SweepItem, item_key
    from vlmflow.toy.scenes import make_scene

    bad = [k for k in kinds if k not in KINDS] + [p for p in phrasings if p not in PHRASINGS]
    if bad:
        raise QueryKindError(f"unknown kinds or phrasings {bad}; kinds: {', '.join(KINDS)}; "
                             f"phrasings: {', '.join(PHRASINGS)}")
    items = []
    for i in range(int(n_images)):
        scene = make_scene(seed, "test", i)
        image = f"toy-test-{i:05d}"
        for q in kind_questions(scene, i):
            if q.kind not in kinds:
                continue
            for phrasing in phrasings:
                question = q.question if phrasing == "trained" else paraphrase(q.kind, q.question)
                items.append(SweepItem(
                    item_key(image, question, q.kind[:3], phrasing[0]), image, question,
                    load=(lambda s=seed, j=i: make_scene(s, "test", j).image),
                    labels=(("kind", q.kind), ("phrasing", phrasing), ("truth", q.answer), ("scene", i),
                            ("named", -1 if q.named is None else q.named))))
    return items


def _norm(text: str) -> str:
    return " ".join(str(text).lower().replace("?", " ").replace(".", " ").split())


def answer_agreement(kind: str, reference: str, candidate: str, judge=None) -> float:
    """How much of the reference answer the candidate keeps: F1 (exact judge, or ``judge``) for descriptions,
    1.0 / 0.0 for the same / another one-word (or position) answer."""
    if kind == "describe":
        from vlmflow.judge import get_judge

        j = (judge or get_judge("exact")).judge(reference, candidate)
        return float(j.f1) if j.ok else float("nan")
    return float(_norm(reference) == _norm(candidate))


def answer_correct(kind: str, truth: str, answer: str) -> float:
    """The answer against the exact truth (F1 with the exact judge for descriptions)."""
    return answer_agreement(kind, truth, answer)


def object_token_hits(scene: "Scene", index: int, geometry) -> np.ndarray:
    """bool[N]: the image tokens whose box overlaps object ``index``'s exact mask (a peak on one is a hit)."""
    from vlmflow.localize.masks import MaskTokens

    return MaskTokens.build(scene.objects[index].mask, geometry).hits(0, "tokens")


def kind_configs(n_layers: int, forced: bool = False, window_fraction: float = 0.25) -> list:
    """The sweep of one kind: the baseline (attention recorded), the ``from-layer`` preset (KO image→generated,
    image→text and both, from layer l on; with ``forced`` also its first-token-forced twins) and the windows of
    visibility of ``window_fraction`` of the layers; a window that equals a from-layer knockout is kept once."""
    from vlmflow.presets import preset
    from vlmflow.sweep_scores import window_configs

    configs = preset("from-layer", n_layers, force_prefix=1 if forced else 0)
    seen = {c.spec_id for c in configs}
    for c in window_configs(n_layers, [window_fraction]):
        if c.spec_id not in seen:
            configs.append(c)
            seen.add(c.spec_id)
    return configs


def route_configs(n_layers: int) -> list:
    """The part of :func:`kind_configs` that names a route (``pathway``): the baseline and the three knockouts in
    every layer (from layer -1), free decoding; what the chapter measures on each of the other shipped toy models."""
    return [c for c in kind_configs(n_layers) if c.spec_id == "none"
            or (dict(c.labels).get("family") == "from-layer" and int(dict(c.labels).get("layer", 0)) == -1)]


PATHWAYS = ("text tokens", "generated tokens", "either route", "both routes", "no image needed")


def pathway(gen: CI, txt: CI, floor: CI, full: float = 1.0) -> str:
    """The route of a kind's answers, from how much of the unmasked answer survives KO image→generated (``gen``),
    KO image→text (``txt``) and both (``floor``) in every layer:

    - ``text tokens``: gen clearly above txt (the text positions carry the image: the paper's Finding 1 route);
    - ``generated tokens``: txt clearly above gen (the generated positions read the image directly);
    - ``either route``: neither clearly above the other, both clearly above the floor;
    - ``no image needed``: the floor itself keeps the answer (its interval reaches ``full``);
    - ``both routes``: otherwise (neither alone keeps more than no image at all)."""
    if floor.high >= full:
        return "no image needed"
    if gen.low > txt.high:
        return "text tokens"
    if txt.low > gen.high:
        return "generated tokens"
    if gen.low > floor.high and txt.low > floor.high:
        return "either route"
    return "both routes"


__all__ = ["KINDS", "PARAPHRASES", "PATHWAYS", "PHRASINGS", "KindQuestion", "QueryKindError", "answer_agreement",
           "answer_correct", "kind_configs", "kind_questions", "object_token_hits", "paraphrase", "pathway", "query_items"]
