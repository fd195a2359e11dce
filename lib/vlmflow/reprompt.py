"""Image Re-prompting (Table 1): answer new questions from a compressed context instead of the full image.

Data flow. :func:`describe` runs the describe prompt once (``VLM.prepare`` + ``VLM.generate_batch`` with a
``Record`` of every row that predicts an output token) and ``VLM.prefill``, which keeps the prompt's KV cache (keys
already rotated at their ORIGINAL positions) and, optionally, the hidden-state norms of the image tokens. :func:`rank_image_tokens` orders the image tokens per layer; :func:`compress` keeps, per layer, the KV of
chosen positions; :func:`answer` appends the question after that cache and decodes greedily.

Selection rules (``select=``):
  ``"attention"``  per layer, the mean (head-averaged) attention each image token received from the rows that
                   predicted the description's tokens, in that same layer (the official code: each layer its own set);
  ``"band"``       the same attention averaged over a middle band of layers (default :func:`middle_band`: layers
                   [L/4, L/2), the paper's 20-40 of 80), one set used in every layer (the paper's wording);
  ``"norm"``       per layer, the L2 norm of the image token's hidden state at that layer's input;
  ``"random"``     a seeded random order, drawn independently per layer.
K% of N image tokens keeps ``ceil(K/100 * N)`` tokens (K = 1% of 64 toy tokens keeps 1; K = 0 keeps none).

Contexts (the per-layer cache, always in original order):
  ``"context"``     every prompt position: the describe prompt's full KV (= K 100% with all text);
  ``"query"``       the text positions only (the paper's T_txt: every non-image prompt position, K = 0);
  ``"topk"``        the top-K image tokens only, no text;
  ``"query+topk"``  text positions + the layer's top-K image tokens.
Positions: kept keys carry their original rotation; the question tokens get position ids continuing from the full
prompt (``Prefill.next_position``: ``P, P+1, ...``, or ``P + delta`` on every axis for multi-axis rotary positions, as
the model's own decoding does; shaped by ``Adapter.text_position_ids``), never from the shorter cache length. The causal/padding mask is built for ``len(cache) + new`` keys, all visible.

Templates (``turn=`` of :func:`compress`; decided here, documented for the book):
  ``"two"`` (default, the official code's): the question is a new user turn appended after the describe prompt's
        context (which appended the describe question and the assistant tag): the adapter's ``followup_turn``
        (e.g. ``" USER: {question} ASSISTANT:"``, or a new user turn after an empty assistant reply for chat-ML
        templates). ``template=`` overrides it. A model trained on single-turn prompts only (the toy model) has
        never seen this.
  ``"single"``: the question continues the SAME user turn as the image. The context keeps only the prompt positions
        BEFORE the describe run's own words (BOS, system prompt, user tag, image markers: the template text that
        every single-turn prompt shares) plus the layer's top-K image tokens, and the question's tokens are exactly
        the tail of the ordinary single-turn prompt for that question from its first ``query`` position on (taken
        from the processor's own output, e.g. ``"\\n{question} ASSISTANT:"``), with position ids continuing
        from where that tail starts in the plain prompt (``query_start``, + the prompt's position delta). So K = 100% is
        the plain single-turn prompt (same logits) and a partial K is that prompt with the other image tokens
        hidden from the question's rows in that layer. The describe run's words ("describe the image") and
        assistant tag, and the description, never enter this context: only the image tokens' KV (computed with the
        whole image in the describe prefill) and the choice of which to keep come from the describe run.
        ``"query"`` (K = 0) is then the template text alone, without any image token.
Answers are greedy, up to ``max_new_tokens`` (8).

Baselines (:func:`evaluate`): ``"full"`` = the ordinary single-turn prompt with the whole image and the question
(Table 1's "full image"); ``"describe-llm"`` = a text LLM answers from the description through the LLM judge's
OpenAI-compatible client (:class:`DescriptionLLM`); on the toy world :func:`exact_reader_answer` reads the
description with the toy grammar and answers the toy questions exactly: it is named ``"describe-reader
(upper bound)"`` because it is the best any reader of that description could do. ``context_tokens`` per variant =
the number of cached positions at answer time (the question's own tokens excluded), as in Table 1.
Scores go through ``vlmflow.scoring`` (ACC, ACC+, answer distribution, accuracy by true answer) with bootstrap CIs
(``vlmflow.stats``) in :func:`score_table`.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vlmflow import selection
from vlmflow.errors import VlmflowError

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from vlmflow.model import VLM, Batch, Generation

CONTEXTS = ("context", "query", "topk", "query+topk")
TURNS = ("two", "single")  # question template: a second user turn (official) or the same user turn (see above)
SELECTIONS = selection.SELECTIONS
K_PERCENTS = (1, 2, 5, 10, 20)
READER_NAME = "describe-reader (upper bound)"
LLM_NAME = "describe-llm"


class RepromptError(VlmflowError):
    pass


def middle_band(n_layers: int) -> range:
    """Layers [L/4, L/2): 20-39 of 80 (the paper's window for its 80-layer model), 8-15 of 32, 2-3 of 8."""
    return selection.middle_band(n_layers)


def n_keep(k_percent: float, n_image: int) -> int:
    try:
        return selection.n_keep(k_percent, n_image)
    except selection.SelectionError as e:
        raise RepromptError(str(e)) from None


# ---------------------------------------------------------------------------------------------------------------
# 1. the describe run

@dataclass
class DescribeRun:
    """One describe-the-image run of one image: what every compressed context is cut from.

    keys / values: per decoder layer, Tensor[1, Hkv, P, D] of the prompt prefill (rotary positions applied); image_positions:
    LongTensor[N]; text_positions: LongTensor[T] (every non-image prompt position); hidden_norms: Tensor[L, N] or
    None; next_position: the position id the first token after the prompt gets (``Prefill.next_position``)."""

    vlm: "VLM"
    batch: "Batch"
    generation: "Generation"
    keys: list
    values: list
    image_positions: "torch.Tensor"
    text_positions: "torch.Tensor"
    hidden_norms: "torch.Tensor | None"
    next_position: int
    image: Any = None  # the described image (the single-turn template lays out its plain prompt through the processor)

    @property
    def query_start(self) -> int:
        """The first position of the user's own words (``query`` role) in the describe prompt: where a single-turn
        question takes over."""
        pos = self.batch.roles.positions("query", 0)
        if not len(pos):
            raise RepromptError("the describe prompt has no 'query' position: no single-turn split point")
        return int(pos[0])

    @property
    def prompt_length(self) -> int:
        return self.batch.prompt_length

    @property
    def n_image(self) -> int:
        return len(self.image_positions)

    @property
    def num_layers(self) -> int:
        return len(self.keys)


def describe(vlm: "VLM", image, question: str = "describe the image", max_new_tokens: int = 64,
             hidden_norms: bool = True, knockout=None) -> DescribeRun:
    """Describe one image with attention recorded, and keep the prompt's KV cache (see the module docstring).

    knockout: applied to the description and to the prefill whose cache is kept, e.g. ``Knockout("image", "text")``
    gives text positions that never saw the image (a context with no image information at all when K = 0)."""
    from vlmflow.record import Record

    if getattr(vlm, "planted", ()):
        # answer() continues a per-layer compressed cache outside the attention state, where a plant cannot apply
        raise RepromptError(f"model {vlm.name} carries planted knockouts ({' & '.join(k.spec_id for k in vlm.planted)})"
                            f": re-prompting cannot apply them to the answer turn, so its answers would come from the "
                            f"bare weights; load it with plant=False to re-prompt the bare weights deliberately")
    batch = vlm.prepare(image, question)
    if len(batch) != 1:
        raise RepromptError("describe() takes one image")
    gen = vlm.generate_batch(batch, knockout=knockout, record=Record(rows=("last_prompt", "generated")),
                             max_new_tokens=max_new_tokens)[0]
    pre = vlm.prefill(batch, knockout=knockout, hidden_norms=hidden_norms)
    keys = [layer.keys for layer in pre.cache.layers]
    values = [layer.values for layer in pre.cache.layers]
    image_pos = batch.roles.positions("image", 0).cpu()
    text_pos = batch.roles.positions("text", 0).cpu()
    return DescribeRun(vlm, batch, gen, keys, values, image_pos, text_pos, pre.image_norms, pre.next_position, image)


# ---------------------------------------------------------------------------------------------------------------
# 2. ranking and compression

def rank_image_tokens(run: DescribeRun, select: str = "attention", *, band: Sequence[int] | None = None,
                      seed: int = 0) -> "torch.Tensor":
    """LongTensor[L, N]: per decoder layer, image-token indices (into the image span) from most to least chosen.

    The ranking itself is ``vlmflow.selection.rank_image_tokens``, shared with the sweep's ``topk`` preset."""
    L = run.num_layers
    attention = None
    if select in ("attention", "band"):
        rec = run.generation.record
        if rec is None or not len(rec.row_positions):
            raise RepromptError("the describe run recorded no attention rows (no token generated?)")
        if tuple(rec.layers) != tuple(range(L)):
            raise RepromptError(f"the describe record covers layers {rec.layers}, not all {L}")
        attention = rec.image_map.float().mean(0)  # [L, N]: mean over the rows that predicted the tokens
    elif select == "norm" and run.hidden_norms is None:
        raise RepromptError("select='norm' needs describe(..., hidden_norms=True)")
    try:
        return selection.rank_image_tokens(select, L, run.n_image, attention=attention, norms=run.hidden_norms,
                                           band=band, seed=seed)
    except selection.SelectionError as e:
        raise RepromptError(str(e)) from None


@dataclass
class Context:
    """A compressed context: ``kept`` LongTensor[L, C] prompt positions kept in each layer (ascending)."""

    run: DescribeRun
    kept: "torch.Tensor"
    name: str
    k_percent: float | None
    select: str | None
    turn: str = "two"  # see TURNS: which question template answer() appends

    @property
    def n_tokens(self) -> int:
        return int(self.kept.shape[1])

    def cache(self):
        """A fresh DynamicCache holding the kept keys/values (answering appends to it, so build one per question)."""
        from transformers import DynamicCache

        data = []
        for layer, (k, v) in enumerate(zip(self.run.keys, self.run.values)):
            idx = self.kept[layer].to(k.device)
            data.append((k.index_select(2, idx), v.index_select(2, idx)))
        return DynamicCache(ddp_cache_data=data)


def compress(run: DescribeRun, context: str = "query+topk", k_percent: float = 5.0, select: str = "attention", *,
             band: Sequence[int] | None = None, seed: int = 0, turn: str = "two") -> Context:
    """The per-layer kept positions for one of :data:`CONTEXTS` (see the module docstring). ``turn="single"`` keeps
    only the text positions before the describe prompt's own words (see the module docstring: Templates)."""
    import torch

    if context not in CONTEXTS:
        raise RepromptError(f"unknown context {context!r}; use one of {', '.join(CONTEXTS)}")
    if turn not in TURNS:
        raise RepromptError(f"unknown turn {turn!r}; use one of {', '.join(TURNS)}")
    L, N = run.num_layers, run.n_image
    if context == "context":
        k, sel = N, None
    elif context == "query":
        k, sel = 0, None
    else:
        k, sel = n_keep(k_percent, N), select
    text = run.text_positions if context != "topk" else torch.zeros(0, dtype=torch.long)
    if turn == "single":  # the single-turn prompt shares only what precedes the user's words
        text = text[text < run.query_start]
    if k == N:
        chosen = run.image_positions.expand(L, N)
    elif k == 0:
        chosen = torch.zeros(L, 0, dtype=torch.long)
    else:
        ranks = rank_image_tokens(run, sel, band=band, seed=seed)[:, :k]
        chosen = run.image_positions[ranks]
    kept = torch.sort(torch.cat([text.expand(L, len(text)), chosen], dim=1), dim=1).values
    if kept.shape[1] == 0:
        raise RepromptError(f"context {context!r} with K={k_percent}% keeps no position")
    return Context(run, kept, context, None if context in ("context", "query") else float(k_percent), sel, turn)


# ---------------------------------------------------------------------------------------------------------------
# 3. answering

@dataclass
class Answer:
    text: str
    token_ids: list[int]
    context_tokens: int
    first_logits: "torch.Tensor | None" = None  # [vocab] logits of the first answer token
    step_logits: "torch.Tensor | None" = None  # [n_question_tokens, vocab] logits over the appended question


def template_for(vlm: "VLM") -> str:
    """The two-turn question template (``{question}`` placeholder): the adapter's ``followup_turn``."""
    try:
        return vlm.adapter.followup_turn("{question}")
    except NotImplementedError:
        raise RepromptError(f"adapter {vlm.adapter.name!r} defines no follow-up turn; pass template=") from None


def question_ids(vlm: "VLM", question: str, template: str | None = None) -> list[int]:
    from vlmflow.model import check_question

    check_question(question)
    text = (template or template_for(vlm)).format(question=question)
    ids = vlm.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise RepromptError(f"the question template gave no tokens for {question!r}")
    return list(ids)


def single_turn_ids(run: DescribeRun, question: str) -> tuple[list[int], int]:
    """(token ids, first position id) of the single-turn continuation: the ordinary single-turn prompt for
    ``question`` (the model's processor, same image) from its first ``query`` position on, and the position id that
    tail has in that prompt. Raises when the plain prompt does not share the describe prompt's positions before the
    query (then the cached KV would not be that prompt's)."""
    if run.image is None:
        raise RepromptError("turn='single' needs the described image (DescribeRun.image); use describe()")
    plain = run.vlm.prepare(run.image, question)
    start = run.query_start
    q = plain.roles.positions("query", 0)
    ids = plain.inputs["input_ids"][0].tolist()
    if not len(q) or int(q[0]) != start or ids[:start] != run.batch.inputs["input_ids"][0, :start].tolist():
        raise RepromptError(f"the single-turn prompt of {question!r} does not share the describe prompt's first "
                            f"{start} positions; turn='single' needs an identical prefix up to the user's words")
    return ids[start:], run.next_position - run.prompt_length + start


def answer(ctx: Context, question: str, *, template: str | None = None, max_new_tokens: int = 8) -> Answer:
    """Append the question after the compressed context and decode greedily (see the module docstring; the template
    follows ``ctx.turn``; ``template=`` overrides the two-turn one only)."""
    import torch

    run, vlm = ctx.run, ctx.run.vlm
    device = vlm.device
    if ctx.turn == "single":
        if template is not None:
            raise RepromptError("template= applies to turn='two'; the single-turn tail comes from the processor")
        ids, pos = single_turn_ids(run, question)
    else:
        ids, pos = question_ids(vlm, question, template), run.next_position
    cache = ctx.cache()
    eos_ids = vlm.eos_ids
    n_ctx = ctx.n_tokens
    feed = torch.tensor([ids], device=device)
    out_ids: list[int] = []
    first = steps = None
    with torch.no_grad():
        for step in range(max_new_tokens):
            n = feed.shape[1]
            position_ids = vlm.adapter.text_position_ids(pos, n, device=device)
            mask = torch.ones(1, cache.get_seq_length() + n, dtype=torch.long, device=device)
            logits = vlm.model(input_ids=feed, attention_mask=mask, position_ids=position_ids, cache=cache,
                               use_cache=True).logits[0].float()
            if step == 0:
                steps, first = logits.cpu(), logits[-1].cpu()
            pos += n
            token = int(logits[-1].argmax())
            if token in eos_ids:
                break
            out_ids.append(token)
            feed = torch.tensor([[token]], device=device)
    text = vlm.tokenizer.decode(out_ids, skip_special_tokens=True).strip()
    return Answer(text, out_ids, n_ctx, first, steps)


def full_answer(vlm: "VLM", image, question: str, max_new_tokens: int = 8) -> Answer:
    """The "full image" baseline: the ordinary single-turn prompt with the whole image and the question."""
    gen = vlm.generate(image, question, max_new_tokens=max_new_tokens, return_logits=True)
    first = gen.logits[0].float().cpu() if gen.logits is not None and len(gen.logits) else None
    return Answer(gen.text, gen.token_ids, gen.prompt_length, first)


# ---------------------------------------------------------------------------------------------------------------
# 4. describe-to-LLM baselines

_NUM = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen")


def exact_reader_answer(description: str, question: str) -> str | None:
    """Answer a toy question from a description alone, exactly (``grammar.parse``): existence, counts, colour.
    None when the description cannot answer it (positions are not in descriptions) or the question is unknown."""
    from vlmflow.toy.grammar import parse
    from vlmflow.toy.questions import plural
    from vlmflow.toy.scenes import SHAPES

    objs = parse(description)
    q = " ".join(question.lower().split())
    m = re.fullmatch(r"is there an? (\w+) (\w+) \?", q)
    if m:
        color, shape = m.groups()
        return "yes" if any(o.color == color and o.shape == shape for o in objs) else "no"
    if q == "how many objects ?":
        return _NUM[min(len(objs), len(_NUM) - 1)]
    m = re.fullmatch(r"how many (\w+) \?", q)
    if m:
        shape = next((s for s in SHAPES if plural(s) == m.group(1)), None)
        if shape is not None:
            return _NUM[min(sum(o.shape == shape for o in objs), len(_NUM) - 1)]
    m = re.fullmatch(r"what color is the (\w+) \?", q)
    if m:
        return next((o.color for o in objs if o.shape == m.group(1) and o.color), None)
    return None


class DescriptionLLM:
    """A text LLM answering from the description, through the LLM judge's OpenAI-compatible client (any endpoint:
    OpenAI, vLLM, Ollama; ``base_url`` / $OPENAI_BASE_URL, key in $OPENAI_API_KEY). Temperature 0."""

    PROMPT = ("Here is a description of an image:\n{description}\n\nAnswer the question about the image using only "
              "the description. Reply with a single word or number.\nQuestion: {question}")

    def __init__(self, model: str = "gpt-4o-2024-08-06", base_url: str | None = None):
        from vlmflow.judge.llm import LLMJudge

        self._judge = LLMJudge(model=model, base_url=base_url, cache_dir=False)
        self.model = model

    def __call__(self, description: str, question: str) -> str:
        client = self._judge.client  # a property of the judge: built on first use, key checked there
        resp = client.chat.completions.create(model=self.model, temperature=0, max_tokens=8, messages=[
            {"role": "user", "content": self.PROMPT.format(description=description, question=question)}])
        return (resp.choices[0].message.content or "").strip()


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


def toy_items(sample, n_images: int | None = None, kinds: Sequence[str] = ("exists", "count", "color")) -> list[Item]:
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


__all__ = ["Answer", "CONTEXTS", "Context", "DescribeRun", "DescriptionLLM", "Item", "K_PERCENTS", "LLM_NAME",
           "READER_NAME", "RepromptError", "SELECTIONS", "TURNS", "Variant", "answer", "compress", "describe",
           "evaluate", "exact_reader_answer", "full_answer", "middle_band", "n_keep", "pope_items", "question_ids",
           "rank_image_tokens", "single_turn_ids", "stored_evaluate", "score_table", "table1_variants", "template_for", "toy_items"]


def stored_evaluate(folder, variants: Sequence[Variant | str], *, model: str = "toy", device: str = "cpu",
                    dtype: str | None = None, data: str = "toy-test", n_images: int = 20, seed: int = 0,
                    kinds: Sequence[str] = ("exists", "count", "color"), select: str = "attention",
                    describe_tokens: int = 64, max_new_tokens: int = 8, progress: bool = True) -> "pd.DataFrame":
    """:func:`evaluate` through a result store (``vlmflow.store``) under ``folder/reprompt-<settings hash>``: one part
    per (image, variant), so a rerun computes only the missing pairs and does not load the model when none is
    missing. Toy scenes (``data="toy-test"``, written once by ``vlmflow.localize.load_sample``) carry their questions;
    a COCO folder gets POPE-style existence questions. ``df.attrs``: ``store``, ``computed``."""
    import json
    from pathlib import Path

    import pandas as pd

    from vlmflow.data.resolver import TOY_SPLITS, resolve
    from vlmflow.localize import dataset_kind
    from vlmflow.store import ResultStore, load_results, provenance, settings_hash

    variants = [v if isinstance(v, Variant) else Variant.parse(v) for v in variants]
    if any(v.context == LLM_NAME for v in variants):
        raise RepromptError(f"stored_evaluate does not run {LLM_NAME}; call evaluate(..., llm=...)")
    resolved = resolve(data, n_images, seed)  # data_id: a user's folder by content (vlmflow.data.resolver)
    sample = resolved.coco(folder)
    toy = dataset_kind(sample) == "toy"
    items = toy_items(sample, n_images, kinds) if toy else pope_items(sample, n_images, seed=seed)
    settings = provenance(model, resolved.data_id, seed=seed,
                          scenes=sample.root.name if data in TOY_SPLITS else None,  # the scene settings (load_sample)
                          kinds=list(kinds) if toy else ["pope-adversarial"], select=select,
                          describe_tokens=int(describe_tokens), max_new_tokens=int(max_new_tokens), device=device,
                          dtype=str(dtype))
    path = Path(folder) / f"reprompt-{settings_hash(settings)}"
    store = ResultStore(path, settings, provenance={"model": model})
    done = store.done()
    todo = [(item, [v for v in variants if (str(item.image_id), v.name) not in done]) for item in items]
    todo = [(item, vs) for item, vs in todo if vs]
    if todo:
        from tqdm.auto import tqdm

        from vlmflow.model import load
        from vlmflow.progress import bar_disabled

        vlm = load(model, device=device, dtype=dtype)
        for item, vs in tqdm(todo, desc="reprompt", disable=bar_disabled(progress)):
            rows = evaluate(vlm, [item], vs, select=select, describe_tokens=describe_tokens,
                            max_new_tokens=max_new_tokens, seed=seed, progress=False)
            key = str(item.image_id)
            store.write_part(key, [{"image": key, "spec_id": name, "rows": g.to_json(orient="records")}
                                   for name, g in rows.groupby("variant", sort=False)])
    stored = load_results(path)
    names = {v.name for v in variants}
    stored = stored[stored.image.isin({str(i.image_id) for i in items}) & stored.spec_id.isin(names)]
    out = pd.concat([pd.DataFrame(json.loads(text)) for text in stored.rows], ignore_index=True)
    out.attrs.update(store=str(path), computed=sum(len(vs) for _, vs in todo))
    return out
