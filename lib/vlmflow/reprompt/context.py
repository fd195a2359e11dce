"""Image re-prompting, the mechanics (``vlmflow.reprompt`` has the whole story): the describe run, ranking and
compressing its KV cache per layer, and answering a question after a compressed context."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vlmflow import selection
from vlmflow.errors import VlmflowError

if TYPE_CHECKING:
    import torch

    from vlmflow.model import VLM, Batch, Generation

CONTEXTS = ("context", "query", "topk", "query+topk")
TURNS = ("two", "single")  # question template: a second user turn (official) or the same user turn (vlmflow.reprompt)
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
    token_logits: "torch.Tensor | None" = None  # [steps, vocab] logits of every decoding step (row 0 = first_logits)


def template_for(vlm: "VLM") -> str:
    """The two-turn question template (``{question}`` placeholder): the adapter's ``followup_turn``."""
    try:
        return vlm.adapter.followup_turn("{question}")
    except NotImplementedError:
        raise RepromptError(f"adapter {vlm.adapter.name!r} defines no follow-up turn; pass template=") from None


def question_ids(vlm: "VLM", question: str, template: str | None = None) -> list[int]:
    """The two-turn question's token ids (:func:`question_tokens` without the roles)."""
    return question_tokens(vlm, question, template)[0]


def question_tokens(vlm: "VLM", question: str, template: str | None = None) -> tuple[list[int], list[int]]:
    """(token ids, role ids) of the two-turn question: the template's text before ``{question}`` is ``user``, the
    question ``query``, the text after it ``assistant`` (the roles the adapters give a first turn's template and
    words; see the module docstring: Roles in the answer turn)."""
    from vlmflow.model import check_question
    from vlmflow.roles import segment_token_roles

    check_question(question)
    template = template or template_for(vlm)
    parts = template.split("{question}")
    if len(parts) != 2:
        raise RepromptError(f"the question template {template!r} must hold '{{question}}' exactly once")
    segments = [("user", parts[0]), ("query", question), ("assistant", parts[1])]
    ids, roles = segment_token_roles(vlm.tokenizer, segments, add_special_tokens=False)
    if not ids:
        raise RepromptError(f"the question template gave no tokens for {question!r}")
    return list(ids), list(roles)


def single_turn_ids(run: DescribeRun, question: str) -> tuple[list[int], int]:
    """(token ids, first position id) of the single-turn continuation: the ordinary single-turn prompt for
    ``question`` (the model's processor, same image) from its first ``query`` position on, and the position id that
    tail has in that prompt. Raises when the plain prompt does not share the describe prompt's positions before the
    query (then the cached KV would not be that prompt's)."""
    ids, pos, _ = _single_turn(run, question)
    return ids, pos


def _single_turn(run: DescribeRun, question: str) -> tuple[list[int], int, list[int]]:
    """``single_turn_ids`` and the plain prompt's roles of that tail."""
    if run.image is None:
        raise RepromptError("turn='single' needs the described image (DescribeRun.image); use describe()")
    plain = run.vlm.prepare(run.image, question)
    start = run.query_start
    q = plain.roles.positions("query", 0)
    ids = plain.inputs["input_ids"][0].tolist()
    if not len(q) or int(q[0]) != start or ids[:start] != run.batch.inputs["input_ids"][0, :start].tolist():
        raise RepromptError(f"the single-turn prompt of {question!r} does not share the describe prompt's first "
                            f"{start} positions; turn='single' needs an identical prefix up to the user's words")
    return ids[start:], run.next_position - run.prompt_length + start, plain.roles.ids[0, start:].tolist()


def answer_roles(ctx: Context, question_roles: Sequence[int]):
    """(the rows' TokenRoles, one TokenRoles per decoder layer) of the answer turn's keys: layer l's kept positions
    with their describe-prompt roles (and frames), then the question's roles; positions past them are
    ``generated``. The rows' roles are layer 0's (the question rows and the generated tail are the same in every
    layer); ``VLM.active(..., layer_roles=)`` resolves the plant per layer against the layers' own roles."""
    import torch

    from vlmflow.roles import TokenRoles

    prompt = ctx.run.batch.roles
    kept = ctx.kept.cpu()
    q = torch.tensor(list(question_roles), dtype=torch.long)
    n = ctx.n_tokens + len(q)
    ids = torch.cat([prompt.ids[0].cpu()[kept], q.expand(len(kept), len(q))], 1)  # [L, C + n_q]
    frames = None
    if prompt.frames is not None:
        frames = torch.cat([prompt.frames[0].cpu()[kept], torch.full((len(kept), len(q)), -1, dtype=torch.long)], 1)
    layers = [TokenRoles(ids[layer:layer + 1], n, None if frames is None else frames[layer:layer + 1])
              for layer in range(len(kept))]
    return layers[0], layers


def answer(ctx: Context, question: str, *, template: str | None = None, max_new_tokens: int = 8) -> Answer:
    """Append the question after the compressed context and decode greedily (see the module docstring; the template
    follows ``ctx.turn``; ``template=`` overrides the two-turn one only). The decoding runs inside ``VLM.active``
    with the answer turn's per-layer roles (:func:`answer_roles`), so a planted model's plant applies to the
    question and answer rows as on every other run of the model (without a plant it is the plain attention)."""
    import torch

    run, vlm = ctx.run, ctx.run.vlm
    device = vlm.device
    if ctx.turn == "single":
        if template is not None:
            raise RepromptError("template= applies to turn='two'; the single-turn tail comes from the processor")
        ids, pos, q_roles = _single_turn(run, question)
    else:
        (ids, q_roles), pos = question_tokens(vlm, question, template), run.next_position
    rows, layers = answer_roles(ctx, q_roles)
    vlm._check(None, None)  # a plant needs the vlmflow attention
    cache = ctx.cache()
    eos_ids = vlm.eos_ids
    n_ctx = ctx.n_tokens
    feed = torch.tensor([ids], device=device)
    out_ids: list[int] = []
    first = steps = None
    per_step = []
    with torch.no_grad(), vlm.active(rows, layer_roles=layers):
        for step in range(max_new_tokens):
            n = feed.shape[1]
            position_ids = vlm.adapter.text_position_ids(pos, n, device=device)
            mask = torch.ones(1, cache.get_seq_length() + n, dtype=torch.long, device=device)
            logits = vlm.model(input_ids=feed, attention_mask=mask, position_ids=position_ids, cache=cache,
                               use_cache=True).logits[0].float()
            if step == 0:
                steps, first = logits.cpu(), logits[-1].cpu()
            per_step.append(logits[-1].cpu())
            pos += n
            token = int(logits[-1].argmax())
            if token in eos_ids:
                break
            out_ids.append(token)
            feed = torch.tensor([[token]], device=device)
    text = vlm.tokenizer.decode(out_ids, skip_special_tokens=True).strip()
    return Answer(text, out_ids, n_ctx, first, steps, torch.stack(per_step) if per_step else None)


def full_answer(vlm: "VLM", image, question: str, max_new_tokens: int = 8) -> Answer:
    """The "full image" baseline: the ordinary single-turn prompt with the whole image and the question."""
    gen = vlm.generate(image, question, max_new_tokens=max_new_tokens, return_logits=True)
    first = gen.logits[0].float().cpu() if gen.logits is not None and len(gen.logits) else None
    return Answer(gen.text, gen.token_ids, gen.prompt_length, first)


