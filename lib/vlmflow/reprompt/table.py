"""Table 1 over images and questions: the variants (rows of the table), the items (an image and its questions),
``evaluate`` (one describe run per image serves every compressed variant), ``score_table`` and ``stored_evaluate``
(the stored, resumable run through ``vlmflow.runner``)."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vlmflow.reprompt.context import (
    CONTEXTS,
    K_PERCENTS,
    LLM_NAME,
    READER_NAME,
    TURNS,
    RepromptError,
    answer,
    compress,
    describe,
    full_answer,
)
from vlmflow.reprompt.readers import DescriptionLLM, exact_reader_answer

if TYPE_CHECKING:
    import pandas as pd

    from vlmflow.model import VLM

# ---------------------------------------------------------------------------------------------------------------
# 5. evaluation over images and questions

@dataclass(frozen=True)
class Variant:
    """One row of Table 1: ``context`` in CONTEXTS, "full", LLM_NAME or READER_NAME; ``k`` in percent."""

    context: str
    k: float | None = None
    turn: str = "two"  # compressed contexts only: the question template (TURNS)

    @property
    def name(self) -> str:
        base = f"{self.context}@{self.k:g}%" if self.k is not None else self.context
        return f"{base}/single" if self.turn == "single" else base

    @staticmethod
    def parse(text: str) -> "Variant":
        """``"query+topk@5"`` -> Variant("query+topk", 5.0); ``"full"``, ``"query"``, ``"context"``...; a
        ``/single`` suffix selects the single-turn template (``"query+topk@5/single"``)."""
        text, _, turn = text.partition("/")
        turn = turn.strip() or "two"
        if turn not in TURNS:
            raise RepromptError(f"variant {text!r}: unknown turn {turn!r}; use /single or nothing")
        name, _, k = text.partition("@")
        name = name.strip()
        if turn == "single" and name not in CONTEXTS:
            raise RepromptError(f"variant {name!r}: only compressed contexts ({', '.join(CONTEXTS)}) take /single")
        if name not in (*CONTEXTS, "full", LLM_NAME, READER_NAME, "describe-reader"):
            raise RepromptError(f"unknown variant {text!r}; use full, context, query, topk@K, query+topk@K, "
                                f"{LLM_NAME} or describe-reader")
        if name == "describe-reader":
            name = READER_NAME
        if name in ("topk", "query+topk") and not k:
            raise RepromptError(f"variant {text!r} needs a K, e.g. {name}@5")
        return Variant(name, float(k.rstrip("%")) if k else None, turn)


def table1_variants(ks: Sequence[float] = K_PERCENTS, reader: bool = False, llm: bool = False,
                    turns: Sequence[str] = ("two",)) -> list[Variant]:
    """Table 1's rows: full image, then per turn the whole context, query only, query + top-K and top-K only."""
    out = [Variant("full")]
    for turn in turns:
        out += [Variant("context", turn=turn), Variant("query", turn=turn)]
        out += [Variant("query+topk", k, turn) for k in ks] + [Variant("topk", k, turn) for k in ks]
    if reader:
        out.append(Variant(READER_NAME))
    if llm:
        out.append(Variant(LLM_NAME))
    return out


@dataclass
class Item:
    """One image and its questions (dicts with question_id, question, truth, kind)."""

    image_id: Any
    image: Any
    questions: list[dict]


TOY_KINDS = ("exists", "count", "color")  # the toy question kinds Table 1 asks by default


def toy_items(sample, n_images: int | None = None, kinds: Sequence[str] = TOY_KINDS) -> list[Item]:
    """Items from a toy scenes folder (``vlmflow toy scenes``: questions stored in instances.json)."""
    qs = sample.coco.dataset.get("questions")
    if not qs:
        raise RepromptError(f"{sample.root}: no 'questions' in instances.json (write scenes with questions=True)")
    ids = sample.image_ids[:n_images] if n_images else sample.image_ids
    by_image: dict[Any, list[dict]] = {i: [] for i in ids}
    for q in qs:
        if q["image_id"] in by_image and q["kind"] in kinds:
            by_image[q["image_id"]].append({"question_id": q["id"], "question": q["question"], "truth": q["answer"],
                                            "kind": q["kind"]})
    return [Item(i, sample.image(i), by_image[i]) for i in ids]


CLIP_KINDS = ("appear", "disappear", "move", "recolor", "count_at_end")


def clip_items(data, kinds: Sequence[str] = CLIP_KINDS) -> list[Item]:
    """Items from resolved clip data (``vlmflow.data.resolve("toy-clips-test", n, seed)``): each clip a ``Video``
    with its questions of ``kinds`` (``toy.clips.clip_questions``: what appeared / disappeared / moved / changed
    colour, how many objects at the end)."""
    from vlmflow.toy.clips import clip_questions

    items = []
    for i, im in enumerate(data.images):
        qs = [q for q in clip_questions(data.truth(i)) if q["kind"] in kinds]
        items.append(Item(im.key, im.load(), [{"question_id": f"{im.key}/{q['kind']}", "question": q["question"],
                                               "truth": q["answer"], "kind": q["kind"]} for q in qs]))
    return items


def pope_items(sample, n_images: int | None = None, sampling: str = "adversarial", n_per_image: int = 2,
               seed: int = 0) -> list[Item]:
    """POPE-style yes/no items built from a COCO folder's annotations (``vlmflow.data.build_pope``)."""
    from vlmflow.data import build_pope

    records = build_pope(sample, n_per_image=n_per_image, sampling=sampling, seed=seed)
    ids = sorted({r.image_id for r in records})
    ids = ids[:n_images] if n_images else ids
    by_image: dict[Any, list[dict]] = {i: [] for i in ids}
    for r in records:
        if r.image_id in by_image:
            by_image[r.image_id].append({"question_id": r.question_id, "question": r.question, "truth": r.label,
                                         "kind": "exists"})
    return [Item(i, sample.image(i), by_image[i]) for i in ids]


def evaluate(vlm: "VLM", items: Sequence[Item], variants: Sequence[Variant | str], *, select: str = "attention",
             describe_question: str = "describe the image", describe_tokens: int = 64, max_new_tokens: int = 8,
             template: str | None = None, band: Sequence[int] | None = None, seed: int = 0,
             llm: DescriptionLLM | None = None, describe_knockout=None, progress: bool = True) -> "pd.DataFrame":
    """One row per (image, question, variant): answer, truth, context_tokens (tidy; score with :func:`score_table`).
    One describe run per image serves every compressed variant; ``describe_knockout`` is passed to :func:`describe`
    (e.g. ``Knockout("image", "text")`` for contexts that carry no image information)."""
    import pandas as pd
    from tqdm.auto import tqdm

    from vlmflow.progress import bar_disabled

    variants = [v if isinstance(v, Variant) else Variant.parse(v) for v in variants]
    if any(v.context == LLM_NAME for v in variants) and llm is None:
        raise RepromptError(f"variant {LLM_NAME} needs llm=DescriptionLLM(...)")
    rows = []
    for item in tqdm(items, desc="reprompt", disable=bar_disabled(progress)):
        run = describe(vlm, item.image, describe_question, describe_tokens,
                       hidden_norms=select == "norm", knockout=describe_knockout)
        description = run.generation.text
        contexts = {v: compress(run, v.context, v.k or 0, select, band=band, seed=seed, turn=v.turn)
                    for v in variants if v.context in CONTEXTS}
        for q in item.questions:
            for v in variants:
                if v.context == "full":
                    a = full_answer(vlm, item.image, q["question"], max_new_tokens)
                    text, n = a.text, a.context_tokens
                elif v.context == READER_NAME:
                    text, n = exact_reader_answer(description, q["question"]), len(run.generation.token_ids)
                elif v.context == LLM_NAME:
                    text, n = llm(description, q["question"]), len(run.generation.token_ids)
                else:
                    a = answer(contexts[v], q["question"], template=template, max_new_tokens=max_new_tokens)
                    text, n = a.text, a.context_tokens
                rows.append({"image_id": item.image_id, "question_id": q["question_id"], "kind": q["kind"],
                             "question": q["question"], "truth": q["truth"], "variant": v.name,
                             "context": v.context, "k": v.k,
                             "turn": v.turn if v.context in CONTEXTS else None,
                             "select": select if v.context in ("topk", "query+topk")
                             else None, "answer": text, "context_tokens": n, "image_tokens": run.n_image,
                             "description": description})
    return pd.DataFrame(rows)


def _first_answer_word(text: str | None) -> str | None:
    if text is None:
        return None
    m = re.match(r"\s*([\w-]+)", text)
    return m.group(1) if m else text


def score_table(answers: "pd.DataFrame", n_resamples: int = 1000, seed: int = 0,
                first_word: bool = True) -> "pd.DataFrame":
    """Per variant and question kind: ACC (+ image-clustered bootstrap CI), ACC+, the answer distribution and
    accuracy by true answer (``vlmflow.scoring``), mean context tokens. Yes/no kinds use the MME parsing rule
    (``rule="mme"``: exact yes/no, else the first 4 characters) with ACC+ paired by image id; the others exact match after normalisation, on the answer's first word when ``first_word``
    (one-word truths such as counts and colours: a model that keeps talking after the right word, as the toy model
    does in a second user turn, is not scored wrong for it)."""
    import pandas as pd

    from vlmflow.scoring import score_exact, score_yes_no
    from vlmflow.stats import bootstrap_ci

    out = []
    for (variant, kind), g in answers.groupby(["variant", "kind"], sort=False):
        # a reader that cannot answer (None / NaN) counts as a missing answer: wrong
        records = [{"question_id": r.question_id, "image_id": r.image_id, "truth": r.truth,
                    "answer": r.answer if isinstance(r.answer, str) else None} for r in g.itertuples()]
        yes_no = set(g["truth"].str.lower()) <= {"yes", "no"}
        if not yes_no and first_word:
            for r in records:
                r["answer"] = _first_answer_word(r["answer"])
        # yes/no: MME's parsing rule; ACC+ pairs by image (toy and POPE-style items are not MME's line pairs)
        s = score_yes_no(records, rule="mme", pairing="image") if yes_no else score_exact(records)
        ci = bootstrap_ci(s.frame().assign(correct=lambda f: f["correct"].astype(float)), value="correct",
                          n_resamples=n_resamples, seed=seed)
        first = g.iloc[0]
        row = {"variant": variant, "kind": kind, "context": first.get("context"), "k": first.get("k"),
               "turn": first.get("turn"), "acc": s.acc, "acc_low": ci.low, "acc_high": ci.high,
               "acc_plus": s.acc_plus, "n_questions": s.n_questions, "n_images": s.n_images,
               "context_tokens": float(g["context_tokens"].mean())}
        if yes_no:
            dist = s.distribution
            row.update({"share_yes": dist.get("yes", 0.0), "share_no": dist.get("no", 0.0),
                        "share_unparseable": dist.get("unparseable", 0.0) + dist.get("missing", 0.0),
                        "acc_true_yes": s.acc_by_truth.get("yes", float("nan")),
                        "acc_true_no": s.acc_by_truth.get("no", float("nan"))})
        else:
            top = max(s.distribution.items(), key=lambda kv: kv[1])
            row.update({"most_common_answer": top[0], "share_most_common": top[1]})
        out.append(row)
    return pd.DataFrame(out)



def stored_evaluate(folder, variants: Sequence[Variant | str], *, model: str = "toy", device: str = "cpu",
                    dtype: str | None = None, data: str = "toy-test", n_images: int = 20, seed: int = 0,
                    kinds: Sequence[str] | None = None, select: str = "attention",
                    describe_tokens: int = 64, max_new_tokens: int = 8, progress: bool = True) -> "pd.DataFrame":
    """:func:`evaluate` through the one experiment path (``vlmflow.runner.Experiment``, kind ``reprompt``): one part
    per (image, variant), so a rerun computes only the missing pairs and does not load the model when none is
    missing. Toy scenes (``data="toy-test"``, written once by ``vlmflow.localize.load_sample``) carry their questions;
    a COCO folder gets POPE-style existence questions; toy clips (``data="toy-clips-test"``) are described with
    "describe the video" and asked their clip questions of ``kinds`` (default :data:`CLIP_KINDS`), every context
    cut from the clip's video tokens (top K% ranked across frames). ``df.attrs``: ``store``, ``computed``."""
    import json

    import pandas as pd

    from vlmflow.data.resolver import CLIP_SPLITS, TOY_SPLITS, resolve
    from vlmflow.localize import dataset_kind
    from vlmflow.runner import Experiment, dtype_key, progress_bar
    from vlmflow.store import provenance

    variants = [v if isinstance(v, Variant) else Variant.parse(v) for v in variants]
    if any(v.context == LLM_NAME for v in variants):
        raise RepromptError(f"stored_evaluate does not run {LLM_NAME}; call evaluate(..., llm=...)")
    resolved = resolve(data, n_images, seed)  # data_id: a user's folder by content (vlmflow.data.resolver)
    describe_question, extra = "describe the image", {}
    if data in CLIP_SPLITS:
        from vlmflow.toy.clips import DESCRIBE_VIDEO_PROMPT

        kinds = CLIP_KINDS if kinds is None else kinds
        items, describe_question = clip_items(resolved, kinds), DESCRIBE_VIDEO_PROMPT
        scenes, kinds_key, extra = None, list(kinds), {"describe_question": describe_question}
    else:
        sample = resolved.coco(folder)
        toy = dataset_kind(sample) == "toy"
        kinds = TOY_KINDS if kinds is None else kinds
        items = toy_items(sample, n_images, kinds) if toy else pope_items(sample, n_images, seed=seed)
        scenes = sample.root.name if data in TOY_SPLITS else None  # the scene settings (load_sample)
        kinds_key = list(kinds) if toy else ["pope-adversarial"]
    settings = provenance(model, resolved.data_id, seed=seed, scenes=scenes, kinds=kinds_key, select=select,
                          describe_tokens=int(describe_tokens), max_new_tokens=int(max_new_tokens), device=device,
                          dtype=dtype_key(dtype), **extra)
    exp = Experiment(folder, settings, kind="reprompt", model=model, device=device, dtype=dtype)
    todo = exp.missing((item, str(item.image_id), [v.name for v in variants]) for item in items)
    by_name = {v.name: v for v in variants}
    for item, names in progress_bar(todo, "reprompt", progress):
        rows = evaluate(exp.vlm, [item], [by_name[n] for n in names], select=select, describe_tokens=describe_tokens,
                        describe_question=describe_question, max_new_tokens=max_new_tokens, seed=seed, progress=False)
        key = str(item.image_id)
        exp.store.write_part(key, [{"image": key, "spec_id": name, "rows": g.to_json(orient="records")}
                                   for name, g in rows.groupby("variant", sort=False)])
    stored = exp.rows([str(i.image_id) for i in items], by_name)
    out = pd.concat([pd.DataFrame(json.loads(text)) for text in stored.rows], ignore_index=True)
    out.attrs.update(store=str(exp.folder), computed=sum(len(names) for _, names in todo))
    return out

