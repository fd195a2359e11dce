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

Roles in the answer turn (what a planted model's plant blocks there): :func:`answer` decodes inside ``VLM.active``,
the entry every forward of the library takes, so a planted model (``vlmflow.plant``) runs its plant in the answer
turn too, through the one registered attention function (without a plant the block adds nothing: plain sdpa). The
keys are, per layer, the kept positions with their describe-prompt roles (``image`` for the kept image tokens, the
prompt's text roles for the kept text), then the question's tokens, then the answer's. The question is the user's
new turn: the two-turn template's text before ``{question}`` is ``user``, the question's words ``query``, the text
after them ``assistant`` (:func:`question_tokens`: the roles the adapters give a first turn); the single-turn tail
keeps the roles the processor's plain prompt gives it (``query``, ``assistant``). The answer's tokens are
``generated``. So under ``toy:compress`` (``image:generated@all``) the question's text rows still read the kept
image tokens and the answer's rows never do; under ``toy:window`` (``image:generated+text@0-2,5-7``) neither reads
them outside layers 3-4. Each layer keeps its own image tokens, so the plant is resolved against each layer's own
roles (:func:`answer_roles`, ``vlmflow.attention.compile_knockouts(layer_roles=)``): exact whatever a layer holds.
The describe run's ``knockout=`` applies to the describe run and its cache only, not to the answer turn.

Baselines (:func:`evaluate`): ``"full"`` = the ordinary single-turn prompt with the whole image and the question
(Table 1's "full image"); ``"describe-llm"`` = a text LLM answers from the description through the LLM judge's
OpenAI-compatible client (:class:`DescriptionLLM`); on the toy world :func:`exact_reader_answer` reads the
description with the toy grammar and answers the toy questions exactly: it is named ``"describe-reader
(upper bound)"`` because it is the best any reader of that description could do. ``context_tokens`` per variant =
the number of cached positions at answer time (the question's own tokens excluded), as in Table 1.
Scores go through ``vlmflow.scoring`` (ACC, ACC+, answer distribution, accuracy by true answer) with bootstrap CIs
(``vlmflow.stats``) in :func:`score_table`.
"""
from vlmflow.reprompt.context import (
    CONTEXTS,
    K_PERCENTS,
    LLM_NAME,
    READER_NAME,
    SELECTIONS,
    TURNS,
    Answer,
    Context,
    DescribeRun,
    RepromptError,
    answer,
    answer_roles,
    compress,
    describe,
    full_answer,
    middle_band,
    n_keep,
    question_ids,
    question_tokens,
    rank_image_tokens,
    single_turn_ids,
    template_for,
)
from vlmflow.reprompt.readers import DescriptionLLM, exact_reader_answer
from vlmflow.reprompt.table import (
    CLIP_KINDS,
    Item,
    Variant,
    clip_items,
    evaluate,
    pope_items,
    score_table,
    stored_evaluate,
    table1_variants,
    toy_items,
)

__all__ = ["Answer", "CLIP_KINDS", "CONTEXTS", "Context", "DescribeRun", "DescriptionLLM", "Item", "K_PERCENTS", "LLM_NAME",
           "READER_NAME", "RepromptError", "SELECTIONS", "TURNS", "Variant", "answer", "answer_roles", "clip_items", "compress",
           "describe", "evaluate", "exact_reader_answer", "full_answer", "middle_band", "n_keep", "pope_items",
           "question_ids", "question_tokens", "rank_image_tokens", "single_turn_ids", "stored_evaluate", "score_table",
           "table1_variants", "template_for", "toy_items"]

