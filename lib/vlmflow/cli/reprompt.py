"""`vlmflow reprompt --model M --image PATH --question TEXT --context {full,query,topk,query+topk} [--k PCT]
[--select {attention,band,norm,random}] [--json]`: answer one question from a compressed context (Image
Re-prompting, ``vlmflow.reprompt``). ``full`` is the ordinary prompt with the whole image; the others describe the
image once and answer from the describe prompt's KV cache cut down to the text positions and/or the top-K% image
tokens per layer."""
from __future__ import annotations

from vlmflow.cli import common


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reprompt", help="Answer a question from a compressed context (Image Re-prompting, Table 1).",
        description="Describe the image once, then answer a new question from that run's KV cache cut down to its "
                    "text positions and/or the top-K%% image tokens per layer (Image Re-prompting); --context full "
                    "answers from the ordinary prompt with the whole image instead.")
    common.add_model_options(p)
    p.add_argument("--image", required=True, help="The image file the question is about.")
    p.add_argument("--question", required=True, type=common.text, help="The new question to answer.")
    p.add_argument("--context", default="query+topk", choices=("full", "context", "query", "topk", "query+topk"),
                   help="What the answer may read. full: the plain prompt with the whole image; context: the whole "
                        "describe context; query: its text positions only; topk and query+topk: with the top-K%% "
                        "image tokens per layer. Default: query+topk.")
    p.add_argument("--k", type=float, default=5.0,
                   help="The percentage of image tokens kept per layer, between 0 and 100. Default: 5.")
    p.add_argument("--select", default="attention", choices=("attention", "band", "norm", "random"),
                   help="How image tokens are ranked: attention from the generated tokens per layer, the middle "
                        "layer band, hidden-state norm, or seeded random. Default: attention.")
    p.add_argument("--seed", type=common.nonnegative_int, default=0, help="The seed of --select random. Default: 0.")
    p.add_argument("--describe-prompt", default="describe the image", type=common.text,
                   help="The prompt of the describe run whose cache is compressed. Default: 'describe the image'.")
    p.add_argument("--describe-tokens", type=common.positive_int, default=64,
                   help="The most tokens the describe run generates (at least 1). Default: 64.")
    p.add_argument("--max-new-tokens", type=common.positive_int, default=8,
                   help="The most tokens of the answer (at least 1). Default: 8.")
    common.add_json_option(p, "the answer, the context size and the settings")
    p.set_defaults(func=run)


def run(args) -> int:
    if not 0 <= args.k <= 100:
        from vlmflow.errors import UsageError

        raise UsageError(f"--k must be a percentage in [0, 100], got {args.k:g}")
    from vlmflow.adapters.base import load_image
    from vlmflow.reprompt import answer, compress, describe, full_answer, n_keep

    image = load_image(args.image)
    vlm = common.load_model(args)
    extra = {}
    if args.context == "full":
        a = full_answer(vlm, image, args.question, args.max_new_tokens)
    else:
        run_ = describe(vlm, image, args.describe_prompt, args.describe_tokens, hidden_norms=args.select == "norm")
        ctx = compress(run_, args.context, args.k, args.select, seed=args.seed)
        a = answer(ctx, args.question, max_new_tokens=args.max_new_tokens)
        extra = {"description": run_.generation.text, "image_tokens": run_.n_image,
                 "kept_image_tokens": 0 if args.context in ("query",) else
                 run_.n_image if args.context == "context" else n_keep(args.k, run_.n_image)}
    if args.json:
        common.print_json({"answer": a.text, "context_tokens": a.context_tokens, "context": args.context,
                           "k": args.k if args.context in ("topk", "query+topk") else None,
                           "select": args.select if args.context in ("topk", "query+topk") else None,
                           "model": args.model, **extra})
    else:
        print(a.text)
    return 0
