"""`vlmflow reprompt --model M --image PATH --question TEXT --context {full,query,topk,query+topk} [--k PCT]
[--select {attention,band,norm,random}] [--json]`: answer one question from a compressed context (Image
Re-prompting, ``vlmflow.reprompt``). ``full`` is the ordinary prompt with the whole image; the others describe the
image once and answer from the describe prompt's KV cache cut down to the text positions and/or the top-K% image
tokens per layer."""
from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser("reprompt", help="answer a question from a compressed context (Image Re-prompting)",
                              description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy", help="'toy', a local model folder or a Hugging Face id (default: toy)")
    p.add_argument("--image", required=True, help="image file")
    p.add_argument("--question", required=True, help="the new question")
    p.add_argument("--context", default="query+topk", choices=("full", "context", "query", "topk", "query+topk"),
                   help="full: the plain prompt with the image; context: the whole describe context; query: its text "
                        "positions only; topk / query+topk: with the top-K%% image tokens (default: query+topk)")
    p.add_argument("--k", type=float, default=5.0, help="percentage of image tokens kept per layer (default: 5)")
    p.add_argument("--select", default="attention", choices=("attention", "band", "norm", "random"),
                   help="how image tokens are ranked (default: attention from the generated tokens, per layer)")
    p.add_argument("--seed", type=int, default=0, help="seed of --select random")
    p.add_argument("--describe-prompt", default="describe the image")
    p.add_argument("--describe-tokens", type=int, default=64, help="max new tokens of the description")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None)
    p.add_argument("--json", action="store_true", help='print {"answer": ..., "context_tokens": N, ...}')
    p.set_defaults(func=run)


def run(args) -> int:
    from vlmflow.adapters.base import load_image
    from vlmflow.model import load
    from vlmflow.reprompt import answer, compress, describe, full_answer, n_keep

    if not 0 <= args.k <= 100:
        from vlmflow.reprompt import RepromptError

        raise RepromptError(f"--k must be a percentage in [0, 100], got {args.k}")
    image = load_image(args.image)
    vlm = load(args.model, device=args.device, dtype=args.dtype)
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
        print(json.dumps({"answer": a.text, "context_tokens": a.context_tokens, "context": args.context,
                          "k": args.k if args.context in ("topk", "query+topk") else None,
                          "select": args.select if args.context in ("topk", "query+topk") else None,
                          "model": args.model, **extra}))
    else:
        print(a.text)
    return 0
